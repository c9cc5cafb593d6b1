"""Training a DeiT student's distillation token, as the DeiT paper does.

mmpretrain's ``DeiTClsHead`` averages the class-token and the
distillation-token scores in ``forward`` and cannot train (it warns). DeiT
(Touvron et al., ICML 2021) trains the class token's head on the labels and
the distillation token's head on the teacher, and predicts with the average
of the two. For a student with a ``DeiTClsHead`` the distiller therefore
runs, instead of the student's ``loss()``:

* the backbone once, then the head's two linear layers on the two tokens
  (``pre_logits``, ``layers.head``, ``layers.head_dist``);
* the head's own loss (its ``loss`` config, mixup scores included) on the
  class-token logits: the student's task loss (``cls.loss``);
* the distillation losses on the distillation-token logits (DeiT's own:
  :class:`~mmrankkd.models.losses.DeiTDistillationLoss`).

Prediction is mmpretrain's: the head's ``forward`` averages the two scores.
"""
from typing import Dict, List, Tuple

import torch
import torch.nn as nn


def has_distillation_token(model: nn.Module, kind: str) -> bool:
    """Whether ``model`` is a classifier with a DeiT distilled head."""
    if kind != 'cls':
        return False
    try:
        from mmpretrain.models.heads import DeiTClsHead
    except ImportError:  # pragma: no cover - mmpretrain not installed
        return False
    return isinstance(getattr(model, 'head', None), DeiTClsHead)


def token_logits(student: nn.Module,
                 inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(class-token logits, distillation-token logits) of a DeiT student,
    from one backbone forward."""
    head = student.head
    cls_token, dist_token = head.pre_logits(student.extract_feat(inputs))
    return head.layers.head(cls_token), head.layers.head_dist(dist_token)


def distillation_token_step(
        student: nn.Module, inputs: torch.Tensor,
        data_samples: List) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    """The head's own loss on the class token (the student's task losses)
    and the distillation token's logits (what the distill losses get)."""
    cls_logits, dist_logits = token_logits(student, inputs)
    return student.head._get_loss(cls_logits, data_samples), dist_logits
