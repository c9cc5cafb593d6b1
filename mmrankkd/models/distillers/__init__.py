from .logit_distiller import (LogitDistiller, attach_teacher_predictions,
                              build_distill_losses, load_teacher_checkpoint)
from .model_source import build_model_from_source, resolve_model_cfg

__all__ = [
    'LogitDistiller', 'attach_teacher_predictions', 'build_distill_losses',
    'load_teacher_checkpoint', 'build_model_from_source', 'resolve_model_cfg'
]
