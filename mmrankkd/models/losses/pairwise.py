"""Memory-bounded O(C^2) pairwise kernels for the ranking losses.

Kendall's tau (RKKD) and the sigmoid soft rank (CMKD's Spearman term) compare
every pair of classes of a row. Written naively, a (R, C, C) tensor is built
and autograd keeps several of them: 256 x 1000 logits give ~1 GB per tensor.

The kernels here are ``torch.autograd.Function`` s that walk the pairs in
blocks of at most ``max_elements`` pair elements (whole rows when they fit,
otherwise slices of one row), reduce each block immediately, save only the
(R, C) inputs, and recompute the pairwise terms in backward with the
closed-form derivative of the surrogate. Peak extra memory is then about
2 blocks plus a few (R, C) tensors, whatever C is.

``naive_*`` functions are plain-autograd references over the full pairwise
tensor; tests and ``tools/benchmark_losses.py`` compare against them.
"""
import math
from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

SURROGATES = ('tanh', 'sigmoid', 'erf')
#: Smallest block (pair elements, 256 KB in fp32): below it, Python loop
#: overhead would cost more than the memory saved.
MIN_BLOCK_ELEMENTS = 1 << 16


def default_max_elements(num_rows: int, num_classes: int) -> int:
    """Pair elements per block: 4x the (R, C) rows, at least 64K.

    Forward and backward each keep about two blocks alive at once, so the
    pairwise work adds about 8x the logits' size (plus the fixed 64K floor).
    """
    return max(4 * num_rows * num_classes, MIN_BLOCK_ELEMENTS)


def _blocks(num_rows: int, num_first: int, num_all: int,
            max_elements: int) -> Iterator[Tuple[slice, slice]]:
    """(row slice, first-member slice) blocks of at most ``max_elements``
    pair elements (a block holds rows x first members x ``num_all``)."""
    per_row = num_first * num_all
    if per_row <= max_elements:
        step = max(1, max_elements // per_row)
        for start in range(0, num_rows, step):
            yield slice(start, start + step), slice(None)
    else:
        step = max(1, max_elements // num_all)
        for row in range(num_rows):
            for start in range(0, num_first, step):
                yield slice(row, row + 1), slice(start, start + step)


def surrogate_sign(x: Tensor, surrogate: str) -> Tensor:
    """Smooth sign: tanh(x), 2*sigmoid(x) - 1 or erf(x)."""
    if surrogate == 'tanh':
        return torch.tanh(x)
    if surrogate == 'sigmoid':
        return 2 * torch.sigmoid(x) - 1
    if surrogate == 'erf':
        return torch.erf(x)
    raise ValueError(f'surrogate must be one of {SURROGATES}, got '
                     f'{surrogate!r}.')


def _surrogate_sign_(x: Tensor, surrogate: str) -> Tensor:
    """In-place :func:`surrogate_sign` (overwrites ``x``)."""
    if surrogate == 'tanh':
        return x.tanh_()
    if surrogate == 'sigmoid':
        return x.sigmoid_().mul_(2).sub_(1)
    return x.erf_()


def _surrogate_sign_grad_(x: Tensor, surrogate: str) -> Tensor:
    """In-place derivative of :func:`surrogate_sign` (overwrites ``x``, no
    temporaries): 1/cosh^2(x), 1/(2 cosh^2(x/2)) or 2/sqrt(pi) exp(-x^2).
    cosh overflows to inf for large |x|, giving the exact limit 0."""
    if surrogate == 'tanh':
        return x.cosh_().square_().reciprocal_()
    if surrogate == 'sigmoid':
        return x.mul_(0.5).cosh_().square_().reciprocal_().mul_(0.5)
    return x.square_().neg_().exp_().mul_(2 / math.sqrt(math.pi))


def _teacher_sign(t_first: Tensor, t_all: Tensor, surrogate: str,
                  steepness: float, smooth_teacher: bool) -> Tensor:
    diff = t_first.unsqueeze(2) - t_all.unsqueeze(1)
    if smooth_teacher:
        return _surrogate_sign_(diff.mul_(steepness), surrogate)
    return diff.sign_()


class _PairwiseSignAgreement(torch.autograd.Function):
    """sum_{i, j} g(k (a_i - b_j)) * sgn(c_i - d_j) per row, blockwise."""

    @staticmethod
    def forward(ctx, s_first, s_all, t_first, t_all, surrogate, steepness,
                smooth_teacher, max_elements):
        ctx.save_for_backward(s_first, s_all, t_first, t_all)
        ctx.options = (surrogate, steepness, smooth_teacher, max_elements)
        out = s_first.new_zeros(s_first.size(0))
        for rows, firsts in _blocks(s_first.size(0), s_first.size(1),
                                    s_all.size(1), max_elements):
            diff = s_first[rows, firsts].unsqueeze(2) - \
                s_all[rows].unsqueeze(1)
            agree = _surrogate_sign_(diff.mul_(steepness), surrogate)
            agree.mul_(
                _teacher_sign(t_first[rows, firsts], t_all[rows], surrogate,
                              steepness, smooth_teacher))
            out[rows] += agree.sum((1, 2))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        s_first, s_all, t_first, t_all = ctx.saved_tensors
        surrogate, steepness, smooth_teacher, max_elements = ctx.options
        grad_first = torch.zeros_like(s_first)
        grad_all = torch.zeros_like(s_all)
        for rows, firsts in _blocks(s_first.size(0), s_first.size(1),
                                    s_all.size(1), max_elements):
            diff = s_first[rows, firsts].unsqueeze(2) - \
                s_all[rows].unsqueeze(1)
            pair_grad = _surrogate_sign_grad_(diff.mul_(steepness), surrogate)
            pair_grad.mul_(
                _teacher_sign(t_first[rows, firsts], t_all[rows], surrogate,
                              steepness, smooth_teacher))
            pair_grad.mul_((grad_out[rows] * steepness).view(-1, 1, 1))
            grad_first[rows, firsts] += pair_grad.sum(2)
            grad_all[rows] -= pair_grad.sum(1)
        return grad_first, grad_all, None, None, None, None, None, None


def pairwise_sign_agreement(s_first: Tensor,
                            s_all: Tensor,
                            t_first: Tensor,
                            t_all: Tensor,
                            surrogate: str = 'tanh',
                            steepness: float = 1.0,
                            smooth_teacher: bool = False,
                            max_elements: Optional[int] = None) -> Tensor:
    r"""Per-row smooth sign agreement of student and teacher pair orders.

    .. math::
        A_r = \sum_{i \in F} \sum_{j} g(k (s_i - s_j)) \, \mathrm{sgn}(t_i - t_j)

    where the first members ``i`` are the columns of ``s_first``/``t_first``
    (all classes, or the teacher's top-k) and ``j`` runs over all classes.
    ``g`` is the surrogate sign; with ``smooth_teacher`` the teacher factor is
    ``g(k (t_i - t_j))`` too. Pairs with i == j give 0. Memory-bounded:
    see the module docstring. The teacher tensors get no gradient.

    Args:
        s_first (Tensor): (R, K) student logits of the first members.
        s_all (Tensor): (R, C) student logits.
        t_first (Tensor): (R, K) teacher logits of the first members.
        t_all (Tensor): (R, C) teacher logits.
        surrogate (str): 'tanh', 'sigmoid' (2*sigmoid(x)-1) or 'erf'.
        steepness (float): k.
        smooth_teacher (bool): Apply the surrogate to the teacher too.
        max_elements (int, optional): Pair elements per block. Defaults to
            :func:`default_max_elements`.

    Returns:
        Tensor: (R,) sums.
    """
    if surrogate not in SURROGATES:
        raise ValueError(f'surrogate must be one of {SURROGATES}, got '
                         f'{surrogate!r}.')
    if max_elements is None:
        max_elements = default_max_elements(*s_all.shape)
    return _PairwiseSignAgreement.apply(s_first, s_all, t_first.detach(),
                                        t_all.detach(), surrogate,
                                        float(steepness), bool(smooth_teacher),
                                        int(max_elements))


def naive_pairwise_sign_agreement(s_first: Tensor,
                                  s_all: Tensor,
                                  t_first: Tensor,
                                  t_all: Tensor,
                                  surrogate: str = 'tanh',
                                  steepness: float = 1.0,
                                  smooth_teacher: bool = False) -> Tensor:
    """Reference for :func:`pairwise_sign_agreement`: plain autograd over the
    full (R, K, C) pairwise tensor."""
    student_pairs = surrogate_sign(
        steepness * (s_first.unsqueeze(2) - s_all.unsqueeze(1)), surrogate)
    teacher_diff = (t_first.unsqueeze(2) - t_all.unsqueeze(1)).detach()
    if smooth_teacher:
        teacher_pairs = surrogate_sign(steepness * teacher_diff, surrogate)
    else:
        teacher_pairs = teacher_diff.sign()
    return (student_pairs * teacher_pairs).sum((1, 2))


class _SoftRank(torch.autograd.Function):
    """r_i = 1/2 + sum_j sigmoid((x_i - x_j) / eps) per row, blockwise."""

    @staticmethod
    def forward(ctx, x, eps, max_elements):
        ctx.save_for_backward(x)
        ctx.options = (eps, max_elements)
        ranks = torch.full_like(x, 0.5)
        for rows, firsts in _blocks(x.size(0), x.size(1), x.size(1),
                                    max_elements):
            diff = x[rows, firsts].unsqueeze(2) - x[rows].unsqueeze(1)
            ranks[rows, firsts] += diff.div_(eps).sigmoid_().sum(2)
        return ranks

    @staticmethod
    def backward(ctx, grad_ranks):
        # dr_i/dx_m = (delta_im sum_j D_ij - D_im) / eps with
        # D_ij = sigmoid'((x_i - x_j) / eps), so
        # dL/dx_m = (G_m sum_j D_mj - sum_i G_i D_im) / eps.
        x, = ctx.saved_tensors
        eps, max_elements = ctx.options
        grad_x = torch.zeros_like(x)
        for rows, firsts in _blocks(x.size(0), x.size(1), x.size(1),
                                    max_elements):
            diff = x[rows, firsts].unsqueeze(2) - x[rows].unsqueeze(1)
            # sigmoid'(x) = 1 / (4 cosh^2(x / 2)), in place.
            slope = diff.div_(2 * eps).cosh_().square_().reciprocal_().mul_(
                0.25)
            grad_block = grad_ranks[rows, firsts]
            grad_x[rows, firsts] += grad_block * slope.sum(2)
            grad_x[rows] -= torch.bmm(grad_block.unsqueeze(1),
                                      slope).squeeze(1)
        return grad_x / eps, None, None


def soft_rank(x: Tensor,
              eps: float = 1.0,
              max_elements: Optional[int] = None) -> Tensor:
    r"""Differentiable ascending ranks of each row (1 = smallest).

    .. math:: r_i = 1 + \sum_{j \ne i} \sigma((x_i - x_j) / \epsilon)

    Tends to the hard rank as ``eps`` -> 0 (ties get the average rank).
    Memory-bounded: see the module docstring.

    Args:
        x (Tensor): (R, C) scores.
        eps (float): Sigmoid temperature.
        max_elements (int, optional): Pair elements per block. Defaults to
            :func:`default_max_elements`.

    Returns:
        Tensor: (R, C) soft ranks.
    """
    if max_elements is None:
        max_elements = default_max_elements(*x.shape)
    return _SoftRank.apply(x, float(eps), int(max_elements))


def naive_soft_rank(x: Tensor, eps: float = 1.0) -> Tensor:
    """Reference for :func:`soft_rank`: plain autograd over (R, C, C)."""
    return 0.5 + torch.sigmoid(
        (x.unsqueeze(2) - x.unsqueeze(1)) / eps).sum(2)


def hard_rank(x: Tensor) -> Tensor:
    """Ascending ranks of each row (1 = smallest), ties averaged as in
    scipy.stats.rankdata; O(C log C), no gradient."""
    x = x.detach()
    sorted_x = x.sort(dim=1).values.contiguous()
    x = x.contiguous()
    below = torch.searchsorted(
        sorted_x, x, side='left', out_int32=True)
    at_or_below = torch.searchsorted(
        sorted_x, x, side='right', out_int32=True)
    return (below + at_or_below + 1).to(x.dtype) / 2
