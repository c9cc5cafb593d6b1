"""BDD: balance divergence distillation (arXiv 2501.07804)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import softmax_kl
from .utils import BaseLogitLoss, channel_distributions, row_weights

MODES = ('pixel', 'channel')


@MODELS.register_module()
class BalanceDivergenceLoss(BaseLogitLoss):
    r"""Forward KL plus a compensating reverse KL (BDD, arXiv 2501.07804).

    The adopted formulation:

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

    Zero at student == teacher. Value and gradient come from one fused
    pass per temperature (:func:`mmrankkd.models.losses.fused.softmax_kl`).

    Args:
        forward_temperature (float): T_f. Defaults to 1.0.
        reverse_temperature (float): T_r. Defaults to 1.0.
        forward_weight (float): w_f. Defaults to 1.0.
        reverse_weight (float): w_r. Defaults to 1.0.
        mode (str): 'pixel' or 'channel' (dense input only). Defaults to
            'pixel'.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    def __init__(self,
                 forward_temperature: float = 1.0,
                 reverse_temperature: float = 1.0,
                 forward_weight: float = 1.0,
                 reverse_weight: float = 1.0,
                 mode: str = 'pixel',
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
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

    def standardize_dims(self):
        """Classes ('pixel') or, per channel, positions ('channel')."""
        return (2, 3) if self.mode == 'channel' else (1, )

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: approximate (see :class:`BaseLogitLoss`)."""
        return 'approximate'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        if self.mode == 'channel':
            student, teacher, mask, weights = channel_distributions(
                student, teacher, valid)
            dim = -1
        else:
            mask, weights, dim = None, row_weights(student, valid), 1
        forward_weight, reverse_weight = (self.forward_weight,
                                          self.reverse_weight)
        if not (forward_weight or reverse_weight):
            return student.sum() * 0.
        if forward_weight and reverse_weight and \
                self.forward_temperature == self.reverse_temperature:
            return softmax_kl(student, teacher, self.forward_temperature,
                              dim, weights, forward_weight, reverse_weight,
                              mask)
        loss = 0.
        if forward_weight:
            loss = softmax_kl(student, teacher, self.forward_temperature,
                              dim, weights, forward_weight, 0., mask)
        if reverse_weight:
            loss = loss + softmax_kl(student, teacher,
                                     self.reverse_temperature, dim, weights,
                                     0., reverse_weight, mask)
        return loss
