from .exact_resume import ExactResumeHook
from .loss_weight_schedule import DistillLossWeightScheduleHook

__all__ = ['DistillLossWeightScheduleHook', 'ExactResumeHook']
