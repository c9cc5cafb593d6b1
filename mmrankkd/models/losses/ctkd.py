"""CTKD: curriculum temperature for knowledge distillation (Li et al., AAAI
2023), global temperature with KD."""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmrankkd.registry import MODELS
from .utils import BaseLogitLoss, row_weights


class GradientReversal(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``lambda_``
    (zhengli97/CTKD, models/temp_global.py ``GradientReversalFunction``:
    ``dx = lambda_ * grads``; CTKD's schedule makes ``lambda_`` <= 0, which
    reverses the gradient)."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        return grad * ctx.lambda_, None


class _LearnableTemperatureKD(torch.autograd.Function):
    r"""``sum_r w_r T^2 KL(softmax(t_r / T) || softmax(s_r / T))`` with a
    tensor T; value and the gradients for the student and T from one
    forward pass.

    With :math:`a = z / T`, :math:`S = \sum_r w_r KL_r`, :math:`d = \log
    p_t - \log p_s`:

    * :math:`\partial L / \partial s = T w (p_s - p_t)`;
    * :math:`\partial L / \partial T = 2 T S - T \sum_r w_r [\sum_k p_t
      (\log p_t - \langle p_t, \log p_t\rangle) d + \langle p_s - p_t,
      \log p_s\rangle]` (from :math:`\partial a / \partial T = -a / T`;
      log-probabilities instead of :math:`a` since both sums are
      invariant to a per-row shift).
    """

    @staticmethod
    def forward(ctx, student, temperature, teacher, weights):
        inv = temperature.reciprocal()
        log_ps = F.log_softmax(student * inv, 1)
        log_pt = F.log_softmax(teacher * inv, 1)
        pt = log_pt.exp()
        diff = log_pt - log_ps
        per_row = isinstance(weights, Tensor)
        kl = (pt * diff).sum(1, keepdim=True)
        total = (kl * weights).sum() if per_row else kl.sum() * weights
        t = temperature.reshape(())
        value = t * t * total
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            ps = log_ps.exp()
            neg_entropy = (pt * log_pt).sum(1, keepdim=True)
            rows = (pt * log_pt * diff).sum(1, keepdim=True)
            rows = rows.sub_(neg_entropy * kl).add_(
                ((ps - pt) * log_ps).sum(1, keepdim=True))
            rows = (rows * weights).sum() if per_row else rows.sum() * weights
            grad_t = (2 * t * total - t * rows).reshape(temperature.shape)
            grad_s = ps.sub_(pt).mul_(weights).mul_(t)
            ctx.save_for_backward(grad_s, grad_t)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_s, grad_t = ctx.saved_tensors
        return grad_s * grad_out, grad_t * grad_out, None, None


@MODELS.register_module()
class CTKDLoss(BaseLogitLoss):
    r"""KD with CTKD's learnable global temperature (Li et al., AAAI 2023).

    As the authors' code (zhengli97/CTKD: models/temp_global.py
    ``Global_T``, helper/loops.py, distiller_zoo/KD.py) computes it:

    .. math::
        T = t_{start} + t_{end}\,\sigma(\mathrm{GRL}_\lambda(\theta)),\quad
        L = T^2 \cdot \mathrm{mean}_{rows}\, KL(p_t^T \| p_s^T),\quad
        p^T = \mathrm{softmax}(z / T)

    :math:`\theta` (``global_t``, initialised to 1 as theirs) is a parameter
    of this module, so it lives in the distiller's ``distill_losses``: the
    runner's optimizer trains it with the student's optimizer settings (lr
    schedule, momentum, weight decay, as their single SGD over the student
    and ``Global_T``) and checkpoints hold it. The gradient reversal layer
    multiplies :math:`\theta`'s gradient by ``grl_lambda`` (their
    ``GradientReversalFunction``: ``dx = lambda_ * grads``); the gradient
    through T reaches both softmaxes and the :math:`T^2` (the teacher's
    logits get none). :class:`~mmrankkd.engine.hooks.CTKDScheduleHook` sets
    ``grl_lambda`` every iteration from their cosine curriculum (0 at the
    start, -1 after the warm-up epochs) and logs T and lambda.

    A row is a sample of (N, C) logits or a pixel of (N, C, H, W) logits
    (pixels labelled ``ignore_index`` left out). The instance-wise variant
    of their README is not implemented.

    Args:
        t_start (float): Lowest temperature (``--t_start``). Defaults to 1.
        t_end (float): Width of the temperature range (``--t_end``): T lies
            in (t_start, t_start + t_end). Defaults to 20.
        grl_lambda (float, optional): Gradient-reversal strength; None (the
            default) until the schedule hook sets it. A training call with
            it unset raises ``ValueError``.
        loss_weight (float): Multiplies the loss (their ``-a``: 0.9 on
            CIFAR-100 with CE 0.1, 1 on ImageNet with CE 1). Defaults to 1.0.
        ignore_index (int, optional): Label value left out. Defaults to None.
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    def __init__(self,
                 t_start: float = 1.0,
                 t_end: float = 20.0,
                 grl_lambda: Optional[float] = None,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        self.t_start = self.positive('t_start', t_start)
        self.t_end = self.positive('t_end', t_end)
        self.grl_lambda = None if grl_lambda is None else float(grl_lambda)
        self.global_t = nn.Parameter(torch.ones(1))
        #: T of the last call, detached (read by the schedule hook's log).
        self.last_temperature: Optional[Tensor] = None

    def temperature(self, lambda_: Optional[float] = None) -> Tensor:
        """T as a (1,) tensor; through the gradient reversal layer when
        ``lambda_`` is given."""
        theta = self.global_t
        if lambda_ is not None:
            theta = GradientReversal.apply(theta, lambda_)
        return self.t_start + self.t_end * torch.sigmoid(theta)

    def teacher_topk(self, k: int) -> str:
        """A top-k teacher: approximate (see :class:`BaseLogitLoss`)."""
        return 'approximate'

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        training = torch.is_grad_enabled() and (
            student.requires_grad or self.global_t.requires_grad)
        if training and self.grl_lambda is None:
            raise ValueError(
                'CTKDLoss: the gradient-reversal strength grl_lambda is '
                'unset. Fix: add dict(type=\'mmrankkd.CTKDScheduleHook\') to '
                'custom_hooks (the authors\' cosine curriculum), or pass '
                'grl_lambda=... for a fixed one.')
        temperature = self.temperature(self.grl_lambda if training else None)
        self.last_temperature = temperature.detach()
        weights = row_weights(student, valid)
        # (under no_grad, apply computes the value only)
        return _LearnableTemperatureKD.apply(
            student, temperature.to(student.dtype), teacher, weights)
