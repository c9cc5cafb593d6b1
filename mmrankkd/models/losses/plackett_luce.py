"""PLD: Plackett-Luce distillation (arXiv 2506.12542)."""
from typing import Optional

import torch
from torch import Tensor

from mmrankkd.registry import MODELS
from .utils import BaseLogitLoss, logits_to_rows, weighted_mean


def teacher_optimal_permutation(teacher: Tensor, labels: Tensor) -> Tensor:
    """pi* per row: the label first, then the other classes by descending
    teacher logit (ties keep class order)."""
    key = teacher.scatter(1, labels.unsqueeze(1), float('inf'))
    return key.argsort(dim=1, descending=True, stable=True)


@MODELS.register_module()
class PlackettLuceLoss(BaseLogitLoss):
    r"""Plackett-Luce distillation (PLD, arXiv 2506.12542).

    Exactly the paper's loss. With the
    teacher-optimal permutation :math:`\pi^*` = [y] + the other classes in
    descending teacher logit:

    .. math::
        L = \mathrm{mean}_{rows} \sum_{k=1}^{C} \alpha_k \Big(
            \log\sum_{l \ge k} e^{s_{\pi^*_l}} - s_{\pi^*_k} \Big), \qquad
        \alpha_k = \mathrm{softmax}(t / \tau_T)_{\pi^*_k}

    Student logits are raw (no temperature). PLD replaces CE + KD (no
    separate CE term): alpha = (1, 0, ..., 0) gives cross-entropy, uniform
    alpha gives ListMLE. Convex in s, invariant to adding a constant to s,
    O(C log C). Not zero at student == teacher (it is a likelihood loss).
    Dense logits: per pixel with that pixel's label; ``ignore_index`` pixels
    are left out (weighted 0). No label is ignored by default, so with 1000
    classes every class, 255 included, trains.

    Args:
        teacher_temperature (float): tau_T. Defaults to 1.0 (ImageNet best in
            the paper; it used 4.0 on CIFAR-100).
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none: every label must be a class index).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    requires_labels = True

    #: Why a top-k teacher store is refused (see ``teacher_topk``).
    topk_refusal = (
        'its Plackett-Luce likelihood needs the whole teacher ranking')

    def __init__(self,
                 teacher_temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.teacher_temperature = self.positive('teacher_temperature',
                                                 teacher_temperature)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        student, teacher = logits_to_rows(student), logits_to_rows(teacher)
        labels = labels.reshape(-1)
        order = teacher_optimal_permutation(teacher, labels)
        student_ordered = student.gather(1, order)
        weights = torch.softmax(teacher / self.teacher_temperature,
                                dim=1).gather(1, order)
        # logsumexp over the classes not chosen yet: suffix logcumsumexp.
        remaining_lse = student_ordered.flip(1).logcumsumexp(1).flip(1)
        row_loss = (weights * (remaining_lse - student_ordered)).sum(1)
        return weighted_mean(row_loss,
                             None if valid is None else valid.reshape(-1))
