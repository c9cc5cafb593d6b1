"""Softmax losses with closed-form gradients.

KD, BDD, CWD, DKD, DIST and the Pearson terms of CMKD are sums of a few
softmax expressions whose gradient with respect to the student logits has a
short closed form (``T (p_s - p_t)`` for KD, and so on). The functions here
compute the value and, when the student needs a gradient, that gradient in
the same forward pass; backward only multiplies it by the incoming scalar.
This does fewer passes over the logits and dispatches far fewer operators
than autograd through ``log_softmax``/``kl_div``/``norm`` would, which is
what bounds these losses' time on small logits (launch/dispatch overhead)
and on large ones (memory traffic).

They work on (N, C) and (N, C, H, W) logits alike (classes along dim 1;
:func:`softmax_kl` along any ``dim``, e.g. positions for CWD) and take
per-row weights broadcastable to the logits with the class dimension
reduced to 1 (0/1 masks scaled by the mean's normaliser), so ignored pixels
cost no host synchronisation. Tests compare each against plain autograd
through its formula, values and gradients (``tests/test_losses_formulas.py``
and ``tests/test_losses_ranking.py``). Double backward is not supported.
"""
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from .pairwise import (centred_hard_rank, soft_rank_backward,
                       soft_rank_forward)


def _wants_grad(student: Tensor) -> bool:
    """Whether autograd will need the student's gradient."""
    return torch.is_grad_enabled() and student.requires_grad


def _scaled(x: Tensor, scale: float) -> Tensor:
    """x * scale (x itself, not a copy, for scale 1: callers must not
    modify the result in place then)."""
    return x if scale == 1.0 else x * scale


class _Fused(torch.autograd.Function):
    """Runs ``compute(student, True, *args) -> (value, grad)`` (no autograd
    inside) and returns ``value`` whose gradient with respect to
    ``student`` is ``grad`` times the incoming scalar gradient."""

    @staticmethod
    def forward(ctx, student, compute, args):
        value, grad = compute(student, True, *args)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad, = ctx.saved_tensors
        return grad * grad_out, None, None


def _fused(compute, student: Tensor, *args) -> Tensor:
    """``compute``'s value, with its closed-form gradient when the student
    needs one."""
    if _wants_grad(student):
        return _Fused.apply(student, compute, args)
    with torch.no_grad():
        return compute(student, False, *args)[0]


def _reduce(rows: Tensor, weights) -> Tensor:
    """sum(rows * weights) for a tensor or float ``weights``."""
    if isinstance(weights, Tensor):
        return (rows * weights).sum()
    return rows.sum() * weights


def softmax_kl(student: Tensor,
               teacher: Tensor,
               temperature: float,
               dim: int,
               weights,
               forward_weight: float = 1.0,
               reverse_weight: float = 0.0,
               mask: Optional[Tensor] = None) -> Tensor:
    r"""Weighted sum over rows of forward and reverse KL at one temperature.

    .. math::
        \sum_r w_r T^2 \big(a\, KL(p_t \| p_s) + b\, KL(p_s \| p_t)\big)_r,
        \quad p = \mathrm{softmax}_{dim}(z / T)

    Args:
        student (Tensor): Student logits (gets the gradient).
        teacher (Tensor): Teacher logits, same shape (no gradient).
        temperature (float): T.
        dim (int): The softmax dimension.
        weights (Tensor | float): Row weights ``w``, broadcastable to the
            logits with ``dim`` reduced to 1 (e.g. ``mask / count``), or one
            float for every row.
        forward_weight (float): a. Defaults to 1.0.
        reverse_weight (float): b. Defaults to 0.0.
        mask (Tensor, optional): Bool, broadcastable to the logits: the
            entries that belong to the distributions (others are left out of
            every softmax). Each row needs at least one True entry.

    Returns:
        Tensor: The scalar sum.
    """
    return _fused(_softmax_kl, student, teacher, temperature, dim, weights,
                  forward_weight, reverse_weight, mask)


#: On CPU, :func:`softmax_kl` walks the logits in blocks of dim-0 slices of
#: about this many bytes (at least one slice per block; 2 MiB).
CPU_BLOCK_BYTES = 2 << 20


def _block_rows(student: Tensor, dim: int) -> Optional[int]:
    """Dim-0 slices per block of :func:`softmax_kl` on CPU, or None for one
    pass over the whole tensor (GPU, small input, or softmax along dim 0).

    Why: every full-size temporary is a fresh multi-MB allocation, which
    glibc's malloc may serve from newly mapped pages (it returns large freed
    blocks to the OS): a page fault per 4 KiB touched, several ms per call
    at 8x19x64x128, depending on the heap's state (so it differs between
    processes and runs). Per-block temporaries of ~2 MiB are reused from
    block to block; only the gradient is allocated at full size.
    """
    if student.device.type != 'cpu' or dim % student.dim() == 0:
        return None
    per_slice = max(1, student[0].numel() * student.element_size())
    rows = max(1, CPU_BLOCK_BYTES // per_slice)
    return None if rows >= student.size(0) else rows


def _slice_rows(x, rows: slice):
    """Rows ``rows`` of a tensor broadcastable to the logits (as is where
    its dim 0 has size 1, or for None/float)."""
    if isinstance(x, Tensor) and x.dim() > 0 and x.size(0) != 1:
        return x[rows]
    return x


def _softmax_kl(student, need_grad, teacher, temperature, dim, weights,
                forward_weight, reverse_weight, mask):
    rows = _block_rows(student, dim)
    if rows is None:
        return _softmax_kl_block(student, need_grad, teacher, temperature,
                                 dim, weights, forward_weight,
                                 reverse_weight, mask)
    grad = torch.empty_like(student) if need_grad else None
    value = 0.
    for start in range(0, student.size(0), rows):
        block = slice(start, start + rows)
        part, _ = _softmax_kl_block(
            student[block], need_grad, teacher[block], temperature, dim,
            _slice_rows(weights, block), forward_weight, reverse_weight,
            _slice_rows(mask, block), None if grad is None else grad[block])
        value = value + part
    return value, grad


def _softmax_kl_block(student, need_grad, teacher, temperature, dim,
                      weights, forward_weight, reverse_weight, mask,
                      out=None):
    """:func:`softmax_kl`'s (value, gradient) in one pass; with ``out``,
    the gradient is written there."""
    per_row = isinstance(weights, Tensor)
    t2 = temperature**2
    scale = 1.0 / temperature
    zs = _scaled(student, scale)
    zt = _scaled(teacher, scale)
    if mask is not None:  # out of place: zs may be the input itself
        zs = zs.masked_fill(~mask, float('-inf'))
        zt = zt.masked_fill(~mask, float('-inf'))
    log_ps = F.log_softmax(zs, dim)
    log_pt = F.log_softmax(zt, dim)
    pt = log_pt.exp() if forward_weight else None
    diff = log_pt.sub_(log_ps)  # log p_t - log p_s (over log_pt)
    if mask is not None:  # -inf - -inf outside the distributions
        diff.masked_fill_(~mask, 0.)
    value, grad = 0., None
    if forward_weight and not reverse_weight:
        # KL(p_t || p_s) = sum p_t (log p_t - log p_s), over diff
        if per_row:
            value = diff.mul_(pt).sum(dim, keepdim=True).mul_(weights).sum()
            value = value * (forward_weight * t2)
        else:
            value = diff.mul_(pt).sum() * (forward_weight * t2 * weights)
        if need_grad:
            # d/ds = T a w (p_s - p_t): log-softmax backward of -T a w p_t
            # (p_t sums to 1), one fused op over p_t
            pt.mul_(-forward_weight * temperature *
                    (1.0 if per_row else weights))
            if per_row:
                pt.mul_(weights)
            if out is not None and out.is_contiguous():
                grad = torch.ops.aten._log_softmax_backward_data.out(
                    pt, log_ps, dim, log_ps.dtype, out=out)
            else:  # (the CPU .out kernel mis-writes a strided out)
                grad = torch.ops.aten._log_softmax_backward_data(
                    pt, log_ps, dim, log_ps.dtype)
                if out is not None:
                    grad = out.copy_(grad)
        return value, grad
    ps = log_ps.exp_() if (need_grad or reverse_weight) else None
    if forward_weight:
        if per_row:
            value = (pt * diff).sum(dim, keepdim=True).mul_(weights).sum()
            value = value * (forward_weight * t2)
        else:
            value = torch.vdot(pt.view(-1), diff.view(-1)) * (
                forward_weight * t2 * weights)
        if need_grad:  # d/ds: T a w (p_s - p_t), over p_t
            grad = torch.sub(ps, pt, out=pt).mul_(
                forward_weight * temperature *
                (1.0 if per_row else weights))
    if reverse_weight:
        # KL(p_s || p_t) = -sum p_s (log p_t - log p_s)
        reverse_rows = (ps * diff).sum(dim, keepdim=True).neg_()
        value = value + _reduce(reverse_rows, weights) * (
            reverse_weight * t2)
        if need_grad:  # d/ds: T b w p_s (log p_s - log p_t - KL)
            term = diff.add_(reverse_rows).mul_(ps).mul_(
                -reverse_weight * temperature *
                (1.0 if per_row else weights))
            grad = term if grad is None else grad.add_(term)
    if grad is not None and per_row:
        grad.mul_(weights)
    if grad is not None and out is not None:
        grad = out.copy_(grad)
    return value, grad


def dkd(student: Tensor, teacher: Tensor, labels: Tensor, alpha: float,
        beta: float, temperature: float, weights) -> Tensor:
    r"""Decoupled KD summed over rows: ``sum_r w_r T^2 (alpha TCKD_r + beta
    NCKD_r)`` with classes along dim 1.

    With :math:`z = x / T`, :math:`L = \log\sum_j e^{z_j}`,
    :math:`L' = \log\sum_{j \ne y} e^{z_j}`:
    :math:`b = (e^{z_y - L}, e^{L' - L})`, :math:`q_j = e^{z_j - L'}`
    (j != y), TCKD = KL(b_t || b_s), NCKD = KL(q_t || q_s)
    :math:`= \sum_{j \ne y} q_{t,j} (z_{t,j} - z_{s,j}) + L'_s - L'_t`,
    all from log-sum-exps (finite when p_y saturates). Gradient:
    :math:`T^{-1} \partial/\partial z_s = \alpha (p_s - b_{t0} e_y -
    b_{t1} q_s) + \beta (q_s - q_t)`.

    Args:
        labels (Tensor): int64 class indices, the logits' shape without
            dim 1, in [0, C).
        weights (Tensor | float): Row weights (see :func:`softmax_kl`).
    """
    return _fused(_dkd, student, teacher, labels, alpha, beta, temperature,
                  weights)


def _dkd(student, need_grad, teacher, labels, alpha, beta, temperature,
         weights):
    scale = 1.0 / temperature
    zs = student * scale
    zt = teacher * scale
    index = labels.unsqueeze(1)
    classes = torch.arange(student.size(1), device=student.device)
    target = index == classes.view(
        (1, -1) + (1, ) * (student.dim() - 2))
    zs_y = zs.gather(1, index)
    zt_y = zt.gather(1, index)
    zs_rest = zs.masked_fill(target, float('-inf'))
    zt_rest = zt.masked_fill(target, float('-inf'))
    lse_s_rest = zs_rest.logsumexp(1, keepdim=True)
    lse_t_rest = zt_rest.logsumexp(1, keepdim=True)
    lse_s = torch.logaddexp(lse_s_rest, zs_y)
    lse_t = torch.logaddexp(lse_t_rest, zt_y)
    log_bt = torch.cat([zt_y - lse_t, lse_t_rest - lse_t], 1)
    log_bs = torch.cat([zs_y - lse_s, lse_s_rest - lse_s], 1)
    bt = log_bt.exp()
    tckd = (bt * (log_bt - log_bs)).sum(1, keepdim=True)
    # q_t is 0 at the target (exp(-inf)), z_t - z_s finite there.
    qt = zt_rest.sub_(lse_t_rest).exp_()
    nckd = (qt * (zt - zs)).sum(1, keepdim=True)
    nckd += lse_s_rest - lse_t_rest
    rows = tckd.mul_(alpha).add_(nckd, alpha=beta)
    value = _reduce(rows, weights) * temperature**2
    grad = None
    if need_grad:
        ps = zs.sub_(lse_s).exp_()
        qs = zs_rest.sub_(lse_s_rest).exp_()
        grad = qs.mul_(beta - alpha * bt[:, 1:2]).add_(ps, alpha=alpha)
        grad.sub_(qt, alpha=beta)
        grad.scatter_add_(1, index, bt[:, 0:1] * -alpha)
        grad.mul_(weights).mul_(temperature)
    return value, grad


def _norm(x: Tensor, dim) -> Tensor:
    """Euclidean norm along ``dim`` (keepdim). torch's vector_norm is fast
    along the last dimension but slow along others (e.g. the classes of
    (N, C, H, W): ~50x slower than a sum of squares here)."""
    if isinstance(dim, int) and dim in (-1, x.dim() - 1):
        return torch.linalg.vector_norm(x, dim=dim, keepdim=True)
    return (x * x).sum(dim, keepdim=True).sqrt_()


def _pearson_parts(a: Tensor,
                   b: Tensor,
                   dim,
                   eps: float,
                   zero_grad_where_constant: bool = False,
                   centred: bool = False):
    """Centred a', b' (along ``dim``; given as is with ``centred``), rho
    and what :func:`_pearson_grad` needs.

    rho = a'.b' / (|a'| |b'| + eps), the official DIST form; with
    ``zero_grad_where_constant``: a'.b' / (|a'| |b'|) where |a'| |b'| >
    eps and 0 (zero gradient) elsewhere.
    """
    if not centred:
        a = a - a.mean(dim, keepdim=True)
        b = b - b.mean(dim, keepdim=True)
    norm_a, norm_b = _norm(a, dim), _norm(b, dim)
    product = norm_a * norm_b
    if zero_grad_where_constant:
        defined = product > eps
        denominator = product.masked_fill_(~defined, 1.)
    else:
        defined = None
        denominator = product.add_(eps)
    rho = (a * b).sum(dim, keepdim=True).div_(denominator)
    if defined is not None:
        rho.mul_(defined)
    return a, b, rho, norm_a, norm_b, denominator, defined


def _pearson_grad(a, b, rho, norm_a, norm_b, denominator,
                  defined) -> Tensor:
    """d rho / d a = (b' - rho |b'| a' / |a'|) / D; 0 * a' where |a'| = 0
    (a' = 0 there), as the official code's norm backward gives; 0 where
    ``defined`` is False."""
    coef = (rho * norm_b).div_(norm_a.clamp_min(torch.finfo(a.dtype).tiny))
    grad = torch.sub(b, a * coef).div_(denominator)
    return grad if defined is None else grad.mul_(defined)


def dist(student: Tensor,
         teacher: Tensor,
         beta: float,
         gamma: float,
         temperature: float,
         valid: Optional[Tensor] = None,
         eps: float = 1e-8,
         zero_grad_where_constant: bool = False) -> Tensor:
    r"""DIST with classes along dim 1 and rows along every other dim.

    .. math::
        L = T^2 \big(\beta (1 - \mathrm{mean}_r \rho(p_{s,r}, p_{t,r}))
          + \gamma (1 - \mathrm{mean}_c \rho(p_{s,:c}, p_{t,:c}))\big)

    with ``rho`` in the official form (:func:`pearson_correlation`) and
    ``p = softmax(z / T)``. Rows where ``valid`` is False are left out of
    both terms (of the row mean and of every column); with no valid row the
    loss is 0.

    Args:
        valid (Tensor, optional): Bool, the logits' shape without dim 1.
        zero_grad_where_constant (bool): See :func:`_pearson_parts`.
    """
    return _fused(_dist, student, teacher, beta, gamma, temperature, valid,
                  eps, zero_grad_where_constant)


def _dist(student, need_grad, teacher, beta, gamma, temperature, valid, eps,
          zero_grad_where_constant):
    scale = 1.0 / temperature
    ps = F.softmax(_scaled(student, scale), 1)
    pt = F.softmax(_scaled(teacher, scale), 1)
    rest = [d for d in range(student.dim()) if d != 1]
    if valid is None:
        weight = None
        row_weight = 1.0 / (ps.numel() // ps.size(1))
        any_valid = 1.0
    else:
        weight = valid.unsqueeze(1).to(ps.dtype)
        count = weight.sum().clamp_(min=1)
        row_weight = weight / count
        any_valid = weight.amax()
    # Inter-class: rows.
    inter = _pearson_parts(ps, pt, 1, eps, zero_grad_where_constant)
    inter_loss = any_valid - _reduce(inter[2], row_weight)
    # Intra-class: columns, over the kept rows only. Dropped rows get
    # deviation 0 (they then add nothing to either norm or the dot).
    if weight is None:
        intra = _pearson_parts(ps, pt, rest, eps,
                               zero_grad_where_constant)
    else:
        col_ps = (ps - (ps * weight).sum(rest, keepdim=True) / count)
        col_pt = (pt - (pt * weight).sum(rest, keepdim=True) / count)
        # Zero (weighted) mean already: the re-centring is a no-op.
        intra = _pearson_parts(col_ps.mul_(weight), col_pt.mul_(weight),
                               rest, eps, zero_grad_where_constant)
    num_classes = ps.size(1)
    intra_loss = (1 - intra[2].sum() / num_classes) * any_valid
    t2 = temperature**2
    value = t2 * (beta * inter_loss + gamma * intra_loss)
    grad = None
    if need_grad:
        # dL/dp_s, then through the softmax and the 1/T. (Dropped rows
        # get 0 from both terms: their deviations are 0.)
        grad_p = _pearson_grad(*inter).mul_(row_weight).mul_(-beta * t2)
        grad_p.add_(_pearson_grad(*intra),
                    alpha=-gamma * t2 / num_classes)
        dot = (grad_p * ps).sum(1, keepdim=True)
        grad = grad_p.sub_(dot).mul_(ps)
        if scale != 1.0:
            grad.mul_(scale)
    return value, grad


class _CorrelationMatching(torch.autograd.Function):
    """CMKD summed over rows with closed-form gradients: the Pearson term
    through the softmax, the Spearman term through the soft-rank kernel
    (whose backward pass runs in this Function's backward)."""

    @staticmethod
    def forward(ctx, student, teacher, temperature, rank_eps, weighting,
                pearson_weight, spearman_weight, weights, block_bytes,
                need_grad, eps, zero_grad_where_constant):
        num_classes = student.size(1)
        scale = 1.0 / temperature
        p_student = F.softmax(_scaled(student, scale), 1)
        log_p_teacher = F.log_softmax(_scaled(teacher, scale), 1)
        p_teacher = log_p_teacher.exp()
        x = _scaled(student, 1.0 / rank_eps)
        # Centred by their exact means: softmax rows 1/C, ranks (C+1)/2.
        ranks = soft_rank_forward(x, block_bytes, -(num_classes + 1) / 2)
        a = torch.stack([p_student - 1.0 / num_classes, ranks])
        b = torch.stack([p_teacher - 1.0 / num_classes,
                         centred_hard_rank(teacher)])
        # Both Pearson terms at once (official DIST form, eps added).
        parts = _pearson_parts(a, b, 2, eps, zero_grad_where_constant,
                               centred=True)
        rho = parts[2]
        # coefs[0|1]: each row's T^2 * weight * (Pearson | Spearman share).
        if weighting == 'entropy':
            share = (p_teacher * log_p_teacher).sum(1, keepdim=True).mul_(
                -1.0 / math.log(num_classes)).clamp_(0, 1)
            coefs = torch.stack([1 - share, share])
        else:
            coefs = rho.new_full((2, 1, 1), spearman_weight)
            coefs[0].fill_(pearson_weight)
        coefs = coefs * (weights * temperature**2)
        value = (coefs * (1 - rho)).sum()
        if need_grad:
            grad = _pearson_grad(*parts).mul_(coefs)
            grad_p, grad_ranks = grad.unbind(0)
            # -dL/ds through the softmax and the 1/T
            grad_p = grad_p.sub_((grad_p * p_student).sum(1, keepdim=True))
            ctx.save_for_backward(x, grad_ranks,
                                  grad_p.mul_(p_student).mul_(scale))
            ctx.options = (rank_eps, block_bytes)
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, grad_ranks, grad_p = ctx.saved_tensors
        rank_eps, block_bytes = ctx.options
        # saved: -dL/dr and -dL/ds (Pearson part)
        grad = soft_rank_backward(x, grad_ranks, block_bytes)
        grad = grad.mul_(-1.0 / rank_eps).sub_(grad_p).mul_(grad_out)
        return (grad, ) + (None, ) * 11


def correlation_matching(student: Tensor,
                         teacher: Tensor,
                         temperature: float,
                         rank_eps: float,
                         weighting: str,
                         pearson_weight: float,
                         spearman_weight: float,
                         weights,
                         block_bytes: int,
                         eps: float = 1e-8,
                         zero_grad_where_constant: bool = False) -> Tensor:
    r"""CMKD on (R, C) rows: ``sum_r w_r T^2 [c_P (1 - rho(p_s, p_t)) +
    c_S (1 - rho(softrank(s), rank(t)))]`` with ``c_S = h`` (teacher
    normalised entropy), ``c_P = 1 - h`` ('entropy') or the fixed weights,
    ``rho`` in the official DIST form. ``weights``: float or (R, 1)."""
    return _CorrelationMatching.apply(student, teacher,
                                      float(temperature), float(rank_eps),
                                      weighting, float(pearson_weight),
                                      float(spearman_weight), weights,
                                      int(block_bytes),
                                      _wants_grad(student), float(eps),
                                      bool(zero_grad_where_constant))
