from .cpu_dist import setup_cpu_distributed
from .export import export_student, student_config, student_state_dict
from .hooks import DistillLossWeightScheduleHook  # noqa: F401
from .loops import DistillTestLoop, DistillValLoop
from .safe_load import (SAFE_GLOBALS, UnsafeCheckpointError,
                        allow_openmmlab_checkpoint_types,
                        guard_checkpoint_loaders, safe_torch_load)

__all__ = [
    'DistillTestLoop', 'DistillValLoop', 'SAFE_GLOBALS',
    'UnsafeCheckpointError', 'allow_openmmlab_checkpoint_types',
    'guard_checkpoint_loaders', 'safe_torch_load', 'setup_cpu_distributed',
    'export_student', 'student_config', 'student_state_dict'
]
