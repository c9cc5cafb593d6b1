"""MLKD: multi-level logit distillation on a weak and a strong view."""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from mmrankkd.registry import MODELS
from .utils import (STANDARDIZE_EPS, BaseLogitLoss, check_logits,
                    standardize, to_float)

VIEWS = ('weak', 'strong')


def median_mask_fraction(values: Tensor) -> Tensor:
    """The fraction of ``values`` at or below their median, the median as
    ``np.percentile(values, 50)`` computes it (linear interpolation, in the
    values' dtype). A 0-dim tensor; no host synchronisation."""
    threshold = torch.quantile(values, 0.5)
    return (values <= threshold).to(values.dtype).mean()


def _standardize_backward(grad: Tensor, centred: Tensor,
                          std: Tensor) -> Tensor:
    """Gradient through :func:`standardize` (rows along the last dim), from
    its centred logits and std."""
    denom = 1e-7 + std
    along = (grad * centred).sum(-1, keepdim=True).div_(
        denom.square() * std * (centred.size(-1) - 1))
    grad = (grad - grad.mean(dim=-1, keepdim=True)).div_(denom)
    return grad.sub_(centred * along)


def _sq_norms(x: Tensor) -> Tensor:
    """(K,) squared Frobenius norms of (K, A, B) ``x``."""
    return torch.linalg.vector_norm(x, dim=(1, 2)).square()


def _kl_and_probs(student: Tensor, teacher: Tensor, temps: Tensor):
    """(K,) ``sum_rows KL(p_t || p_s)`` at the (K, 1, 1) temperatures, and
    the (K, N, C) softmaxes p_s, p_t."""
    log_s = F.log_softmax(student / temps, dim=-1)
    log_t = F.log_softmax(teacher / temps, dim=-1)
    p_t = log_t.exp()
    kl = log_t.sub_(log_s).mul_(p_t).sum((1, 2))
    return kl, log_s.exp_(), p_t


def _gram_terms(p_s: Tensor, p_t: Tensor, class_scale: Tensor,
                batch_scale: Tensor, want_grad: bool):
    r"""Class and batch levels at K temperatures: sum_k of
    ``class_scale ||P_t^T P_t - P_s^T P_s||^2 + batch_scale ||P_t P_t^T
    - P_s P_s^T||^2`` for the (K, N, C) softmaxes, and its gradient wrt
    ``p_s``.

    Both levels come from the Grams over the smaller of N and C only
    (``X^T X`` with ``X = P`` if C <= N, else ``X = P^T``): the level whose
    Gram that is ("direct") as written, the other one ("across", Gram
    ``X X^T``) by ``||A^T A||^2 + ||B^T B||^2 - 2 ||A^T B||^2``, the same
    value, since ``tr(A^T A B^T B) = ||A B^T||^2``. So 1000 classes of 32
    images never form a 1000 x 1000 Gram per temperature.
    """
    if p_s.size(-1) <= p_s.size(-2):
        x_s, x_t = p_s, p_t
        direct, across = class_scale, batch_scale
    else:
        x_s, x_t = p_s.transpose(1, 2), p_t.transpose(1, 2)
        direct, across = batch_scale, class_scale
    a_tt = x_t.transpose(1, 2) @ x_t
    a_ss = x_s.transpose(1, 2) @ x_s
    a_ts = x_t.transpose(1, 2) @ x_s
    tt, ss = _sq_norms(a_tt), _sq_norms(a_ss)
    gap = a_tt.sub_(a_ss)
    value = direct * _sq_norms(gap).sum() + across * (
        tt + ss - 2 * _sq_norms(a_ts)).sum()
    if not want_grad:
        return value, None
    # d/dX_s = 4 X_s (across A_ss - direct gap) - 4 X_t (across A_ts)
    m_s = a_ss.mul_(4 * across).sub_(gap.mul_(4 * direct))
    grad = (x_s @ m_s).baddbmm_(x_t, a_ts.mul_(across), alpha=-4)
    return value, grad.transpose(1, 2) if x_s is not p_s else grad


def mlkd_value_and_grads(s_w: Tensor, t_w: Tensor, s_s: Tensor,
                         t_s: Tensor, temps: Tensor, weak_extra: Tensor,
                         strong_temps: Optional[Tensor],
                         standardized: bool, want_grad: bool):
    """MLKD's value and its gradients wrt the weak and strong student
    logits (None without ``want_grad``), no autograd. ``temps``: (K, 1, 1)
    temperatures; ``weak_extra``: (K,) 1 where the unmasked instance term
    takes the weak view; ``strong_temps``: (K_s, 1, 1) temperatures of the
    strong-view instance terms (None: none)."""
    num, num_classes = s_w.shape
    prob = F.softmax(t_w, dim=1)
    m_i = median_mask_fraction(prob.amax(1))
    m_c = median_mask_fraction(prob.sum(0))
    del prob
    sq_temps = temps.square()
    # Instance level: (K,) weights of T^2 * sum_rows KL on each view.
    weak_w = (m_i + weak_extra) * sq_temps.view(-1) / num
    if standardized:  # both views in one pass
        stacked = torch.stack((s_w, s_s))
        centred = stacked - stacked.mean(dim=-1, keepdim=True)
        std = stacked.std(dim=-1, keepdim=True)
        del stacked
        kd_s = centred / (STANDARDIZE_EPS + std)
        kd_t = standardize(torch.stack((t_w, t_s)), dim=-1)
    else:
        kd_s, kd_t = (s_w, s_s), (t_w, t_s)
    kl, p_s, p_t = _kl_and_probs(kd_s[0], kd_t[0], temps)
    value = torch.dot(kl, weak_w)
    # d/dz of w T^2 KL(p_t || p_s(z / T)) = w T (p_s - p_t)
    grad_kd = p_s.sub_(p_t).mul_(weak_w.view(-1, 1, 1) / temps).sum(0) \
        if want_grad else None
    grad_s = torch.zeros_like(s_s) if want_grad else None
    if strong_temps is not None:
        kl, p_ss, p_ts = _kl_and_probs(kd_s[1], kd_t[1], strong_temps)
        strong_w = strong_temps.square().view(-1) / num
        value = value + torch.dot(kl, strong_w)
        if want_grad:
            grad_s = p_ss.sub_(p_ts).mul_(
                strong_w.view(-1, 1, 1) / strong_temps).sum(0)
        del p_ss, p_ts
    del kd_s, kd_t
    if standardized and want_grad:
        grad_kd, grad_s = _standardize_backward(
            torch.stack((grad_kd, grad_s)), centred, std)
    if standardized or want_grad:  # (p_s was consumed by the gradient)
        p_s = F.softmax(s_w / temps, dim=-1)
    if standardized:
        p_t = F.softmax(t_w / temps, dim=-1)
    levels, grad_p = _gram_terms(p_s, p_t, m_c / num_classes, m_i / num,
                                 want_grad)
    value = value + levels
    if not want_grad:
        return value, None, None
    # softmax backward, then d(z / T) / dz = 1 / T
    row = (grad_p * p_s).sum(-1, keepdim=True)
    grad_w = grad_p.sub_(row).mul_(p_s).div_(temps).sum(0).add_(grad_kd)
    return value, grad_w, grad_s


class _MLKD(torch.autograd.Function):
    """``mlkd_value_and_grads``'s value, with its closed-form gradients
    wrt the weak and strong student logits."""

    @staticmethod
    def forward(ctx, s_w, s_s, t_w, t_s, args):
        value, grad_w, grad_s = mlkd_value_and_grads(
            s_w, t_w, s_s, t_s, *args, want_grad=True)
        ctx.save_for_backward(grad_w, grad_s)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad_w, grad_s = ctx.saved_tensors
        return grad_w * grad_out, grad_s * grad_out, None, None, None


@MODELS.register_module()
class MLKDLoss(BaseLogitLoss):
    r"""Multi-level logit distillation (Jin et al., CVPR 2023), as the
    authors' code computes it (``KD_ours`` in
    github.com/Jin-Ying/Multi-Level-Logit-Distillation,
    ``mdistiller/distillers/KD_ours.py``; the logit-standardization
    variant from github.com/sunshangquan/logit-standardization-KD,
    ``mdistiller/distillers/MLKD.py``).

    It takes two views of the batch, weak (crop + flip) and strong (crop +
    flip + RandAugment), with the student's and the teacher's logits on
    each. With :math:`p^T = \mathrm{softmax}(z / T)` over the classes, the
    temperatures :math:`\mathcal{T}` (the authors' ``{4, 3, 5, 2, 6}``):

    .. math::
        L = \sum_{T \in \mathcal{T}} \Big(
            m_i\, KD_T(w) + KD_T(v_T)
            + m_c\, \tfrac{1}{C}\|G^T_t - G^T_s\|_F^2
            + m_i\, \tfrac{1}{N}\|B^T_t - B^T_s\|_F^2 \Big)

    * instance level: :math:`KD_T(v) = T^2\, \mathrm{mean}_n KL(p^T_t \|
      p^T_s)` on view v; the first sum runs on the weak view, the second
      on ``strong_kd_views[i]`` for the i-th temperature: the authors' code
      takes the strong view for the first three temperatures and the weak
      one for the last two (``('strong',) * 3 + ('weak',) * 2``, our
      default);
    * class level: :math:`G = (p^T)^\top p^T` (C x C), weak view;
    * batch level: :math:`B = p^T (p^T)^\top` (N x N), weak view;
    * confidence masks from the teacher's weak-view softmax at T = 1:
      :math:`m_i` is the fraction of samples whose top probability is at or
      below the batch median, :math:`m_c` the fraction of classes whose
      summed probability is at or below the class median (the authors
      multiply each *batch-mean* term by the 0/1 mask and average it, i.e.
      scale it by that fraction; the strong-view terms are unmasked).

    The authors' code also computes class and batch terms on the strong
    view but does not add them to the loss; neither do we. Their
    cross-entropy on both views is the student's own loss: the distiller
    runs the student's ``loss()`` on each view.

    With ``logit_standardization=True`` (MLKD + LS, Sun et al., CVPR 2024)
    the instance-level terms see :func:`standardize`-d logits, student and
    teacher; the class and batch levels and the masks use the raw logits,
    as in the LS authors' code (their MLKD + LS runs use the temperatures
    ``{2, 3, 5, 2, 6}`` and weight 9).

    Classification only: it takes (N, C) logits (for dense logits the
    batch level would be a Gram of every pixel pair).

    The distiller calls ``loss(s_weak, t_weak, s_strong, t_strong)``: a
    loss with ``num_views = 2`` gets both views (the train pipeline must
    yield them, see :mod:`mmrankkd.datasets.transforms`).

    Args:
        temperatures (Sequence[float]): The temperature set. Defaults to
            (4, 3, 5, 2, 6) (mdistiller's ``CFG.KD.TEMPERATURE`` = 4 first,
            then the code's 3, 5, 2, 6).
        strong_kd_views (Sequence[str]): For each temperature, the view
            ('weak' or 'strong') of the unmasked instance-level term.
            Defaults to the authors' ``('strong',) * 3 + ('weak',) * 2``
            (for other temperature counts: 'strong' for all).
        logit_standardization (bool): Standardize the logits of the
            instance-level terms (MLKD + LS). Defaults to False.
        loss_weight (float): Multiplies every term (the authors'
            ``KD_WEIGHT``: 0.9 for MLKD, 9 for MLKD + LS). Defaults to 1.0.
        validate (str): See :class:`BaseLogitLoss`. Defaults to 'deferred'.
        validate_interval (int): Defaults to 100.
    """

    #: The distiller passes (s_weak, t_weak, s_strong, t_strong).
    num_views = 2

    #: Why a top-k teacher store is refused (see ``teacher_topk``).
    topk_refusal = ('it takes two views, which no store holds')

    def __init__(self,
                 temperatures: Sequence[float] = (4.0, 3.0, 5.0, 2.0, 6.0),
                 strong_kd_views: Optional[Sequence[str]] = None,
                 logit_standardization: bool = False,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__(loss_weight, ignore_index, validate,
                         validate_interval)
        if ignore_index is not None:
            raise ValueError(
                'MLKDLoss: ignore_index must be None: classification labels '
                'have no ignore value and the loss reads no labels.')
        temperatures = [float(t) for t in temperatures]
        if not temperatures:
            raise ValueError('MLKDLoss: temperatures is empty. Fix: give at '
                             'least one, e.g. (4, 3, 5, 2, 6).')
        for t in temperatures:
            self.positive('each temperature', t)
        if strong_kd_views is None:
            strong_kd_views = (('strong', ) * 3 + ('weak', ) * 2 if len(
                temperatures) == 5 else ('strong', ) * len(temperatures))
        strong_kd_views = tuple(strong_kd_views)
        if len(strong_kd_views) != len(temperatures) or any(
                v not in VIEWS for v in strong_kd_views):
            raise ValueError(
                'MLKDLoss: strong_kd_views must name a view (\'weak\' or '
                f'\'strong\') for each of the {len(temperatures)} '
                f'temperatures, got {strong_kd_views!r}.')
        self.temperatures = tuple(temperatures)
        self.strong_kd_views = strong_kd_views
        if not isinstance(logit_standardization, bool):
            raise ValueError(
                'MLKDLoss: logit_standardization must be True or False, got '
                f'{logit_standardization!r}.')
        self.logit_standardization = logit_standardization
        # Per temperature: the weight of the weak-view instance term beyond
        # its mask (1 where the second term takes the weak view).
        self._weak_extra = [float(v == 'weak') for v in strong_kd_views]
        self._strong_temps = [
            t for t, v in zip(temperatures, strong_kd_views) if v == 'strong'
        ]
        self._cache = {}

    def _temps(self, values: Sequence[float], like: Tensor) -> Tensor:
        """(K, 1, 1) tensor of ``values``, made once per dtype/device."""
        key = (tuple(values), like.dtype, like.device)
        if key not in self._cache:
            self._cache[key] = torch.tensor(
                values, dtype=like.dtype, device=like.device).view(-1, 1, 1)
        return self._cache[key]

    def forward(self,
                student_weak: Tensor,
                teacher_weak: Tensor,
                student_strong: Tensor,
                teacher_strong: Tensor,
                labels: Optional[Tensor] = None) -> Tensor:
        """Compute the loss.

        Args:
            student_weak (Tensor): (N, C) student logits, weak view.
            teacher_weak (Tensor): (N, C) teacher logits, weak view.
            student_strong (Tensor): (N, C) student logits, strong view.
            teacher_strong (Tensor): (N, C) teacher logits, strong view.
            labels (Tensor, optional): Not used (accepted for the common
                call).

        Returns:
            Tensor: A scalar, multiplied by ``loss_weight``.
        """
        check_logits(student_weak, teacher_weak, self.loss_name)
        check_logits(student_strong, teacher_strong, self.loss_name)
        if student_weak.shape != student_strong.shape:
            raise ValueError(
                f'{self.loss_name}: the weak view\'s logits '
                f'{tuple(student_weak.shape)} and the strong view\'s '
                f'{tuple(student_strong.shape)} differ in shape: both views '
                'must hold the same samples.')
        if student_weak.dim() != 2:
            raise ValueError(
                f'{self.loss_name} takes (N, C) classification logits, got '
                f'shape {tuple(student_weak.shape)}: its batch level is a '
                'Gram of every pair of rows, which for dense logits is '
                'every pair of pixels. Fix: use a per-pixel loss (KD, DKD, '
                'DIST) for segmentation.')
        views = [to_float(x) for x in (student_weak, teacher_weak,
                                       student_strong, teacher_strong)]
        views[1], views[3] = views[1].detach(), views[3].detach()
        s_w, t_w, s_s, t_s = views
        if s_w.numel() == 0:
            return s_w.sum() * 0. + s_s.sum() * 0.
        # One value check for both views: a (1, 2) "logits" of the two
        # sums is finite iff every logit of both views is.
        with torch.no_grad():
            self._check_values(
                torch.stack((s_w.sum(), s_s.sum())).view(1, 2),
                torch.stack((t_w.sum(), t_s.sum())).view(1, 2), None, None)
        device_type = s_w.device.type
        if torch.is_autocast_enabled(device_type):
            with torch.autocast(device_type, enabled=False):
                loss = self.mlkd(s_w, t_w, s_s, t_s)
        else:
            loss = self.mlkd(s_w, t_w, s_s, t_s)
        if self.loss_weight != 1.0:
            loss = loss * self.loss_weight
        return loss

    def mlkd(self, s_w: Tensor, t_w: Tensor, s_s: Tensor,
             t_s: Tensor) -> Tensor:
        """The unweighted loss on checked float (N, C) logits."""
        args = (self._temps(self.temperatures, s_w),
                self._temps(self._weak_extra, s_w).view(-1),
                self._temps(self._strong_temps, s_w)
                if self._strong_temps else None, self.logit_standardization)
        if torch.is_grad_enabled() and (s_w.requires_grad
                                        or s_s.requires_grad):
            return _MLKD.apply(s_w, s_s, t_w, t_s, args)
        return mlkd_value_and_grads(s_w, t_w, s_s, t_s, *args,
                                    want_grad=False)[0]
