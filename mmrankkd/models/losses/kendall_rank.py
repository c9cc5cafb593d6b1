"""RKKD: Kendall's tau ranking loss (arXiv 2409.17823)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .pairwise import (DEFAULT_BLOCK_BYTES, SURROGATES,
                       pairwise_sign_agreement)
from .utils import BaseLogitLoss, logits_to_rows, weighted_mean


@MODELS.register_module()
class KendallRankLoss(BaseLogitLoss):
    r"""Rank-consistency loss from Kendall's tau (RKKD, arXiv 2409.17823).

    On raw logits (no softmax) of each row
    (a sample, or a pixel of dense logits):

    .. math::
        \tau_{smooth}(s, t) = \frac{1}{|F|(C-1)} \sum_{i \in F}
            \sum_{j \ne i} g\big(k (s_i - s_j)\big)\,
            \mathrm{sgn}(t_i - t_j), \qquad
        L = \mathrm{mean}_{rows}\big(1 - \tau_{smooth}(s, t)\big)

    With ``F`` = all classes this is the paper's
    :math:`\frac{2}{C(C-1)} \sum_{i<j}` (both factors are odd), and as
    ``k`` -> inf it is Kendall's tau-a of (s, t). Range [0, 2].

    Confirmed by the paper: 1 - tau on raw logits over channel pairs, sgn
    replaced by a smooth surrogate, steepness k, top-valued restriction.
    Adopted (ours): ``g`` in {tanh (default), 2*sigmoid(x)-1, erf}; the
    teacher keeps the hard sign unless ``smooth_teacher=True``; ``topk``
    restricts to ordered pairs whose first member is in the teacher's top-k,
    normalised by k(C-1). Note: the loss is not zero at student == teacher
    for finite ``k``: there it equals
    :math:`1 - \mathrm{mean}_{i \in F, j \ne i} |g(k (t_i - t_j))|`
    (0 only in the limit of infinitely separated logits).

    Usable alone or beside any other loss (the paper adds it to KD, DKD...).
    The O(C^2) pairwise work runs over the pairs i < j of rows sorted by
    the teacher, in blocks within ``block_bytes``, with the gradient from
    the same pass (see :mod:`mmrankkd.models.losses.pairwise`). Rows of
    ignored pixels are weighted 0 (their pairs are still computed: no
    device sync to select them).

    Args:
        surrogate (str): 'tanh', 'sigmoid' or 'erf'. Defaults to 'tanh'.
        steepness (float): k. Defaults to 1.0 (the paper's ablation favoured
            about 100 on its setting; set it in the config).
        topk (int, optional): Only pairs whose first member is among the
            teacher's top-k classes (ties at the k-th place go to the lower
            class index). Defaults to None (all pairs).
        smooth_teacher (bool): Use g(k(t_i - t_j)) instead of sgn for the
            teacher. Defaults to False.
        block_bytes (int): Byte budget of the pairwise temporaries of one
            call (whatever the batch size). Defaults to 256 MiB.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    #: Why a top-k teacher store is refused (see ``teacher_topk``).
    topk_refusal = (
        'over pairs beyond the top-k it needs the whole ranking; '
        'KendallRankLoss(topk=<= k) is exact')

    def __init__(self,
                 surrogate: str = 'tanh',
                 steepness: float = 1.0,
                 topk: Optional[int] = None,
                 smooth_teacher: bool = False,
                 block_bytes: int = DEFAULT_BLOCK_BYTES,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        if surrogate not in SURROGATES:
            raise ValueError(f'KendallRankLoss: surrogate must be one of '
                             f'{SURROGATES}, got {surrogate!r}.')
        if topk is not None and topk < 1:
            raise ValueError(f'KendallRankLoss: topk must be >= 1 or None, '
                             f'got {topk}.')
        self.surrogate = surrogate
        self.steepness = self.positive('steepness', steepness)
        self.topk = topk
        self.smooth_teacher = bool(smooth_teacher)
        self.block_bytes = int(self.positive('block_bytes', block_bytes))

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: with ``topk <= k`` every pair's first member
        and its teacher sign are kept (up to a tie between the k-th value
        and a dropped one), so the loss is exact with the hard teacher
        sign and approximate with ``smooth_teacher``; without ``topk`` (or
        a larger one) it needs the whole ranking and is refused."""
        if self.topk is None or self.topk > k:
            return 'refused'
        return 'approximate' if self.smooth_teacher else 'exact'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        student, teacher = logits_to_rows(student), logits_to_rows(teacher)
        num_classes = student.size(1)
        num_first = num_classes if self.topk is None else min(
            self.topk, num_classes)
        agreement = pairwise_sign_agreement(
            student,
            teacher,
            num_first,
            surrogate=self.surrogate,
            steepness=self.steepness,
            smooth_teacher=self.smooth_teacher,
            block_bytes=self.block_bytes)
        # mean(1 - tau) = 1 - mean(A) / (K (C - 1))
        norm = 1.0 / (num_first * (num_classes - 1))
        if valid is None:
            return 1 - agreement.mean() * norm
        valid = valid.reshape(-1)
        return weighted_mean(1 - agreement * norm, valid)
