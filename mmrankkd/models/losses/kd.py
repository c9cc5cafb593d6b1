"""Hinton knowledge distillation (baseline; REFERENCE.md "Baselines": KD)."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from mmrankkd.registry import MODELS
from .utils import BaseLogitLoss, kl_from_log_probs, valid_rows


@MODELS.register_module()
class KDLoss(BaseLogitLoss):
    r"""Vanilla knowledge distillation (Hinton et al., 2015).

    Implements REFERENCE.md "Baselines every comparison needs", KD, exactly:

    .. math::
        L = T^2 \cdot \mathrm{mean}_{rows}\, KL(p_t^T \,\|\, p_s^T),
        \quad p^T = \mathrm{softmax}(z / T)

    A row is a sample of (N, C) logits or a pixel of (N, C, H, W) logits;
    pixels labelled ``ignore_index`` are left out of the mean. Zero when the
    student equals the teacher.

    Args:
        temperature (float): T. Defaults to 1.0.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value left out. Defaults to 255.
    """

    def __init__(self,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255):
        super().__init__(loss_weight=loss_weight, ignore_index=ignore_index)
        self.temperature = self.positive('temperature', temperature)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        student, teacher, _ = valid_rows(student, teacher, labels,
                                         self.ignore_index)
        temperature = self.temperature
        log_p_student = F.log_softmax(student / temperature, dim=1)
        log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
        kl = kl_from_log_probs(log_p_teacher, log_p_student, dim=1)
        return temperature**2 * kl.mean()
