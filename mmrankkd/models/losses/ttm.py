"""TTM / WTTM: transformed teacher matching (Zheng & Yang, ICLR 2024)."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import _fused, _reduce
from .utils import BaseLogitLoss, row_weights


def transformed_teacher(teacher: Tensor, gamma: float):
    """The power-transformed teacher as the authors' code computes it
    (zkxufo/TTM, distiller_zoo/ttm.py and wttm.py), classes along dim 1:
    ``p = softmax(z_t) ** gamma``, ``norm = sum_k p``, ``q = p / norm``.

    Returns:
        tuple[Tensor, Tensor]: ``q`` (same shape) and ``norm`` (dim 1 of
        size 1), no gradient.
    """
    with torch.no_grad():
        powered = F.softmax(teacher, 1).pow_(gamma)
        norm = powered.sum(1, keepdim=True)
        return powered.div_(norm), norm


def ttm_kl(student: Tensor, target: Tensor, weights) -> Tensor:
    r"""``sum_r w_r KL(q_r || softmax(s_r))`` with classes along dim 1, the
    KL as ``F.kl_div`` computes it (``xlogy(q, q) - q log p_s``: entries
    with ``q = 0`` add 0), value and gradient ``w (p_s - q)`` in one pass.

    Args:
        student (Tensor): Student logits (get the gradient).
        target (Tensor): ``q``, rows summing to 1, no gradient.
        weights (Tensor | float): Row weights, broadcastable to the logits
            with dim 1 of size 1, or one float.
    """
    return _fused(_ttm_kl, student, target, weights)


def _ttm_kl(student, need_grad, target, weights):
    log_ps = F.log_softmax(student, 1)
    rows = torch.xlogy(target, target).sub_(target * log_ps).sum(
        1, keepdim=True)
    value = _reduce(rows, weights)
    grad = None
    if need_grad:
        grad = log_ps.exp_().sub_(target).mul_(weights)
    return value, grad


@MODELS.register_module()
class WTTMLoss(BaseLogitLoss):
    r"""Weighted transformed teacher matching (Zheng & Yang, ICLR 2024).

    As the authors' ``WTTM`` (zkxufo/TTM, distiller_zoo/wttm.py) computes
    it:

    .. math::
        q = \frac{p_t^\gamma}{\sum_k p_{t,k}^\gamma},\quad
        p_t = \mathrm{softmax}(z_t),\quad
        L = \mathrm{mean}_{rows}\Big(\sum_k p_{t,k}^\gamma\Big)
            KL(q \,\|\, \mathrm{softmax}(z_s))

    The teacher's probabilities at temperature 1 raised to the power
    :math:`\gamma` and renormalised (the same as a teacher temperature of
    :math:`1/\gamma`), matched by the student's softmax at temperature 1,
    with no :math:`T^2` factor; each row is weighted by the unnormalised
    :math:`\sum_k p_{t,k}^\gamma` (larger for flatter teacher rows when
    :math:`\gamma < 1`), and the weighted KLs are averaged over the rows
    (divided by their count, not by the weights' sum). ``weighted=False``
    (or :class:`TTMLoss`) drops the weight: the authors' ``TTM``.

    A row is a sample of (N, C) logits or a pixel of (N, C, H, W) logits;
    pixels labelled ``ignore_index`` are left out of the mean. Value and
    gradient ``w (softmax(z_s) - q) / rows`` come from one fused pass.

    Args:
        gamma (float): The power (the authors' ``--ttm_l``), > 0. Defaults
            to 1.0 (their default; 1 makes TTM plain KD at T = 1).
        weighted (bool): Weight each row by the teacher's power sum (WTTM)
            or not (TTM). Defaults to True.
        loss_weight (float): Multiplies the loss (the authors' ``-b``).
            Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None.
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    def __init__(self,
                 gamma: float = 1.0,
                 weighted: bool = True,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.gamma = self.positive('gamma', gamma)
        self.weighted = bool(weighted)

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: approximate (see :class:`BaseLogitLoss`)."""
        return 'approximate'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        target, norm = transformed_teacher(teacher, self.gamma)
        weights = row_weights(student, valid)
        if self.weighted:
            weights = norm * weights
        return ttm_kl(student, target, weights)


@MODELS.register_module()
class TTMLoss(WTTMLoss):
    r"""Transformed teacher matching (Zheng & Yang, ICLR 2024): the
    authors' ``TTM`` (zkxufo/TTM, distiller_zoo/ttm.py),
    :math:`\mathrm{mean}_{rows} KL(q \| \mathrm{softmax}(z_s))` with
    :math:`q \propto \mathrm{softmax}(z_t)^\gamma`; :class:`WTTMLoss`
    without the per-row weight.

    Args:
        gamma (float): The power, > 0. Defaults to 1.0.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None.
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    def __init__(self,
                 gamma: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(gamma, False, loss_weight, ignore_index, validate,
                         validate_interval)
