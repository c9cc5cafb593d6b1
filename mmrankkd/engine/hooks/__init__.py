from .ctkd_schedule import CTKDScheduleHook
from .exact_resume import ExactResumeHook
from .loss_weight_schedule import DistillLossWeightScheduleHook
from .value_checks import ValueCheckHook

__all__ = ['CTKDScheduleHook', 'DistillLossWeightScheduleHook',
           'ExactResumeHook', 'ValueCheckHook']
