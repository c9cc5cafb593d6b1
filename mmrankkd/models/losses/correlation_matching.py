"""CMKD: correlation matching KD (REFERENCE.md section 3)."""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrankkd.registry import MODELS
from .pairwise import hard_rank, soft_rank
from .utils import BaseLogitLoss, pearson_correlation, valid_rows

WEIGHTINGS = ('entropy', 'fixed')


@MODELS.register_module()
class CorrelationMatchingLoss(BaseLogitLoss):
    r"""Pearson + Spearman correlation matching (CMKD, arXiv 2410.06561).

    Implements REFERENCE.md section 3, adopted formulation. Per row (sample,
    or valid pixel of dense logits), with :math:`p^T = softmax(z / T)`:

    .. math::
        L_P = 1 - \rho(p_s^T, p_t^T), \qquad
        L_S = 1 - \rho(\mathrm{softrank}(s), \mathrm{rank}(t))

        h = H(p_t^T) / \log C, \qquad
        L = T^2\, \mathrm{mean}_{rows}\big[(1 - h) L_P + h L_S\big]
        \quad (\text{weighting='entropy'})

    or :math:`L = T^2\, \mathrm{mean}_{rows}[w_P L_P + w_S L_S]`
    (``weighting='fixed'``). :math:`\rho` is the Pearson correlation,
    :math:`\mathrm{softrank}(s)_i = 1 + \sum_{j \ne i}
    \sigma((s_i - s_j)/\epsilon)` on raw student logits, and rank(t) the
    teacher's hard ranks (ties averaged, no gradient).

    Confirmed by the paper: Pearson term + Spearman term with per-sample
    weights by difficulty, a differentiable ranking for Spearman. Ours: the
    difficulty measure (teacher normalised entropy, no gradient), the
    weighting formula, and the sigmoid soft rank. The soft-rank term runs in
    memory-bounded blocks (see :mod:`mmrankkd.models.losses.pairwise`).

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
        max_pairwise_elements (int, optional): Pair elements per block of the
            soft-rank kernel. Defaults to None (2x the logits).
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value left out. Defaults to 255.
    """

    def __init__(self,
                 temperature: float = 1.0,
                 rank_eps: float = 1.0,
                 weighting: str = 'entropy',
                 pearson_weight: float = 1.0,
                 spearman_weight: float = 1.0,
                 max_pairwise_elements: Optional[int] = None,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255):
        super().__init__(loss_weight=loss_weight, ignore_index=ignore_index)
        if weighting not in WEIGHTINGS:
            raise ValueError(f'CorrelationMatchingLoss: weighting must be one '
                             f'of {WEIGHTINGS}, got {weighting!r}.')
        self.temperature = self.positive('temperature', temperature)
        self.rank_eps = self.positive('rank_eps', rank_eps)
        self.weighting = weighting
        self.pearson_weight = float(pearson_weight)
        self.spearman_weight = float(spearman_weight)
        self.max_pairwise_elements = max_pairwise_elements

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        student, teacher, _ = valid_rows(student, teacher, labels,
                                         self.ignore_index)
        temperature = self.temperature
        p_student = F.softmax(student / temperature, dim=1)
        log_p_teacher = F.log_softmax(teacher / temperature, dim=1)
        p_teacher = log_p_teacher.exp()
        pearson_loss = 1 - pearson_correlation(p_student, p_teacher)
        student_ranks = soft_rank(student, self.rank_eps,
                                  self.max_pairwise_elements)
        spearman_loss = 1 - pearson_correlation(student_ranks,
                                                hard_rank(teacher))
        if self.weighting == 'entropy':
            entropy = -(p_teacher * log_p_teacher).sum(1)
            spearman_share = (entropy / math.log(student.size(1))).clamp(0, 1)
            loss = (1 - spearman_share) * pearson_loss + \
                spearman_share * spearman_loss
        else:
            loss = self.pearson_weight * pearson_loss + \
                self.spearman_weight * spearman_loss
        return temperature**2 * loss.mean()
