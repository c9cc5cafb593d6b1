from .config_checks import check_run_config
from .cpu_dist import (CPUDistributedDataParallel, close_distributed,
                       revert_sync_bn_for_cpu, setup_cpu_distributed)
from .export import export_student, student_config, student_state_dict
from .hooks import (DistillLossWeightScheduleHook, ExactResumeHook,
                    ValueCheckHook)
from .loops import DistillTestLoop, DistillValLoop
from .safe_load import (SAFE_GLOBALS, UnsafeCheckpointError,
                        allow_openmmlab_checkpoint_types,
                        guard_checkpoint_loaders, safe_torch_load)

__all__ = [
    'CPUDistributedDataParallel', 'close_distributed',
    'DistillLossWeightScheduleHook',
    'DistillTestLoop', 'DistillValLoop', 'ExactResumeHook', 'SAFE_GLOBALS',
    'UnsafeCheckpointError', 'ValueCheckHook',
    'allow_openmmlab_checkpoint_types',
    'check_run_config', 'export_student', 'guard_checkpoint_loaders',
    'revert_sync_bn_for_cpu', 'safe_torch_load', 'setup_cpu_distributed',
    'student_config', 'student_state_dict'
]
