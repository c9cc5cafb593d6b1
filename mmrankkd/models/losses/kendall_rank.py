"""RKKD: Kendall's tau ranking loss (REFERENCE.md section 2)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .pairwise import SURROGATES, pairwise_sign_agreement
from .utils import BaseLogitLoss, valid_rows


@MODELS.register_module()
class KendallRankLoss(BaseLogitLoss):
    r"""Rank-consistency loss from Kendall's tau (RKKD, arXiv 2409.17823).

    Implements REFERENCE.md section 2. On raw logits (no softmax) of each row
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
    The O(C^2) pairwise work runs in memory-bounded blocks with the gradient
    recomputed in backward (see :mod:`mmrankkd.models.losses.pairwise`).

    Args:
        surrogate (str): 'tanh', 'sigmoid' or 'erf'. Defaults to 'tanh'.
        steepness (float): k. Defaults to 1.0 (the paper's ablation favoured
            about 100 on its setting; set it in the config).
        topk (int, optional): Only pairs whose first member is among the
            teacher's top-k classes. Defaults to None (all pairs).
        smooth_teacher (bool): Use g(k(t_i - t_j)) instead of sgn for the
            teacher. Defaults to False.
        max_pairwise_elements (int, optional): Pair elements per block of
            the memory-bounded kernel. Defaults to None (2x the logits).
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value left out. Defaults to 255.
    """

    def __init__(self,
                 surrogate: str = 'tanh',
                 steepness: float = 1.0,
                 topk: Optional[int] = None,
                 smooth_teacher: bool = False,
                 max_pairwise_elements: Optional[int] = None,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255):
        super().__init__(loss_weight=loss_weight, ignore_index=ignore_index)
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
        self.max_pairwise_elements = max_pairwise_elements

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        student, teacher, _ = valid_rows(student, teacher, labels,
                                         self.ignore_index)
        num_classes = student.size(1)
        if self.topk is None or self.topk >= num_classes:
            first, num_first = None, num_classes
        else:
            first = teacher.topk(self.topk, dim=1).indices
            num_first = self.topk
        agreement = pairwise_sign_agreement(
            student,
            teacher,
            first,
            surrogate=self.surrogate,
            steepness=self.steepness,
            smooth_teacher=self.smooth_teacher,
            max_elements=self.max_pairwise_elements)
        tau = agreement / (num_first * (num_classes - 1))
        return (1 - tau).mean()
