"""CWD: channel-wise distillation (baseline)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import softmax_kl
from .utils import BaseLogitLoss, channel_distributions


@MODELS.register_module()
class CWDLoss(BaseLogitLoss):
    r"""Channel-wise distillation (Shu et al., ICCV 2021).

    As mmrazor's
    ``ChannelWiseDivergence``: each class channel of an image is turned into
    a distribution over its H*W positions,

    .. math::
        \phi(z_{n,c}) = \mathrm{softmax}_{hw}(z_{n,c,hw} / T), \quad
        L = \frac{T^2}{N C} \sum_{n, c} KL\big(\phi(t_{n,c}) \,\|\,
            \phi(s_{n,c})\big)

    i.e. summed over positions, averaged over the N*C channels (not a
    per-pixel mean). With labels and ``ignore_index``, ignored pixels are
    left out of every channel's distribution, and images whose pixels are
    all ignored are left out of N. Zero at student == teacher.

    Only dense (N, C, H, W) logits have channels over space: (N, C) input
    raises ``ValueError`` (use :class:`KDLoss` or :class:`DISTLoss`).

    Args:
        temperature (float): T. Defaults to 1.0 (mmrazor's PSPNet setting,
            used there with loss_weight=5).
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    dense_only = True
    dense_only_hint = ('Fix: CWD distributes each class over H*W positions; '
                       'for (N, C) classification logits use KDLoss or '
                       'DISTLoss.')

    #: Why a top-k teacher store is refused (see ``teacher_topk``).
    topk_refusal = ('its per-channel distributions need every logit')

    def __init__(self,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.temperature = self.positive('temperature', temperature)

    def standardize_dims(self):
        """Each channel's distribution is over the positions."""
        return (2, 3)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        student, teacher, mask, weights = channel_distributions(
            student, teacher, valid)
        return softmax_kl(student, teacher, self.temperature, -1, weights,
                          mask=mask)
