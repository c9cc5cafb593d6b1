"""DIST: inter- and intra-class Pearson relations (baseline; REFERENCE.md)."""
from typing import Optional

from torch import Tensor

from mmrankkd.registry import MODELS
from .utils import BaseLogitLoss, pearson_correlation, valid_rows


@MODELS.register_module()
class DISTLoss(BaseLogitLoss):
    r"""DIST: knowledge distillation from a stronger teacher (Huang et al.,
    NeurIPS 2022).

    Implements REFERENCE.md "Baselines", DIST, as the authors' code does:

    .. math::
        inter = 1 - \mathrm{mean}_{rows}\, \rho(p_s, p_t), \quad
        intra = 1 - \mathrm{mean}_{cols}\, \rho(p_s[:, c], p_t[:, c]), \quad
        L = T^2 (\beta \cdot inter + \gamma \cdot intra)

    with :math:`p = softmax(z / T)` per row and :math:`\rho` the Pearson
    correlation (norm product clamped at 1e-8). Dense logits: every valid
    pixel of the batch is a row, so ``intra`` correlates each class over all
    valid pixels. Zero at student == teacher.

    Args:
        beta (float): Inter-class weight. Defaults to 1.0.
        gamma (float): Intra-class weight. Defaults to 1.0.
        temperature (float): T. Defaults to 1.0.
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value left out. Defaults to 255.
    """

    def __init__(self,
                 beta: float = 1.0,
                 gamma: float = 1.0,
                 temperature: float = 1.0,
                 loss_weight: float = 1.0,
                 ignore_index: int = 255):
        super().__init__(loss_weight=loss_weight, ignore_index=ignore_index)
        self.beta = float(beta)
        self.gamma = float(gamma)
        self.temperature = self.positive('temperature', temperature)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        student, teacher, _ = valid_rows(student, teacher, labels,
                                         self.ignore_index)
        p_student = (student / self.temperature).softmax(dim=1)
        p_teacher = (teacher / self.temperature).softmax(dim=1)
        inter = 1 - pearson_correlation(p_student, p_teacher, dim=1).mean()
        intra = 1 - pearson_correlation(p_student, p_teacher, dim=0).mean()
        return self.temperature**2 * (self.beta * inter + self.gamma * intra)
