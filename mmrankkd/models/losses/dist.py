"""DIST: inter- and intra-class Pearson relations (baseline)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .fused import dist
from .utils import BaseLogitLoss


@MODELS.register_module()
class DISTLoss(BaseLogitLoss):
    r"""DIST: knowledge distillation from a stronger teacher (Huang et al.,
    NeurIPS 2022).

    As the authors' code (DIST_KD; mmrazor's ``DISTLoss`` is the same)
    computes it:

    .. math::
        inter = 1 - \mathrm{mean}_{rows}\, \rho(p_s, p_t), \quad
        intra = 1 - \mathrm{mean}_{cols}\, \rho(p_s[:, c], p_t[:, c]), \quad
        L = T^2 (\beta \cdot inter + \gamma \cdot intra)

    with :math:`p = softmax(z / T)` per row and :math:`\rho(a, b) =
    \frac{a' \cdot b'}{|a'|\,|b'| + 10^{-8}}` on the centred vectors
    (:func:`~mmrankkd.models.losses.utils.pearson_correlation`: eps added
    to the norm product, so a constant column has correlation 0 and the
    official code's large gradient ``b' / eps``). Dense logits: every
    pixel of the batch is a row (ignored ones left out), so ``intra``
    correlates each class over all kept pixels, as DIST_KD's segmentation
    code does. Zero at student == teacher. Value and gradient come from one
    fused pass (:mod:`mmrankkd.models.losses.fused`).

    Args:
        beta (float): Inter-class weight. Defaults to 1.0.
        gamma (float): Intra-class weight. Defaults to 1.0.
        temperature (float): T. Defaults to 1.0.
        zero_grad_where_constant (bool): Not the official form: where a
            centred vector is constant (norm product < 1e-8, e.g. a class
            column of saturated probabilities) the correlation is 0 with
            zero gradient, elsewhere a'.b' / (|a'| |b'|) without eps (the
            form mmrankkd used before; keeps fp16 gradients finite where
            the official one gives ~b'/1e-8). Defaults to False.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None
            (none).
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    #: Why a top-k teacher store is refused (see ``teacher_topk``).
    topk_refusal = ('its Pearson correlations need every teacher probability')

    def __init__(self,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 temperature: float = 1.0,
                 zero_grad_where_constant: bool = False,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.temperature = self.positive('temperature', temperature)
        self.zero_grad_where_constant = bool(zero_grad_where_constant)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        return dist(student, teacher, self.beta, self.gamma,
                    self.temperature, valid,
                    zero_grad_where_constant=self.zero_grad_where_constant)
