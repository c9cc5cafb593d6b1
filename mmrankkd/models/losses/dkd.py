"""DKD: decoupled knowledge distillation (baseline)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import dkd
from .utils import BaseLogitLoss, row_weights


@MODELS.register_module()
class DKDLoss(BaseLogitLoss):
    r"""Decoupled knowledge distillation (Zhao et al., CVPR 2022).

    As the authors' mdistiller computes it:

    .. math::
        L = \alpha \cdot TCKD + \beta \cdot NCKD, \quad
        TCKD = T^2\, KL(b_t \| b_s), \quad
        NCKD = T^2\, KL(\hat p_t \| \hat p_s)

    with :math:`b = [p_y, 1 - p_y]` from :math:`p = softmax(z / T)` and
    :math:`\hat p` the softmax of z/T over the non-target classes only; both
    averaged over rows (samples or kept pixels, each with its own label).
    Computed from log-sum-exps, so it stays finite for saturated logits,
    with value and gradient from one fused pass
    (:func:`mmrankkd.models.losses.fused.dkd`). Zero at student == teacher.
    mdistiller's linear warm-up of the loss over the first epochs is a
    schedule, not part of the loss.

    Args:
        alpha (float): TCKD weight. Defaults to 1.0.
        beta (float): NCKD weight. Defaults to 8.0.
        temperature (float): T. Defaults to 4.0.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none: every label must be a class index).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    requires_labels = True

    def __init__(self,
                 alpha: float = 1.0,
                 beta: float = 8.0,
                 temperature: float = 4.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = self.positive('temperature', temperature)

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: approximate (see :class:`BaseLogitLoss`)."""
        return 'approximate'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        return dkd(student, teacher, labels, self.alpha, self.beta,
                   self.temperature, row_weights(student, valid))
