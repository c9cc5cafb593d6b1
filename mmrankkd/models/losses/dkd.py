"""DKD: decoupled knowledge distillation (baseline; REFERENCE.md)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrankkd.registry import MODELS
from .utils import BaseLogitLoss, kl_from_log_probs, valid_rows


def _binary_log_probs(logits: Tensor, target: Tensor) -> Tensor:
    """log [p_target, 1 - p_target] of softmax(logits), (R, 2), stable."""
    log_total = logits.logsumexp(1)
    log_target = logits.gather(1, target.unsqueeze(1)).squeeze(1)
    log_rest = logits.masked_fill(
        F.one_hot(target, logits.size(1)).bool(), float('-inf')).logsumexp(1)
    return torch.stack([log_target - log_total, log_rest - log_total], dim=1)


def _non_target_log_probs(logits: Tensor, target_mask: Tensor) -> Tensor:
    """log-softmax over the non-target classes; 0 at the target (it is
    excluded from the KL by the mask)."""
    log_probs = F.log_softmax(
        logits.masked_fill(target_mask, float('-inf')), dim=1)
    return log_probs.masked_fill(target_mask, 0.)


@MODELS.register_module()
class DKDLoss(BaseLogitLoss):
    r"""Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    Implements REFERENCE.md "Baselines", DKD, as in the authors' mdistiller:

    .. math::
        L = \alpha \cdot TCKD + \beta \cdot NCKD, \quad
        TCKD = T^2\, KL(b_t \| b_s), \quad
        NCKD = T^2\, KL(\hat p_t \| \hat p_s)

    with :math:`b = [p_y, 1 - p_y]` from :math:`p = softmax(z / T)` and
    :math:`\hat p` the softmax of z/T over the non-target classes only; both
    averaged over rows (samples or valid pixels, each with its own label).
    Computed from log-sum-exps, so it stays finite for saturated logits.
    Zero at student == teacher. mdistiller's linear warm-up of the loss over
    the first epochs is a schedule, not part of the loss.

    Args:
        alpha (float): TCKD weight. Defaults to 1.0.
        beta (float): NCKD weight. Defaults to 8.0.
        temperature (float): T. Defaults to 4.0.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value left out. Defaults to 255.
    """

    requires_labels = True

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 temperature: float = 4.0,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255):
        super().__init__(loss_weight=loss_weight, ignore_index=ignore_index)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = self.positive('temperature', temperature)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        student, teacher, labels = valid_rows(student, teacher, labels,
                                              self.ignore_index)
        student = student / self.temperature
        teacher = teacher / self.temperature
        target_mask = F.one_hot(labels, student.size(1)).bool()
        tckd = kl_from_log_probs(
            _binary_log_probs(teacher, labels),
            _binary_log_probs(student, labels),
            dim=1)
        nckd = kl_from_log_probs(
            _non_target_log_probs(teacher, target_mask),
            _non_target_log_probs(student, target_mask),
            dim=1,
            valid=~target_mask)
        loss = self.alpha * tckd + self.beta * nckd
        return self.temperature**2 * loss.mean()
