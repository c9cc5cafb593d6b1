from .ctkd_schedule import CTKDScheduleHook
from .exact_resume import ExactResumeHook
from .loss_weight_schedule import DistillLossWeightScheduleHook

__all__ = ['CTKDScheduleHook', 'DistillLossWeightScheduleHook',
           'ExactResumeHook']
