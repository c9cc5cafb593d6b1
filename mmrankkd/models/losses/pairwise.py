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


def default_max_elements(num_rows: int, num_classes: int) -> int:
    """Pair elements per block: 2x the (R, C) rows.

    Forward and backward each keep about two blocks alive at once, so the
    pairwise work adds about 4x the logits' size; with the few (R, C)
    tensors around it one forward + backward stays within ~12x. A block is
    never smaller than one slice of C pairs (see :func:`_blocks`).
    """
    return 2 * num_rows * num_classes


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
    """In-place :func:`surrogate_sign` (overwrites ``x``). For 'sigmoid'
    this leaves sigmoid(x), not 2*sigmoid(x) - 1: callers fold the affine
    map into their reductions (see :func:`_agreement_block`)."""
    if surrogate == 'tanh':
        return x.tanh_()
    if surrogate == 'sigmoid':
        return x.sigmoid_()
    return x.erf_()


def _teacher_sign(t_first: Tensor, t_all: Tensor, steepness: float,
                  surrogate: str, smooth_teacher: bool) -> Tensor:
    """sgn(t_i - t_j) (or g(k (t_i - t_j))) of one block."""
    diff = t_first.unsqueeze(2) - t_all.unsqueeze(1)
    if smooth_teacher:
        return surrogate_sign(diff.mul_(steepness), surrogate)
    return diff.sign_()


def _row_dot(a: Tensor, b: Tensor) -> Tensor:
    """sum over all but the first dim of a * b, without an a * b tensor."""
    rows = a.size(0)
    return torch.bmm(a.reshape(rows, 1, -1), b.reshape(rows, -1,
                                                       1)).view(rows)


class _PairwiseSignAgreement(torch.autograd.Function):
    """sum_{i in F, j} g(a_i - a_j) * w_ij per row, blockwise, where a is the
    student pre-scaled by k and w the teacher factor.

    Every block costs a few passes over its memory: forward builds the
    differences, applies g in place, builds w, and reduces g * w with a
    batched dot product; backward rebuilds the differences and w and writes
    g'(x) * w over the differences in one fused pass (tanh_backward /
    sigmoid_backward).
    """

    @staticmethod
    def forward(ctx, student, teacher, first, surrogate, steepness,
                smooth_teacher, max_elements):
        ctx.save_for_backward(student, teacher, first)
        ctx.options = (surrogate, steepness, smooth_teacher, max_elements)
        student_first, teacher_first = _first_members(student, teacher, first)
        out = student.new_zeros(student.size(0))
        for rows, firsts in _blocks(student.size(0), student_first.size(1),
                                    student.size(1), max_elements):
            diff = student_first[rows, firsts].unsqueeze(2) - \
                student[rows].unsqueeze(1)
            student_sign = _surrogate_sign_(diff, surrogate)
            teacher_sign = _teacher_sign(teacher_first[rows, firsts],
                                         teacher[rows], steepness, surrogate,
                                         smooth_teacher)
            block = _row_dot(student_sign, teacher_sign)
            if surrogate == 'sigmoid':  # sum (2 sigmoid - 1) * w
                block = 2 * block - teacher_sign.sum((1, 2))
            out[rows] += block
        return out

    @staticmethod
    def backward(ctx, grad_out):
        student, teacher, first = ctx.saved_tensors
        surrogate, steepness, smooth_teacher, max_elements = ctx.options
        student_first, teacher_first = _first_members(student, teacher, first)
        grad = torch.zeros_like(student)
        # Without top-k the first members are the student itself: one buffer.
        grad_first = grad if first is None else torch.zeros_like(
            student_first)
        for rows, firsts in _blocks(student.size(0), student_first.size(1),
                                    student.size(1), max_elements):
            diff = student_first[rows, firsts].unsqueeze(2) - \
                student[rows].unsqueeze(1)
            teacher_sign = _teacher_sign(teacher_first[rows, firsts],
                                         teacher[rows], steepness, surrogate,
                                         smooth_teacher)
            # pair_grad = g'(diff) * w, written over diff.
            if surrogate == 'tanh':
                value = diff.tanh_()
                pair_grad = torch.ops.aten.tanh_backward.grad_input(
                    teacher_sign, value, grad_input=value)
            elif surrogate == 'sigmoid':
                value = diff.sigmoid_()
                pair_grad = torch.ops.aten.sigmoid_backward.grad_input(
                    teacher_sign, value, grad_input=value).mul_(2)
            else:
                pair_grad = diff.square_().neg_().exp_().mul_(
                    2 / math.sqrt(math.pi)).mul_(teacher_sign)
            grad_first[rows, firsts] += pair_grad.sum(2)
            grad[rows] -= pair_grad.sum(1)
        if first is not None:
            grad.scatter_add_(1, first, grad_first)
        return grad.mul_(grad_out.unsqueeze(1)), None, None, None, None, \
            None, None


def _first_members(student: Tensor, teacher: Tensor,
                   first: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    if first is None:
        return student, teacher
    return student.gather(1, first), teacher.gather(1, first)


def pairwise_sign_agreement(student: Tensor,
                            teacher: Tensor,
                            first: Optional[Tensor] = None,
                            surrogate: str = 'tanh',
                            steepness: float = 1.0,
                            smooth_teacher: bool = False,
                            max_elements: Optional[int] = None) -> Tensor:
    r"""Per-row smooth sign agreement of student and teacher pair orders.

    .. math::
        A_r = \sum_{i \in F} \sum_{j} g(k (s_i - s_j)) \, \mathrm{sgn}(t_i - t_j)

    where the first members ``F`` are the columns listed in ``first`` (e.g.
    the teacher's top-k) or all classes, and ``j`` runs over all classes.
    ``g`` is the surrogate sign; with ``smooth_teacher`` the teacher factor is
    ``g(k (t_i - t_j))`` too. Pairs with i == j give 0. Memory-bounded:
    see the module docstring. The teacher gets no gradient.

    Args:
        student (Tensor): (R, C) student logits.
        teacher (Tensor): (R, C) teacher logits.
        first (Tensor, optional): (R, K) int64 column indices of the first
            members. Defaults to None (all C columns).
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
        max_elements = default_max_elements(*student.shape)
    # g(k (s_i - s_j)) = g(k s_i - k s_j): scale the (R, C) student once
    # instead of every pairwise block; autograd carries the k.
    return _PairwiseSignAgreement.apply(steepness * student,
                                        teacher.detach(), first, surrogate,
                                        float(steepness),
                                        bool(smooth_teacher),
                                        int(max_elements))


def naive_pairwise_sign_agreement(student: Tensor,
                                  teacher: Tensor,
                                  first: Optional[Tensor] = None,
                                  surrogate: str = 'tanh',
                                  steepness: float = 1.0,
                                  smooth_teacher: bool = False) -> Tensor:
    """Reference for :func:`pairwise_sign_agreement`: plain autograd over the
    full (R, K, C) pairwise tensor."""
    teacher = teacher.detach()
    student_first, teacher_first = _first_members(student, teacher, first)
    student_pairs = surrogate_sign(
        steepness * (student_first.unsqueeze(2) - student.unsqueeze(1)),
        surrogate)
    teacher_diff = teacher_first.unsqueeze(2) - teacher.unsqueeze(1)
    if smooth_teacher:
        teacher_pairs = surrogate_sign(steepness * teacher_diff, surrogate)
    else:
        teacher_pairs = teacher_diff.sign()
    return (student_pairs * teacher_pairs).sum((1, 2))


class _SoftRank(torch.autograd.Function):
    """r_i = 1/2 + sum_j sigmoid(x_i - x_j) per row, blockwise (x already
    divided by eps)."""

    @staticmethod
    def forward(ctx, x, max_elements):
        ctx.save_for_backward(x)
        ctx.max_elements = max_elements
        ranks = torch.full_like(x, 0.5)
        for rows, firsts in _blocks(x.size(0), x.size(1), x.size(1),
                                    max_elements):
            diff = x[rows, firsts].unsqueeze(2) - x[rows].unsqueeze(1)
            ranks[rows, firsts] += diff.sigmoid_().sum(2)
        return ranks

    @staticmethod
    def backward(ctx, grad_ranks):
        # dr_i/dx_m = delta_im sum_j D_ij - D_im, D_ij = sigmoid'(x_i - x_j).
        # With E_ij = G_i D_ij (one fused sigmoid_backward pass):
        # dL/dx_m = sum_j E_mj - sum_i E_im.
        x, = ctx.saved_tensors
        grad_x = torch.zeros_like(x)
        for rows, firsts in _blocks(x.size(0), x.size(1), x.size(1),
                                    ctx.max_elements):
            diff = x[rows, firsts].unsqueeze(2) - x[rows].unsqueeze(1)
            value = diff.sigmoid_()
            weighted = torch.ops.aten.sigmoid_backward.grad_input(
                grad_ranks[rows, firsts].unsqueeze(2).expand_as(value),
                value,
                grad_input=value)
            grad_x[rows, firsts] += weighted.sum(2)
            grad_x[rows] -= weighted.sum(1)
        return grad_x, None


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
    return _SoftRank.apply(x / eps, int(max_elements))


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
