from .checkpoint import load_teacher_checkpoint
from .logit_distiller import LogitDistiller, build_distill_losses
from .logit_taps import LogitTap
from .model_source import build_model_from_source, resolve_model_cfg
from .teacher import LiveTeacher, attach_teacher_predictions
from .teacher_input import TeacherInput

__all__ = [
    'LiveTeacher', 'LogitDistiller', 'LogitTap', 'TeacherInput',
    'attach_teacher_predictions',
    'build_distill_losses', 'load_teacher_checkpoint',
    'build_model_from_source', 'resolve_model_cfg'
]
