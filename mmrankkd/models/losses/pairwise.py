"""Memory-bounded O(C^2) pairwise kernels for the ranking losses.

Kendall's tau (RKKD) and the sigmoid soft rank (CMKD's Spearman term) compare
every pair of classes of a row. Written naively, a (R, C, C) tensor is built
and autograd keeps several of them: 256 x 1000 logits give ~1 GB per tensor.

The kernels here are ``torch.autograd.Function`` s that

* use that both factors of every pair term are odd (g(-x) = -g(x)): only
  the pairs i < j are computed, in "tiles" (first members [a, b), second
  members [a, C)), so about half the pairs instead of all;
* walk those tiles in blocks whose temporaries fit a byte budget
  (``block_bytes``, default 256 MiB, whatever the batch size), with as few
  blocks as the budget allows: the cost of a block is a fixed number of
  operator launches (about 15), so one forward + backward of a loss stays
  around 100-130 top-level operators instead of growing with the batch;
* reuse one to three preallocated block buffers (fresh CPU allocations of
  this size would page-fault on every block) and reduce every block at
  once;
* lay the blocks out (rows, first, second) for few rows of many classes and
  (first, second, rows) on the class-major copy for many rows of few
  classes (dense logits), so the innermost dimension is long
  (:class:`_Layout`);
* Kendall: sort each row by the teacher once, so that sgn(t_i - t_j) for
  i < j is the 0/1 mask [t_i > t_j] (0 only for teacher ties), and compute
  the gradient in the same pass as the value (it only depends on the
  per-row upstream gradient), so backward is one multiplication. tanh is
  evaluated as 2 sigmoid(2x) - 1 (sigmoid is several times cheaper on CPU).
* soft rank: forward and backward each make one pass over the pairs.

Peak extra memory is the block budget (or, when the whole problem is
smaller, the pairs themselves) plus about a dozen (R, C) tensors.

``naive_*`` functions are plain-autograd references over the full pairwise
tensor; tests and ``tools/benchmark_losses.py`` compare against them.
"""
import functools
import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

SURROGATES = ('tanh', 'sigmoid', 'erf')
#: Default byte budget of the pairwise temporaries of one kernel call.
DEFAULT_BLOCK_BYTES = 256 * 2**20
#: (R, C) tensors (in units of the logits' size) a kernel call keeps besides
#: its blocks; reserved from the budget so the whole call stays within it.
_RESERVED_ROWS = 12
#: Preferred most blocks per pass (more only when the budget requires it):
#: a block costs about 15 operator launches.
_KENDALL_BLOCKS = 5
_SOFT_RANK_BLOCKS = 2
#: Cost of one block's fixed overhead, in pair elements (plan tuning).
_BLOCK_COST = {'cuda': 4e6}
_DEFAULT_BLOCK_COST = 2e4

Block = Tuple[int, int, int, int]


def _tiles(num_first: int, num_cols: int, num_tiles: int) -> List[int]:
    """Tile bounds 0 = a_0 < ... < a_T = num_first minimising the largest
    tile work (b - a) * (num_cols - a) (the pairs of first members [a, b)
    with second members [a, num_cols))."""

    def greedy(limit):
        bounds = [0]
        while bounds[-1] < num_first:
            a = bounds[-1]
            bounds.append(min(num_first, a + max(1, limit // (num_cols - a))))
        return bounds

    low, high = num_cols, num_first * num_cols
    while low < high:  # smallest limit that needs at most num_tiles tiles
        mid = (low + high) // 2
        if len(greedy(mid)) - 1 <= num_tiles:
            high = mid
        else:
            low = mid + 1
    return greedy(low)


@functools.lru_cache(maxsize=256)
def plan_blocks(num_rows: int,
                num_first: int,
                num_cols: int,
                pair_bytes: int,
                block_bytes: int,
                logits_bytes: int,
                device_type: str,
                max_blocks: int = 5) -> Tuple[Block, ...]:
    """Blocks ``(row_start, row_stop, a, b)``: rows [row_start, row_stop),
    first members [a, b), second members [a, num_cols); they cover every
    pair i < j (i < num_first) once, in tile-major, row-minor order.

    The pairs of one block take at most ``block_bytes`` minus room for
    ``_RESERVED_ROWS`` (R, C) tensors (never less than 4 logits' worth, and
    never less than one row's slice). Among tilings of at most
    ``max_blocks`` blocks that fit, the one with the least work plus
    per-block overhead wins; if none fits, the one with the fewest blocks.
    """
    budget = max(block_bytes - _RESERVED_ROWS * logits_bytes,
                 4 * logits_bytes)
    max_pairs = max(budget // pair_bytes, num_cols)
    block_cost = _BLOCK_COST.get(device_type, _DEFAULT_BLOCK_COST)
    candidates = []
    for num_tiles in range(1, min(num_first, 32) + 1):
        bounds = _tiles(num_first, num_cols, num_tiles)
        works = [(b - a) * (num_cols - a) for a, b in zip(bounds, bounds[1:])]
        rows = max_pairs // max(works)
        if rows == 0:
            continue
        row_blocks = -(-num_rows // rows)
        step = -(-num_rows // row_blocks)
        blocks = tuple((r, min(r + step, num_rows), a, b)
                       for a, b in zip(bounds, bounds[1:])
                       for r in range(0, num_rows, step))
        cost = num_rows * sum(works) + block_cost * len(blocks)
        too_many = len(blocks) > max_blocks
        candidates.append((too_many, len(blocks) if too_many else 0, cost,
                           blocks))
        if len(blocks) > 4 * max_blocks:
            break
    if candidates:
        return min(candidates, key=lambda c: c[:3])[3]
    # Even one row of the smallest tile exceeds the budget (huge C):
    # single-row blocks of tiles of at most max_pairs pairs.
    bounds = [0]
    while bounds[-1] < num_first:
        a = bounds[-1]
        bounds.append(min(num_first, a + max(1, max_pairs // (num_cols - a))))
    return tuple((r, r + 1, a, b) for a, b in zip(bounds, bounds[1:])
                 for r in range(num_rows))


def _narrow(x: Tensor, dim: int, start: int, stop: int) -> Tensor:
    if start == 0 and stop == x.size(dim):
        return x
    return x.narrow(dim, start, stop - start)


def _buffer(storage: Tensor, shape) -> Tensor:
    """A view of ``shape`` on the preallocated ``storage`` (no copy)."""
    return storage.resize_(shape)


class _Layout:
    """Where rows, first members and second members of a pair block live.

    Rows first, blocks (rows, first, second): for few rows of many classes
    (ImageNet). Rows last, blocks (first, second, rows) on the class-major
    (C, R) copy of the rows: for many rows of few classes (every pixel of
    Cityscapes logits is a row of 19), so that the innermost, contiguous
    dimension is long instead of 19 wide. 2-D per-block results are (rows,
    members) or (members, rows) accordingly.
    """

    #: None: choose per call (:meth:`choose`); True/False: force (tests).
    force = None

    def __init__(self, rows_last: bool):
        self.rows_last = rows_last
        if rows_last:
            self.first, self.second, self.row = 0, 1, 2
            self.member_axis, self.row_axis = 0, 1
        else:
            self.row, self.first, self.second = 0, 1, 2
            self.row_axis, self.member_axis = 0, 1

    @classmethod
    def choose(cls, num_rows: int, num_cols: int) -> '_Layout':
        if cls.force is not None:
            return cls(cls.force)
        return cls(num_rows >= 4 * num_cols and num_rows >= 256)

    def prepare(self, x: Tensor) -> Tensor:
        """(R, C) rows -> the layout's 2-D base ((C, R) when rows last)."""
        return x.t().contiguous() if self.rows_last else x

    def finish(self, x: Tensor) -> Tensor:
        """A 2-D result back to (R, ...)."""
        return x.t() if self.rows_last else x

    def first_members(self, x: Tensor, blocks) -> dict:
        """Per tile (a, b), the prepared ``x``'s first members [a, b) as a
        broadcastable block operand."""
        base = x.unsqueeze(1) if self.rows_last else x.unsqueeze(2)
        return _tile_views(base, blocks, self.first)

    def second_members(self, x: Tensor) -> Tensor:
        return x.unsqueeze(0) if self.rows_last else x.unsqueeze(1)

    def shape(self, block: Block, num_cols: int) -> tuple:
        r0, r1, a, b = block
        if self.rows_last:
            return (b - a, num_cols - a, r1 - r0)
        return (r1 - r0, b - a, num_cols - a)

    def rows(self, x: Tensor, block: Block) -> Tensor:
        return _narrow(x, self.row, block[0], block[1])

    def seconds(self, x: Tensor, block: Block, num_cols: int) -> Tensor:
        """Rows of ``block`` and its second members [a, C)."""
        return _narrow(self.rows(x, block), self.second, block[2], num_cols)

    def over_seconds(self, p: Tensor, weights: Optional[Tensor] = None):
        """sum_j (c_j) p_ij: 2-D (rows, first members) result."""
        if weights is None:
            return p.sum(self.second)
        return torch.matmul(weights, p) if self.rows_last else \
            torch.matmul(p, weights)

    def over_firsts(self, p: Tensor) -> Tensor:
        """sum_i p_ij: 2-D (rows, second members) result."""
        return p.sum(self.first)

    def over_both(self, p: Tensor, weights: Optional[Tensor] = None):
        """sum_ij (c_j) p_ij per row: (rows,)."""
        if weights is None:
            return p.sum((self.first, self.second))
        return torch.matmul(weights, p.sum(0)) if self.rows_last else \
            torch.matmul(p.sum(1), weights)

    def join(self, blocks, parts: List[Tensor]) -> Tensor:
        """Per-block 2-D (rows, first members) results -> (R, K) in the
        layout's orientation."""
        tiles, current, key = [], [], None
        for block, part in zip(blocks, parts):
            if block[2:] != key and current:
                tiles.append(_cat(current, self.row_axis))
                current = []
            key = block[2:]
            current.append(part)
        tiles.append(_cat(current, self.row_axis))
        return _cat(tiles, self.member_axis)

    def column_sums(self, blocks, parts, num_rows: int, num_cols: int,
                    like: Tensor):
        """Sum per-block 2-D (rows, second members [a, C)) results into
        (start, total), ``total`` the sums of the second members
        [start, C) (the first part itself when it spans all rows and the
        widest range, else zeros), in the layout's orientation."""
        start = min(block[2] for block in blocks)
        if blocks[0][2] == start and blocks[0][1] - blocks[0][0] == num_rows:
            total, rest = parts[0], zip(blocks[1:], parts[1:])
        else:
            shape = [0, 0]
            shape[self.row_axis] = num_rows
            shape[self.member_axis] = num_cols - start
            total = like.new_zeros(shape)
            rest = zip(blocks, parts)
        for (r0, r1, a, _), part in rest:
            _narrow(_narrow(total, self.row_axis, r0, r1), self.member_axis,
                    a - start, num_cols - start).add_(part)
        return start, total


def _cat(parts: List[Tensor], dim: int) -> Tensor:
    return torch.cat(parts, dim) if len(parts) > 1 else parts[0]


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
    """In-place :func:`surrogate_sign`."""
    if surrogate == 'tanh':
        return x.tanh_()
    if surrogate == 'sigmoid':
        return x.sigmoid_().mul_(2).sub_(1)
    return x.erf_()


class _PairwiseSignAgreement(torch.autograd.Function):
    """A_r = sum_{i < K} sum_{j != i} g(k (s_i - s_j)) w(t_i, t_j) per row,
    on rows sorted by the teacher (first members: the teacher's top K).

    In sorted order (descending teacher), for i < j the teacher factor is
    w_ij = [t_i > t_j] (hard sign) or g(k max(t_i - t_j, 0)) (smooth), and
    both factors are odd, so

        A = sum_{i < K, j > i} c_j g(u_ij) w_ij,  c_j = 2 (j < K), 1 (j >= K)

    (pairs inside the top K appear twice in A, once in the sum). With
    g(u) = 2 sigmoid(u) - 1 (tanh: u = 2 k (s_i - s_j); sigmoid: u = k (...))
    and a 0/1 w, A = 2 sum c w sigmoid(u) - sum c w, and the gradient's
    pair terms are w sigmoid (1 - sigmoid) = v - v^2 with v = w sigmoid(u),
    one in-place pass. 'erf' and the smooth teacher take a general path;
    'sign' (hard student sign, no gradient) serves the agreement metric.
    """

    @staticmethod
    def forward(ctx, student, teacher, num_first, surrogate, steepness,
                smooth_teacher, block_bytes, need_grad):
        num_rows, num_cols = student.shape
        teacher_sorted, order = teacher.sort(dim=1, descending=True,
                                             stable=True)
        sigmoid_family = surrogate in ('tanh', 'sigmoid')
        scale = 2 * steepness if surrogate == 'tanh' else steepness
        if surrogate == 'sign':
            scale = 1.0
        x = student.gather(1, order)
        if scale != 1.0:
            x = x.mul_(scale)
        fast = sigmoid_family and not smooth_teacher
        buffers = 2 if (fast or surrogate == 'sign') else 3
        elem = student.element_size()
        blocks = plan_blocks(num_rows, num_first, num_cols, buffers * elem,
                             int(block_bytes), num_rows * num_cols * elem,
                             student.device.type, _KENDALL_BLOCKS)
        layout = _Layout.choose(num_rows, num_cols)
        topk = num_first < num_cols
        weights = None
        if topk:  # c_j: 2 inside the top K, 1 outside
            weights = torch.ones(num_cols, dtype=x.dtype, device=x.device)
            weights[:num_first] = 2
        x = layout.prepare(x)
        t = layout.prepare(teacher_sorted)
        x_first = layout.first_members(x, blocks)
        t_first = layout.first_members(t, blocks)
        x_second = layout.second_members(x)
        t_second = layout.second_members(t)
        largest = max((r1 - r0) * (b - a) * (num_cols - a)
                      for r0, r1, a, b in blocks)
        storage = [x.new_empty(largest) for _ in range(buffers)]
        values, mask_sums, row_parts, col_parts = [], [], [], []
        for block in blocks:
            a, b = block[2:]
            shape = layout.shape(block, num_cols)
            c = None if weights is None else _narrow(weights, 0, a, num_cols)
            u = _buffer(storage[0], shape)
            torch.sub(layout.rows(x_first[a, b], block),
                      layout.seconds(x_second, block, num_cols), out=u)
            w = _buffer(storage[1], shape)
            t_i = layout.rows(t_first[a, b], block)
            t_j = layout.seconds(t_second, block, num_cols)
            if smooth_teacher:
                torch.sub(t_i, t_j, out=w)
                _surrogate_sign_(w.clamp_min_(0).mul_(steepness), surrogate)
            else:
                torch.gt(t_i, t_j, out=w)
            if fast:
                v = u.sigmoid_().mul_(w)
                values.append(layout.over_both(v, c))
                if need_grad:
                    p = v.addcmul_(v, v, value=-1)
                    row_parts.append(layout.over_seconds(p, c))
                    col_parts.append(layout.over_firsts(p))
            elif surrogate == 'sign':
                values.append(layout.over_both(u.sign_().mul_(w), c))
            elif sigmoid_family:  # smooth teacher
                mask_sums.append(layout.over_both(w, c))
                if need_grad:
                    p = torch.ops.aten.sigmoid_backward.grad_input(
                        w, u.sigmoid_(), grad_input=_buffer(storage[2],
                                                            shape))
                    row_parts.append(layout.over_seconds(p, c))
                    col_parts.append(layout.over_firsts(p))
                else:
                    u.sigmoid_()
                values.append(layout.over_both(u.mul_(w), c))
            else:  # erf
                v = torch.erf(u, out=_buffer(storage[2], shape))
                values.append(layout.over_both(v.mul_(w), c))
                if need_grad:
                    p = u.square_().neg_().exp_().mul_(w)
                    row_parts.append(layout.over_seconds(p, c))
                    col_parts.append(layout.over_firsts(p))
        del storage
        # Without top-k, c = 2 everywhere: applied here, not per block.
        agreement = _rows_total(blocks, values, num_rows)
        if sigmoid_family:
            if smooth_teacher:
                pairs = _rows_total(blocks, mask_sums, num_rows)
                if not topk:
                    pairs = pairs.mul_(2)
            else:
                pairs = _strict_pairs(teacher_sorted, num_first)
            agreement = agreement.mul_(2 if topk else 4).sub_(pairs)
        elif not topk:
            agreement = agreement.mul_(2)
        if need_grad:
            # (Every part is a fresh reduction result: in place is safe.)
            _, cols = layout.column_sums(blocks, col_parts, num_rows,
                                         num_cols, x)
            cols = layout.finish(cols)
            rows = layout.finish(layout.join(blocks, row_parts))
            if topk:  # c_j on the column sums; rows have it already
                cols.mul_(weights)
                _narrow(cols, 1, 0, num_first).sub_(rows)
            else:  # c = 2 on both: folded into the factor
                cols.sub_(rows)
            # cols = -dA/dx (x: the scaled, sorted student); to the student:
            factor = 2 * scale if sigmoid_family else \
                scale * 2 / math.sqrt(math.pi)
            if not topk:
                factor *= 2
            grad = student.new_empty(student.shape).scatter_(
                1, order, cols.mul_(-factor))
            ctx.save_for_backward(grad)
        return agreement

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        grad, = ctx.saved_tensors
        return (grad * grad_out.unsqueeze(1), None, None, None, None, None,
                None, None)


def _rows_total(blocks, parts, num_rows) -> Tensor:
    """Sum per-block (rows,) results into (R,)."""
    tiles, current, key = [], [], None
    for block, part in zip(blocks, parts):
        if block[2:] != key and current:
            tiles.append(torch.cat(current) if len(current) > 1 else
                         current[0])
            current = []
        key = block[2:]
        current.append(part)
    tiles.append(torch.cat(current) if len(current) > 1 else current[0])
    if len(tiles) == 1:
        return tiles[0]
    return torch.stack(tiles).sum(0)


def _strict_pairs(teacher_sorted: Tensor, num_first: int) -> Tensor:
    """sum_{i < K, j > i} c_j [t_i > t_j] per row of descending rows: for
    each i, the classes strictly below it are the last ``below_i``."""
    num_cols = teacher_sorted.size(1)
    ascending = teacher_sorted.flip(1)
    first = _narrow(teacher_sorted, 1, 0, num_first).contiguous()
    below = torch.searchsorted(ascending, first, side='left')
    if num_first == num_cols:  # c = 2 everywhere
        return below.sum(1, dtype=teacher_sorted.dtype).mul_(2)
    # c_j = 2 for the part of them inside the top K
    inside = (below - (num_cols - num_first)).clamp_(min=0)
    return below.add_(inside).sum(1, dtype=teacher_sorted.dtype)


def pairwise_sign_agreement(student: Tensor,
                            teacher: Tensor,
                            topk: Optional[int] = None,
                            surrogate: str = 'tanh',
                            steepness: float = 1.0,
                            smooth_teacher: bool = False,
                            block_bytes: int = DEFAULT_BLOCK_BYTES) -> Tensor:
    r"""Per-row smooth sign agreement of student and teacher pair orders.

    .. math::
        A_r = \sum_{i \in F} \sum_{j} g(k (s_i - s_j))
              \, \mathrm{sgn}(t_i - t_j)

    where the first members ``F`` are the teacher's ``topk`` classes (ties
    at the boundary go to the lower class index) or all classes, and ``j``
    runs over all classes. ``g`` is the surrogate sign; with
    ``smooth_teacher`` the teacher factor is ``g(k (t_i - t_j))`` too.
    ``surrogate='sign'`` uses the hard sign for the student as well (no
    gradient; for metrics). Memory-bounded: see the module docstring. The
    teacher gets no gradient.

    Args:
        student (Tensor): (R, C) student logits.
        teacher (Tensor): (R, C) teacher logits.
        topk (int, optional): Number of first members (the teacher's top
            k). Defaults to None (all C classes).
        surrogate (str): 'tanh', 'sigmoid' (2*sigmoid(x)-1), 'erf' or
            'sign'.
        steepness (float): k.
        smooth_teacher (bool): Apply the surrogate to the teacher too.
        block_bytes (int): Byte budget of the pairwise temporaries.
            Defaults to 256 MiB.

    Returns:
        Tensor: (R,) sums.
    """
    if surrogate not in SURROGATES + ('sign', ):
        raise ValueError(f'surrogate must be one of {SURROGATES}, got '
                         f'{surrogate!r}.')
    num_cols = student.size(1)
    num_first = num_cols if topk is None else min(int(topk), num_cols)
    need_grad = torch.is_grad_enabled() and student.requires_grad
    if surrogate == 'sign' and need_grad:
        raise ValueError("surrogate='sign' has no gradient; call it under "
                         'torch.no_grad() or on a detached student.')
    if surrogate == 'sign' and smooth_teacher:
        raise ValueError("surrogate='sign' needs smooth_teacher=False.")
    return _PairwiseSignAgreement.apply(student, teacher.detach(), num_first,
                                        surrogate, float(steepness),
                                        bool(smooth_teacher),
                                        int(block_bytes), need_grad)


def teacher_topk(teacher: Tensor, k: int) -> Tensor:
    """The teacher's top-k class indices per row as the kernel picks them
    (descending, ties broken towards the lower class index)."""
    return teacher.sort(dim=1, descending=True, stable=True).indices[:, :k]


def naive_pairwise_sign_agreement(student: Tensor,
                                  teacher: Tensor,
                                  topk: Optional[int] = None,
                                  surrogate: str = 'tanh',
                                  steepness: float = 1.0,
                                  smooth_teacher: bool = False) -> Tensor:
    """Reference for :func:`pairwise_sign_agreement`: plain autograd over the
    full (R, K, C) pairwise tensor."""
    teacher = teacher.detach()
    if topk is None or topk >= student.size(1):
        student_first, teacher_first = student, teacher
    else:
        first = teacher_topk(teacher, topk)
        student_first = student.gather(1, first)
        teacher_first = teacher.gather(1, first)
    student_diff = student_first.unsqueeze(2) - student.unsqueeze(1)
    if surrogate == 'sign':
        student_pairs = student_diff.sign()
    else:
        student_pairs = surrogate_sign(steepness * student_diff, surrogate)
    teacher_diff = teacher_first.unsqueeze(2) - teacher.unsqueeze(1)
    if smooth_teacher:
        teacher_pairs = surrogate_sign(steepness * teacher_diff, surrogate)
    else:
        teacher_pairs = teacher_diff.sign()
    return (student_pairs * teacher_pairs).sum((1, 2))


def _tile_views(x: Tensor, blocks, dim: int) -> dict:
    """Views of ``x``'s first members [a, b) along ``dim`` per tile (one
    ``split``), keyed by (a, b)."""
    tiles = sorted({block[2:] for block in blocks})
    sizes = [b - a for a, b in tiles]
    x = _narrow(x, dim, 0, tiles[-1][1])
    parts = x.split(sizes, dim) if len(sizes) > 1 else [x]
    return dict(zip(tiles, parts))


def soft_rank_forward(x: Tensor, block_bytes: int,
                      shift: float = 0.0) -> Tensor:
    """r_i + shift, r_i = 1/2 + sum_j sigmoid(x_i - x_j), per row of (R, C)
    ``x``, blockwise over the pairs i < j (no autograd; see
    :class:`_SoftRank`)."""
    num_rows, num_cols = x.shape
    elem = x.element_size()
    blocks = plan_blocks(num_rows, num_cols, num_cols, elem, int(block_bytes),
                         num_rows * num_cols * elem, x.device.type,
                         _SOFT_RANK_BLOCKS)
    layout = _Layout.choose(num_rows, num_cols)
    xl = layout.prepare(x)
    x_first = layout.first_members(xl, blocks)
    x_second = layout.second_members(xl)
    storage = x.new_empty(max((r1 - r0) * (b - a) * (num_cols - a)
                              for r0, r1, a, b in blocks))
    row_parts, col_parts, col_blocks = [], [], []
    for block in blocks:
        r0, r1, a, b = block
        u = _buffer(storage, layout.shape(block, num_cols))
        torch.sub(layout.rows(x_first[a, b], block),
                  layout.seconds(x_second, block, num_cols), out=u)
        u.sigmoid_()
        row_parts.append(layout.over_seconds(u))
        if b < num_cols:
            col_parts.append(layout.over_firsts(
                u.narrow(layout.second, b - a, num_cols - b)))
            col_blocks.append((r0, r1, b, b))
    ranks = layout.join(blocks, row_parts)
    # + 1/2 + a (the first member's tile start) + shift
    ranks.add_(_tile_offsets(blocks, num_cols, 0.5 + shift, x,
                             layout.rows_last))
    if col_parts:
        start, cols = layout.column_sums(col_blocks, col_parts, num_rows,
                                         num_cols, x)
        ranks.narrow(layout.member_axis, start, num_cols - start).sub_(cols)
    return layout.finish(ranks)


_OFFSETS = {}


def _tile_offsets(blocks, num_cols: int, base: float, like: Tensor,
                  column: bool) -> Tensor:
    """base + the start a of the tile of each first member, as a (C,) row
    (or a (C, 1) column), made once per tiling, dtype and device (no
    host-to-device copy per call)."""
    tiles = tuple(sorted({block[2:] for block in blocks}))
    key = (tiles, num_cols, base, like.dtype, str(like.device), column)
    if key not in _OFFSETS:
        if len(_OFFSETS) > 64:
            _OFFSETS.clear()
        values = [base + a for a, b in tiles for _ in range(b - a)]
        offsets = torch.tensor(values, dtype=like.dtype)
        _OFFSETS[key] = (offsets.unsqueeze(1) if column else offsets).to(
            like.device)
    return _OFFSETS[key]


def soft_rank_backward(x: Tensor, grad_ranks: Tensor,
                       block_bytes: int) -> Tensor:
    """dL/dx from G = dL/dr for :func:`soft_rank_forward`'s ranks.

    dL/dx_m = sum_j (G_m - G_j) D_mj with D_ij = sigmoid'(x_i - x_j)
    (symmetric); a pair i < j adds F_ij = (G_i - G_j) D_ij to dL/dx_i and
    -F_ij to dL/dx_j.

    Rows first (few rows of many classes): one buffer per block holds D;
    dL/dx_m = G_m S1_m - S0_m with S1_m = sum_j D_mj, S0_m = sum_j D_mj G_j:
    the block's row sums of D and of D G_j give S1, S0 of its first members,
    and [G_i, 1]^T D over its columns beyond the tile (j >= b, one ``bmm``)
    those of its second members (by symmetry). Rows last: two buffers, F
    in one fused pass (``sigmoid_backward``), its row and column sums.
    """
    num_rows, num_cols = x.shape
    elem = x.element_size()
    layout = _Layout.choose(num_rows, num_cols)
    buffers = 2 if layout.rows_last else 1
    blocks = plan_blocks(num_rows, num_cols, num_cols, buffers * elem,
                         int(block_bytes), num_rows * num_cols * elem,
                         x.device.type, _SOFT_RANK_BLOCKS)
    largest = max((r1 - r0) * (b - a) * (num_cols - a)
                  for r0, r1, a, b in blocks)
    storage = [x.new_empty(largest) for _ in range(buffers)]
    xl = layout.prepare(x)
    gl = layout.prepare(grad_ranks.contiguous())
    x_first = layout.first_members(xl, blocks)
    x_second = layout.second_members(xl)
    g_second = layout.second_members(gl)
    if layout.rows_last:
        g_first = layout.first_members(gl, blocks)
    else:
        g_first = _tile_views(
            torch.stack([gl, torch.ones_like(gl)], 1), blocks, 2)
    s1_parts, s0_parts, col_parts, col_blocks = [], [], [], []
    for block in blocks:
        r0, r1, a, b = block
        shape = layout.shape(block, num_cols)
        u = _buffer(storage[0], shape)
        torch.sub(layout.rows(x_first[a, b], block),
                  layout.seconds(x_second, block, num_cols), out=u)
        u.sigmoid_()
        if layout.rows_last:
            g = _buffer(storage[1], shape)
            torch.sub(layout.rows(g_first[a, b], block),
                      layout.seconds(g_second, block, num_cols), out=g)
            f = torch.ops.aten.sigmoid_backward.grad_input(g, u,
                                                           grad_input=u)
            s0_parts.append(layout.over_seconds(f))
            if b < num_cols:
                col_parts.append(layout.over_firsts(
                    f.narrow(layout.second, b - a, num_cols - b)))
                col_blocks.append((r0, r1, b, b))
            continue
        d = u.addcmul_(u, u, value=-1)
        s1_parts.append(d.sum(2))
        if b < num_cols:
            col_parts.append(
                torch.bmm(_rows(g_first[a, b], block),
                          d.narrow(2, b - a, num_cols - b)))
            col_blocks.append((r0, r1, b, b))
        s0_parts.append(
            d.mul_(_rows(_narrow(g_second, 2, a, num_cols), block)).sum(2))
    if layout.rows_last:
        grad = layout.join(blocks, s0_parts)
        if col_parts:
            start, cols = layout.column_sums(col_blocks, col_parts, num_rows,
                                             num_cols, x)
            grad.narrow(layout.member_axis, start,
                        num_cols - start).sub_(cols)
        return layout.finish(grad)
    s1 = layout.join(blocks, s1_parts)
    s0 = layout.join(blocks, s0_parts)
    if col_parts:
        start = min(block[2] for block in col_blocks)
        cols = _stacked_column_sums(col_blocks, col_parts, num_rows,
                                    num_cols, start, x)
        width = num_cols - start
        s0.narrow(1, start, width).add_(cols[:, 0])
        s1.narrow(1, start, width).add_(cols[:, 1])
    return s1.mul_(grad_ranks).sub_(s0)


def _stacked_column_sums(blocks, parts, num_rows, num_cols, start, like):
    """Sum per-block (rows, 2, second members [a, C)) results into
    (R, 2, C - start)."""
    if blocks[0][2] == start and blocks[0][1] - blocks[0][0] == num_rows:
        total, rest = parts[0], zip(blocks[1:], parts[1:])
    else:
        total = like.new_zeros((num_rows, 2, num_cols - start))
        rest = zip(blocks, parts)
    for (r0, r1, a, _), part in rest:
        _narrow(_narrow(total, 0, r0, r1), 2, a - start,
                num_cols - start).add_(part)
    return total


def _rows(x: Tensor, block: Block) -> Tensor:
    return _narrow(x, 0, block[0], block[1])


class _SoftRank(torch.autograd.Function):
    """r_i = 1/2 + sum_j sigmoid(x_i - x_j) per row (x already divided by
    eps), over the pairs i < j: sigmoid(x_j - x_i) = 1 - sigmoid(x_i - x_j).

    A block (first members [a, b), second members [a, C)) adds its row sums
    to r_i (i in [a, b)) and, for its second members beyond the tile
    (j >= b), 1 - its column sums to r_j; so r_i = 1/2 + a + (row sums of
    its own tile) - (column sums from the tiles before it).
    """

    @staticmethod
    def forward(ctx, x, block_bytes):
        ctx.save_for_backward(x)
        ctx.block_bytes = block_bytes
        return soft_rank_forward(x, block_bytes)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_ranks):
        x, = ctx.saved_tensors
        return soft_rank_backward(x, grad_ranks, ctx.block_bytes), None


def soft_rank(x: Tensor,
              eps: float = 1.0,
              block_bytes: int = DEFAULT_BLOCK_BYTES) -> Tensor:
    r"""Differentiable ascending ranks of each row (1 = smallest).

    .. math:: r_i = 1 + \sum_{j \ne i} \sigma((x_i - x_j) / \epsilon)

    Tends to the hard rank as ``eps`` -> 0 (ties get the average rank).
    Memory-bounded: see the module docstring.

    Args:
        x (Tensor): (R, C) scores.
        eps (float): Sigmoid temperature.
        block_bytes (int): Byte budget of the pairwise temporaries.
            Defaults to 256 MiB.

    Returns:
        Tensor: (R, C) soft ranks.
    """
    return _SoftRank.apply(x / eps, int(block_bytes))


def naive_soft_rank(x: Tensor, eps: float = 1.0) -> Tensor:
    """Reference for :func:`soft_rank`: plain autograd over (R, C, C)."""
    return 0.5 + torch.sigmoid(
        (x.unsqueeze(2) - x.unsqueeze(1)) / eps).sum(2)


def centred_hard_rank(x: Tensor) -> Tensor:
    """:func:`hard_rank` minus its mean (C + 1) / 2 (``x`` without
    gradient, contiguous)."""
    sorted_x = x.sort(dim=1).values
    below = torch.searchsorted(sorted_x, x, side='left')
    at_or_below = torch.searchsorted(sorted_x, x, side='right')
    return below.add_(at_or_below).sub_(x.size(1)).to(x.dtype).mul_(0.5)


def hard_rank(x: Tensor) -> Tensor:
    """Ascending ranks of each row (1 = smallest), ties averaged as in
    scipy.stats.rankdata; O(C log C), no gradient."""
    x = x.detach()
    sorted_x = x.sort(dim=1).values
    x = x.contiguous()
    below = torch.searchsorted(sorted_x, x, side='left', out_int32=True)
    at_or_below = torch.searchsorted(sorted_x, x, side='right',
                                     out_int32=True)
    return (below + at_or_below + 1).to(x.dtype) / 2
