"""BDD: balance divergence distillation (REFERENCE.md section 1)."""
from typing import Optional

import torch.nn.functional as F
from torch import Tensor

from mmrankkd.registry import MODELS
from .utils import (BaseLogitLoss, channel_log_softmax, drop_empty_images,
                    kl_from_log_probs, spatial_valid_mask, valid_rows)

MODES = ('pixel', 'channel')


@MODELS.register_module()
class BalanceDivergenceLoss(BaseLogitLoss):
    r"""Forward KL plus a compensating reverse KL (BDD, arXiv 2501.07804).

    Implements REFERENCE.md section 1, adopted formulation:

    .. math::
        L = w_f T_f^2\, KL(p_t^{T_f} \| p_s^{T_f})
          + w_r T_r^2\, KL(p_s^{T_r} \| p_t^{T_r})

    Confirmed by the paper: forward KL (classic KD) plus a reverse KL so the
    teacher's small probabilities ("negative knowledge") count; temperatures
    tuned, possibly separately. Ours (the paper's exact form is not public
    to us): the weights w_f, w_r, separate T_f, T_r, and the dense modes:

    * (N, C) input: p = softmax over classes, mean over samples.
    * ``mode='pixel'`` (default) on (N, C, H, W): p = softmax over classes
      at each pixel, mean over valid pixels.
    * ``mode='channel'`` on (N, C, H, W): CWD-style, p = softmax over the
      H*W positions of each class channel, KLs summed over positions and
      averaged over the N*C channels; ignored pixels are left out of the
      spatial softmax. (N, C) input raises ``ValueError`` in this mode.

    Zero at student == teacher.

    Args:
        forward_temperature (float): T_f. Defaults to 1.0.
        reverse_temperature (float): T_r. Defaults to 1.0.
        forward_weight (float): w_f. Defaults to 1.0.
        reverse_weight (float): w_r. Defaults to 1.0.
        mode (str): 'pixel' or 'channel' (dense input only). Defaults to
            'pixel'.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value left out. Defaults to 255.
    """

    def __init__(self,
                 forward_temperature: float = 1.0,
                 reverse_temperature: float = 1.0,
                 forward_weight: float = 1.0,
                 reverse_weight: float = 1.0,
                 mode: str = 'pixel',
                 loss_weight: float = 1.0,
                 ignore_index: int = 255):
        super().__init__(loss_weight=loss_weight, ignore_index=ignore_index)
        if mode not in MODES:
            raise ValueError(f'BalanceDivergenceLoss: mode must be one of '
                             f'{MODES}, got {mode!r}.')
        self.forward_temperature = self.positive('forward_temperature',
                                                 forward_temperature)
        self.reverse_temperature = self.positive('reverse_temperature',
                                                 reverse_temperature)
        self.forward_weight = float(forward_weight)
        self.reverse_weight = float(reverse_weight)
        self.mode = mode
        self.dense_only = mode == 'channel'
        self.dense_only_hint = (
            "Fix: mode='channel' distributes each class over H*W positions; "
            "use mode='pixel' for (N, C) classification logits.")

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        if self.mode == 'channel':
            student, teacher, valid = drop_empty_images(
                student, teacher,
                spatial_valid_mask(labels, self.ignore_index))

            def log_probs(logits, temperature):
                return channel_log_softmax(logits, temperature, valid)

            dim = -1
        else:
            student, teacher, _ = valid_rows(student, teacher, labels,
                                             self.ignore_index)
            valid = None

            def log_probs(logits, temperature):
                return F.log_softmax(logits / temperature, dim=1)

            dim = 1
        loss = 0.
        if self.forward_weight:
            temperature = self.forward_temperature
            forward_kl = kl_from_log_probs(
                log_probs(teacher, temperature),
                log_probs(student, temperature), dim, valid)
            loss = loss + self.forward_weight * temperature**2 * \
                forward_kl.mean()
        if self.reverse_weight:
            temperature = self.reverse_temperature
            reverse_kl = kl_from_log_probs(
                log_probs(student, temperature),
                log_probs(teacher, temperature), dim, valid)
            loss = loss + self.reverse_weight * temperature**2 * \
                reverse_kl.mean()
        if not isinstance(loss, Tensor):  # both weights zero
            loss = student.sum() * 0.
        return loss
