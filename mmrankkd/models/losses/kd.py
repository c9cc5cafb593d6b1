"""Hinton knowledge distillation (baseline)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import softmax_kl
from .utils import BaseLogitLoss, row_weights


@MODELS.register_module()
class KDLoss(BaseLogitLoss):
    r"""Vanilla knowledge distillation (Hinton et al., 2015).

    Exactly:

    .. math::
        L = T^2 \cdot \mathrm{mean}_{rows}\, KL(p_t^T \,\|\, p_s^T),
        \quad p^T = \mathrm{softmax}(z / T)

    A row is a sample of (N, C) logits or a pixel of (N, C, H, W) logits;
    pixels labelled ``ignore_index`` are left out of the mean. Zero when the
    student equals the teacher. Value and gradient ``T (p_s - p_t) / rows``
    come from one fused pass (:mod:`mmrankkd.models.losses.fused`).

    Args:
        temperature (float): T. Defaults to 1.0.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none).
        validate (str): When value checks read the device ('deferred',
            'always', 'off'; see :class:`BaseLogitLoss`). Defaults to
            'deferred'.
        validate_interval (int): Calls between deferred reads. Defaults to
            100.
    """

    def __init__(self,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.temperature = self.positive('temperature', temperature)

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: approximate (see :class:`BaseLogitLoss`)."""
        return 'approximate'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        return softmax_kl(student, teacher, self.temperature, 1,
                          row_weights(student, valid))
