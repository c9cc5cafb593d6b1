"""CMKD: correlation matching KD (arXiv 2410.06561)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import correlation_matching
from .pairwise import DEFAULT_BLOCK_BYTES
from .utils import BaseLogitLoss, logits_to_rows, row_weights

WEIGHTINGS = ('entropy', 'fixed')


@MODELS.register_module()
class CorrelationMatchingLoss(BaseLogitLoss):
    r"""Pearson + Spearman correlation matching (CMKD, arXiv 2410.06561).

    Our adopted formulation (what is the paper's and what is ours: below).
    Per row (sample, or kept pixel of dense logits), with
    :math:`p^T = softmax(z / T)`:

    .. math::
        L_P = 1 - \rho(p_s^T, p_t^T), \qquad
        L_S = 1 - \rho(\mathrm{softrank}(s), \mathrm{rank}(t))

        h = H(p_t^T) / \log C, \qquad
        L = T^2\, \mathrm{mean}_{rows}\big[(1 - h) L_P + h L_S\big]
        \quad (\text{weighting='entropy'})

    or :math:`L = T^2\, \mathrm{mean}_{rows}[w_P L_P + w_S L_S]`
    (``weighting='fixed'``). :math:`\rho` is the Pearson correlation in the
    official DIST form :math:`a' \cdot b' / (|a'|\,|b'| + 10^{-8})` (see
    :func:`~mmrankkd.models.losses.utils.pearson_correlation`),
    :math:`\mathrm{softrank}(s)_i = 1 + \sum_{j \ne i}
    \sigma((s_i - s_j)/\epsilon)` on raw student logits, and rank(t) the
    teacher's hard ranks (ties averaged, no gradient).

    Confirmed by the paper: Pearson term + Spearman term with per-sample
    weights by difficulty, a differentiable ranking for Spearman. Ours: the
    difficulty measure (teacher normalised entropy, no gradient), the
    weighting formula, and the sigmoid soft rank. The soft-rank term runs
    over the pairs i < j in blocks within ``block_bytes`` (see
    :mod:`mmrankkd.models.losses.pairwise`); ignored rows weigh 0.

    Non-zero minimum: at student == teacher, L_P = 0 but soft ranks are not
    hard ranks, so L = T^2 mean[h (1 - rho(softrank(t), rank(t)))] ('entropy')
    or T^2 mean[w_S (1 - rho(softrank(t), rank(t)))] ('fixed'), which tends
    to 0 as ``rank_eps`` -> 0.

    Args:
        temperature (float): T of the probabilities (the Spearman term uses
            raw logits). Defaults to 1.0.
        rank_eps (float): Sigmoid temperature of the soft rank, in logit
            units. Defaults to 1.0.
        weighting (str): 'entropy' or 'fixed'. Defaults to 'entropy'.
        pearson_weight (float): w_P for 'fixed'. Defaults to 1.0.
        spearman_weight (float): w_S for 'fixed'. Defaults to 1.0.
        block_bytes (int): Byte budget of the soft rank's pairwise
            temporaries of one call. Defaults to 256 MiB.
        zero_grad_where_constant (bool): Pearson terms not in the official
            DIST form: 0 with zero gradient where a centred vector is
            constant (see :class:`DISTLoss`). Defaults to False.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    #: Why a top-k teacher store is refused (see ``teacher_topk``).
    topk_refusal = (
        'its Pearson and Spearman correlations need every teacher logit '
        'and the whole ranking')

    def __init__(self,
                 temperature: float = 1.0,
                 rank_eps: float = 1.0,
                 weighting: str = 'entropy',
                 pearson_weight: float = 1.0,
                 spearman_weight: float = 1.0,
                 block_bytes: int = DEFAULT_BLOCK_BYTES,
                 zero_grad_where_constant: bool = False,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        if weighting not in WEIGHTINGS:
            raise ValueError(f'CorrelationMatchingLoss: weighting must be one '
                             f'of {WEIGHTINGS}, got {weighting!r}.')
        self.temperature = self.positive('temperature', temperature)
        self.rank_eps = self.positive('rank_eps', rank_eps)
        self.weighting = weighting
        self.pearson_weight = float(pearson_weight)
        self.spearman_weight = float(spearman_weight)
        self.block_bytes = int(self.positive('block_bytes', block_bytes))
        self.zero_grad_where_constant = bool(zero_grad_where_constant)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        student, teacher = logits_to_rows(student), logits_to_rows(teacher)
        weights = row_weights(student, valid, flat=True)
        return correlation_matching(student, teacher, self.temperature,
                                    self.rank_eps, self.weighting,
                                    self.pearson_weight,
                                    self.spearman_weight, weights,
                                    self.block_bytes,
                                    zero_grad_where_constant=self.
                                    zero_grad_where_constant)
