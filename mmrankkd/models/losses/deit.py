"""DeiT's distillation-token loss (hard or soft), for DeiT students."""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import softmax_kl
from .utils import BaseLogitLoss, logits_to_rows, row_weights

MODES = ('hard', 'soft')


@MODELS.register_module()
class DeiTDistillationLoss(BaseLogitLoss):
    r"""The distillation term of DeiT (Touvron et al., ICML 2021), on the
    logits of a DeiT student's distillation token, as the authors'
    ``DistillationLoss`` (github.com/facebookresearch/deit, losses.py)
    computes it:

    * ``'hard'`` (the paper's DeiT-distilled models):
      :math:`CE(z_{dist}, \arg\max_c z_t)`, a mean over rows;
    * ``'soft'``: :math:`T^2 \sum KL(p_t^T \| p_s^T) / (N C)`: their
      ``kl_div(..., reduction='sum') * T * T / outputs_kd.numel()``, i.e.
      divided by the number of logits, not of samples (their "legacy
      PyTorch behaviour"; KDLoss divides by N).

    Their total is ``(1 - alpha) * base + alpha * distillation`` with
    ``alpha = 0.5``: give this loss ``loss_weight=0.5`` and the student's
    head loss (the class token's) ``loss_weight=0.5``. With a DeiT student
    (``DeiTClsHead``) the distiller passes the distillation token's logits
    here and trains the class token with the head's own loss (see
    :mod:`mmrankkd.models.distillers.distillation_token`); it is a plain
    logit loss otherwise. Dense logits: every pixel is a row.

    Args:
        mode (str): 'hard' or 'soft'. Defaults to 'hard'.
        temperature (float): T of the soft mode (DeiT's ``tau``). Defaults
            to 1.0.
        loss_weight (float): DeiT's ``alpha`` (0.5 in its recipe; 1.0 by
            default, as every mmrankkd loss).
        ignore_index (int, optional): Label value left out (dense logits).
            Defaults to None.
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    def __init__(self,
                 mode: str = 'hard',
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        if mode not in MODES:
            raise ValueError(f'DeiTDistillationLoss: mode must be \'hard\' '
                             f'or \'soft\', got {mode!r}.')
        self.mode = mode
        self.temperature = self.positive('temperature', temperature)

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: exact for ``'hard'`` (its argmax is kept),
        approximate for ``'soft'``."""
        return 'exact' if self.mode == 'hard' else 'approximate'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        if self.mode == 'soft':
            return softmax_kl(student, teacher, self.temperature, 1,
                              row_weights(student, valid)) / student.size(1)
        rows = logits_to_rows(student)
        targets = logits_to_rows(teacher).argmax(1)
        if valid is None:
            return F.cross_entropy(rows, targets)
        weights = row_weights(student, valid, flat=True).view(-1)
        return torch.dot(F.cross_entropy(rows, targets, reduction='none'),
                         weights)
