"""Shared pieces of the logit distillation losses.

Input checks, ignore masks as 0/1 row weights, and the numerically stable
building blocks (Pearson correlation as the official DIST code writes it)
that several losses use. Every loss in this package goes through
:class:`BaseLogitLoss`, so all of them check inputs, detach the teacher,
upcast half precision and treat ignored pixels the same way.

No host synchronisation in the steady state: the value checks (NaN/Inf
logits, labels outside [0, C)) run on the device; by default they are read
on the host on the first call, then once every ``validate_interval``
calls and whenever :meth:`BaseLogitLoss.flush` is called (by
``mmrankkd.ValueCheckHook`` at the end of every training epoch, before every
checkpoint and at the end of training; see :class:`BaseLogitLoss`), and
ignored pixels are weighted out
(weight 0) instead of being selected with a boolean mask (a selection needs
the count on the host).
"""
import functools
import inspect
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

HALF_DTYPES = (torch.float16, torch.bfloat16)
VALIDATE_MODES = ('deferred', 'always', 'off')
#: The epsilon of logit standardization, added to the standard deviation
#: (logit-standardization-KD, mdistiller/distillers/KD.py ``normalize``).
STANDARDIZE_EPS = 1e-7


def _describe(shape) -> str:
    return str(tuple(shape))


def check_logits(student_logits: Tensor, teacher_logits: Tensor,
                 loss_name: str) -> None:
    """Check the layout of student and teacher logits (no device sync).

    Raises:
        ValueError: When either is not a floating point tensor, is neither
            2-D (N, C) nor 4-D (N, C, H, W), the two shapes differ, or there
            are fewer than 2 classes. NaN/Inf values are checked by
            :meth:`BaseLogitLoss.forward` according to its ``validate``.
    """
    for role, logits in (('student', student_logits),
                         ('teacher', teacher_logits)):
        if not isinstance(logits, Tensor):
            raise ValueError(
                f'{loss_name}: {role} logits must be a torch.Tensor, got '
                f'{type(logits).__name__}.')
        if not logits.is_floating_point():
            raise ValueError(
                f'{loss_name}: {role} logits must be floating point, got '
                f'dtype {logits.dtype}. Fix: pass raw float logits.')
        if logits.dim() not in (2, 4):
            raise ValueError(
                f'{loss_name}: {role} logits must be 2-D (N, C) or 4-D '
                f'(N, C, H, W), got {logits.dim()}-D of shape '
                f'{_describe(logits.shape)}.')
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f'{loss_name}: student logits {_describe(student_logits.shape)} '
            f'and teacher logits {_describe(teacher_logits.shape)} differ in '
            'shape. Fix: resize the teacher logits to the student\'s spatial '
            'size (F.interpolate) and make both heads predict the same '
            'classes.')
    if student_logits.size(1) < 2:
        raise ValueError(
            f'{loss_name}: logits need at least 2 classes along dim 1, got '
            f'shape {_describe(student_logits.shape)}.')


def check_labels(labels: Optional[Tensor], logits: Tensor, required: bool,
                 loss_name: str) -> Optional[Tensor]:
    """Check the layout of labels against the logits (no device sync).

    Args:
        labels (Tensor, optional): (N,) for (N, C) logits or (N, H, W) for
            (N, C, H, W) logits; integer class indices.
        logits (Tensor): The student logits.
        required (bool): Whether the loss cannot work without labels.
        loss_name (str): Used in error messages.

    Returns:
        Tensor or None: The labels as int64, or None when none were given.
        Their values (in [0, C) or ``ignore_index``) are checked by
        :meth:`BaseLogitLoss.forward` according to its ``validate``.
    """
    expected = (logits.size(0), ) if logits.dim() == 2 else \
        (logits.size(0), ) + tuple(logits.shape[2:])
    layout = '(N,)' if logits.dim() == 2 else '(N, H, W)'
    if labels is None:
        if required:
            raise ValueError(
                f'{loss_name} requires labels (ground-truth class indices of '
                f'shape {layout}, here {expected}). Fix: pass labels=... to '
                'forward (the distiller passes the data samples\' labels).')
        return None
    if not isinstance(labels, Tensor):
        raise ValueError(
            f'{loss_name}: labels must be a torch.Tensor, got '
            f'{type(labels).__name__}.')
    if labels.is_floating_point() or labels.is_complex() or \
            labels.dtype == torch.bool:
        raise ValueError(
            f'{loss_name}: labels must be integer class indices, got dtype '
            f'{labels.dtype}. Fix: pass hard labels (e.g. gt_label / '
            'gt_sem_seg), not one-hot or soft scores.')
    if tuple(labels.shape) != expected:
        hint = ''
        if labels.dim() == len(expected) + 1 and labels.size(1) == 1:
            hint = ' Fix: squeeze the channel dimension (labels.squeeze(1)).'
        elif labels.dim() == len(expected) and labels.dim() == 3:
            hint = ' Fix: resize the labels to the logits\' H, W (nearest).'
        raise ValueError(
            f'{loss_name}: labels of shape {_describe(labels.shape)} do not '
            f'match logits of shape {_describe(logits.shape)}; expected '
            f'labels of shape {expected} {layout}.{hint}')
    return labels if labels.dtype == torch.int64 else labels.long()


def standardize(logits: Tensor, dim=1) -> Tensor:
    """Z-score ``logits`` along ``dim`` as the logit standardization authors'
    ``normalize`` does (Sun et al., CVPR 2024,
    sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py):
    ``(z - mean(z)) / (1e-7 + std(z))`` with torch's default (unbiased,
    n - 1) std, the epsilon added outside the square root, and the gradient
    through the mean and the std (nothing detached). A constant vector gives
    0 (and, through torch's std backward, the finite gradient
    ``(g - mean(g)) / 1e-7``).

    Args:
        logits (Tensor): Any shape.
        dim (int | tuple[int]): The dimension(s) of one distribution: 1
            (classes) for (N, C) and per-pixel (N, C, H, W) logits; (2, 3)
            (positions) for channel-wise distributions.
    """
    mean = logits.mean(dim, keepdim=True)
    std = logits.std(dim, keepdim=True)
    return (logits - mean) / (STANDARDIZE_EPS + std)


def to_float(logits: Tensor) -> Tensor:
    """Upcast fp16/bf16 to float32; leave float32/float64 as they are."""
    return logits.float() if logits.dtype in HALF_DTYPES else logits


def logits_to_rows(logits: Tensor) -> Tensor:
    """(N, C) -> (N, C); (N, C, H, W) -> (N*H*W, C), one row per pixel."""
    if logits.dim() == 2:
        return logits
    num_classes = logits.size(1)
    return logits.permute(0, 2, 3, 1).reshape(-1, num_classes)


def weighted_mean(values: Tensor, weights: Optional[Tensor]) -> Tensor:
    """mean(values), or sum(weights * values) / max(sum(weights), 1) with
    0/1 ``weights`` (the mean over the kept entries; 0 when none is kept).
    Both shapes must match; no device sync."""
    if weights is None:
        return values.mean()
    weights = weights.to(values.dtype)
    return torch.dot(values.reshape(-1), weights.reshape(-1)) / \
        weights.sum().clamp(min=1)


def pearson_correlation(a: Tensor,
                        b: Tensor,
                        dim: int = 1,
                        eps: float = 1e-8) -> Tensor:
    """Pearson correlation along ``dim`` as the official DIST code writes it:

    ``(a' * b').sum(dim) / (|a'| |b'| + eps)`` with ``a' = a - mean(a)``,
    ``b' = b - mean(b)`` along ``dim``: eps is *added* to the product of the
    centred norms (not a clamp, and not torch's ``F.cosine_similarity``,
    which clamps each norm separately). A constant vector gives 0; its
    gradient there is ``b' / eps`` (large, as in the official code).
    """
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    return (a * b).sum(dim) / (a.norm(dim=dim) * b.norm(dim=dim) + eps)


class _CheckState:
    """Calls so far, the running checks not read yet (since which call, for
    how many classes), the cached sign vectors of
    :meth:`BaseLogitLoss._signs`, and the training iteration of call 0
    (when a runner said so: :meth:`BaseLogitLoss.align_iterations`)."""

    def __init__(self):
        self.calls = 0
        self.pending = None  # ([logit sums], label extremes or None)
        self.since = 1
        self.num_classes = None
        self.signs = {}
        self.iteration_offset = None


#: Profiler label of the one device -> host read of the value checks.
READ_CHECKS = 'mmrankkd.read_value_checks'


def _read(sums: list, extremes: Optional[Tensor]):
    """Host copies of the value checks: the only synchronisation of a loss
    call (labelled for torch.profiler)."""
    with torch.profiler.record_function(READ_CHECKS):
        return (torch.stack(sums).tolist(),
                None if extremes is None else extremes.tolist())


def label_valid_mask(labels: Optional[Tensor],
                     ignore_index: Optional[int]) -> Optional[Tensor]:
    """Bool mask of the samples/pixels to keep (labels != ignore_index), or
    None when every one is kept (no labels or no ignore_index)."""
    if labels is None or ignore_index is None:
        return None
    return labels != ignore_index


class BaseLogitLoss(nn.Module):
    """Common front end of every logit distillation loss in mmrankkd.

    ``forward`` checks the inputs, upcasts fp16/bf16 to float32, detaches
    the teacher, calls :meth:`compute` (with autocast disabled, so under
    AMP everything is computed in float32) and multiplies by
    ``loss_weight``. Subclasses implement :meth:`compute` only.

    Layout errors (types, ranks, shapes, label dtype, missing labels) raise
    on the call that has them. Value errors (NaN/Inf in the student or
    teacher logits, labels outside [0, C) that are not ``ignore_index``,
    checked when the loss reads labels: it requires them or has an
    ``ignore_index``) need the values on the host, which on a GPU is a
    synchronisation; when they are read depends on ``validate``:

    * ``'deferred'`` (default): the first call reads them (a bad first
      batch, e.g. a wrong ``num_classes``, raises at once); every later call
      folds its minima and maxima into a running device tensor without a
      sync, which is read every ``validate_interval`` calls and raises the
      same ``ValueError``, naming the calls it covers. The steady state
      costs one sync per ``validate_interval`` calls.
    * ``'always'``: every call reads them and raises on the offending call
      (one sync per call).
    * ``'off'``: no value checks (no sync ever).

    Out-of-range labels that a deferred check has not read yet are clamped
    into [0, C) so that nothing indexes out of bounds before it raises;
    the error then says that the calls it covers trained on clamped labels.
    :meth:`flush` reads the pending checks at once: ``mmrankkd.
    ValueCheckHook`` (in the shipped configs' ``custom_hooks``) calls it at
    the end of every training epoch, before every checkpoint is written and
    at the end of training, so no checkpoint follows an unread NaN or bad
    label and the last calls of a run are checked too.

    Ignored samples/pixels (label == ``ignore_index``) are weighted 0, not
    selected: the mean runs over the kept ones (0 with a zero gradient when
    none is kept).

    ``logit_standardization=True`` (a keyword every loss accepts) z-scores
    the student's and the teacher's logits with :func:`standardize` before
    :meth:`compute`: per sample of (N, C) logits and per pixel of
    (N, C, H, W) logits, over the classes (channel-wise losses: per image
    and channel, over the positions; see :meth:`standardize_dims`), after
    the value checks (which see the raw logits) and in float32, with the
    gradient through the student's mean and std, as the authors' KD/DKD do
    (Sun et al., CVPR 2024). Ignored pixels are standardized too (each row
    on its own, so they do not change the kept ones; channel-wise losses:
    they enter each channel's mean and std) and then weighted out as usual.
    The loss's temperature then applies to the standardized logits (the
    authors use a base temperature of 2-3 with it).

    Args:
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int, optional): Label value of samples/pixels that
            contribute nothing; None (default) ignores no label. A plain
            attribute read at every call (the distiller sets it from the
            student's decode head for dense logits).
        validate (str): 'deferred', 'always' or 'off' (see above).
            Defaults to 'deferred'.
        validate_interval (int): Calls between two reads of the deferred
            checks. Defaults to 100.
    """

    #: Whether ``forward`` needs ``labels`` (the distiller reads this).
    requires_labels: bool = False
    #: Whether only 4-D (N, C, H, W) logits make sense for this loss.
    dense_only: bool = False
    #: What to use instead when 2-D logits reach a dense-only loss.
    dense_only_hint: str = ''
    #: Why a top-k teacher store is refused (:meth:`teacher_topk`).
    topk_refusal: str = 'it does not say that it takes a top-k teacher'
    #: Z-score both logits before :meth:`compute` (see the class docs); set
    #: by the ``logit_standardization`` keyword every subclass accepts.
    logit_standardization: bool = False

    def __init_subclass__(cls, **kwargs):
        """Give every subclass's ``__init__`` the keyword-only argument
        ``logit_standardization`` (default False), so that any loss,
        including ones written later, takes it from its config."""
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get('__init__')
        if init is None or getattr(init, '_takes_standardization', False):
            return
        if 'logit_standardization' in inspect.signature(init).parameters:
            return  # the loss applies it itself (MLKD: instance terms only)

        @functools.wraps(init)
        def __init__(self, *args, logit_standardization: bool = False,
                     **kw):
            init(self, *args, **kw)
            if not isinstance(logit_standardization, bool):
                raise ValueError(
                    f'{self.loss_name}: logit_standardization must be True '
                    f'or False, got {logit_standardization!r}.')
            self.logit_standardization = logit_standardization

        signature = inspect.signature(init)
        params = list(signature.parameters.values())
        extra = inspect.Parameter('logit_standardization',
                                  inspect.Parameter.KEYWORD_ONLY,
                                  default=False, annotation=bool)
        at = next((i for i, p in enumerate(params)
                   if p.kind == inspect.Parameter.VAR_KEYWORD), len(params))
        __init__.__signature__ = signature.replace(
            parameters=params[:at] + [extra] + params[at:])
        __init__._takes_standardization = True
        cls.__init__ = __init__

    def teacher_topk(self, k: int) -> str:
        """How this loss takes a teacher known only by its top-``k`` logits
        (a top-k teacher store: the other classes share the rest of the
        softmax mass evenly): ``'exact'`` (the loss value is the one the
        full logits give), ``'approximate'`` (it tolerates the even
        spread, as TinyViT's top-k distillation does) or ``'refused'``
        (it needs every value or the whole ranking). A loss that does not
        say is refused."""
        return 'refused'

    def standardize_dims(self) -> Tuple[int, ...]:
        """The dimensions of one softmax distribution of this loss, along
        which ``logit_standardization`` z-scores: the classes (dim 1), or
        the positions (2, 3) for channel-wise losses."""
        return (1, )

    def __init__(self,
                 loss_weight: float = 1.0,
                 ignore_index: Optional[int] = None,
                 validate: str = 'deferred',
                 validate_interval: int = 100):
        super().__init__()
        if validate not in VALIDATE_MODES:
            raise ValueError(f'{self.loss_name}: validate must be one of '
                             f'{VALIDATE_MODES}, got {validate!r}.')
        if int(validate_interval) < 1:
            raise ValueError(f'{self.loss_name}: validate_interval must be '
                             f'>= 1, got {validate_interval}.')
        self.loss_weight = float(loss_weight)
        self.ignore_index = None if ignore_index is None else int(
            ignore_index)
        self.validate = validate
        self.validate_interval = int(validate_interval)
        # Mutable per-call state in a plain object: nn.Module.__setattr__
        # costs ~10 us per assignment.
        self._checks = _CheckState()

    @property
    def loss_name(self) -> str:
        return type(self).__name__

    def positive(self, name: str, value: float) -> float:
        """``value`` as a float; a ValueError naming ``name`` unless > 0."""
        if not value > 0:
            raise ValueError(
                f'{self.loss_name}: {name} must be > 0, got {value}.')
        return float(value)

    # ------------------------------------------------------------------
    # Value checks.
    def _stats(self, student: Tensor, teacher: Tensor,
               labels: Optional[Tensor], valid: Optional[Tensor]):
        """On the device, no sync: ([the sums of the student and of the
        teacher logits]: finite iff every logit is, as NaN/Inf propagate (a
        float32 sum overflows only for logits beyond ~1e32, broken too);
        and, with labels, [-min, max] of the kept labels)."""
        with torch.no_grad():
            # (sum(dtype=float64) would first copy the logits to float64)
            sums = [student.sum(), teacher.sum()]
            if labels is None:
                return sums, None
            kept = labels if valid is None else torch.where(valid, labels, 0)
            extremes = torch.stack(torch.aminmax(kept))
            return sums, extremes.mul_(self._signs(extremes))

    def _signs(self, like: Tensor) -> Tensor:
        """(-1, 1) like ``like``, made once per dtype and device."""
        cache = self._checks.signs
        key = (like.dtype, like.device)
        if key not in cache:
            cache[key] = torch.tensor([-1, 1], dtype=like.dtype,
                                      device=like.device)
        return cache[key]

    def _raise_if_bad(self, sums: list, extremes: Optional[list],
                      num_classes: int, where: str,
                      label_note: str = '') -> None:
        for role, total in zip(('student', 'teacher'), sums):
            if not math.isfinite(total):
                raise ValueError(
                    f'{self.loss_name}: {role} logits contain NaN or Inf'
                    f'{where}. Fix: check the {role} forward pass (e.g. '
                    'fp16 overflow, a diverged model, or an unloaded '
                    'checkpoint).')
        if extremes is not None:
            low, high = -extremes[0], extremes[1]
            if low < 0 or high >= num_classes:
                value = low if low < 0 else high
                ignore = ('no ignore_index' if self.ignore_index is None
                          else f'not ignore_index={self.ignore_index}')
                raise ValueError(
                    f'{self.loss_name}: labels contain {value}, outside '
                    f'[0, {num_classes}) and {ignore}{where}.{label_note} '
                    'Fix: set ignore_index to the dataset\'s ignore label or '
                    'check num_classes.')

    def _check_values(self, student: Tensor, teacher: Tensor,
                      labels: Optional[Tensor],
                      valid: Optional[Tensor]) -> None:
        if self.validate == 'off':
            return
        state = self._checks
        state.calls += 1
        sums, extremes = self._stats(student, teacher, labels, valid)
        num_classes = student.size(1)
        if self.validate == 'always' or state.calls == 1:
            state.pending, state.since = None, state.calls + 1
            self._raise_if_bad(*_read(sums, extremes), num_classes, '')
            return
        pending = state.pending
        if pending is None or (pending[1] is None) != (extremes is None) \
                or pending[0][0].device != sums[0].device:
            if pending is not None:  # labels came or went: read it now
                self._flush(num_classes)
            # float64 running sums: 100 finite sums cannot overflow them
            state.pending = ([x.double() for x in sums], extremes)
            state.num_classes = num_classes
        else:
            # sums stay finite iff every term is; one op for both
            torch._foreach_add_(pending[0], sums)
            if extremes is not None:
                torch.maximum(pending[1], extremes, out=pending[1])
        if state.calls % self.validate_interval == 0:
            self._flush(num_classes)

    def _flush(self, num_classes: int) -> None:
        state = self._checks
        pending, first = state.pending, state.since
        state.pending, state.since = None, state.calls + 1
        if pending is not None:
            iterations = ''
            if state.iteration_offset is not None:
                iterations = (
                    f', training iterations {first + state.iteration_offset}'
                    f'-{state.calls + state.iteration_offset}')
            clamped = ''
            if self.requires_labels:
                clamped = (' Until this check, those calls trained with the '
                           f'labels clamped into [0, {num_classes}).')
            self._raise_if_bad(
                *_read(*pending), num_classes,
                f' (deferred check of calls {first}-{state.calls}'
                f'{iterations}; validate=\'always\' stops at the offending '
                'call)', clamped)

    def flush(self) -> None:
        """Read the deferred value checks of the calls since the last read
        now (one device sync if any are pending; nothing otherwise).

        Raises:
            ValueError: As the deferred check would, naming the calls.
        """
        if self._checks.pending is not None:
            self._flush(self._checks.num_classes)

    def align_iterations(self, completed_iterations: int) -> None:
        """Name training iterations (1-based) besides call numbers in the
        deferred checks' errors: the next call is iteration
        ``completed_iterations + 1`` (one call per iteration, as in a
        runner's training loop)."""
        state = self._checks
        state.iteration_offset = int(completed_iterations) - state.calls

    # ------------------------------------------------------------------
    def forward(self,
                student_logits: Tensor,
                teacher_logits: Tensor,
                labels: Optional[Tensor] = None) -> Tensor:
        """Compute the loss.

        Args:
            student_logits (Tensor): (N, C) or (N, C, H, W) logits.
            teacher_logits (Tensor): Same shape; receives no gradient.
            labels (Tensor, optional): (N,) or (N, H, W) class indices or
                ``ignore_index``. Required when ``requires_labels`` is True;
                otherwise only used to leave ignored pixels out.

        Returns:
            Tensor: A scalar (float32 for half precision inputs), already
            multiplied by ``loss_weight``.
        """
        check_logits(student_logits, teacher_logits, self.loss_name)
        if self.dense_only and student_logits.dim() != 4:
            raise ValueError(
                f'{self.loss_name} needs dense (N, C, H, W) logits, got '
                f'shape {_describe(student_logits.shape)}. '
                f'{self.dense_only_hint}')
        labels = check_labels(labels, student_logits, self.requires_labels,
                              self.loss_name)
        student = to_float(student_logits)
        teacher = to_float(teacher_logits)
        if teacher.requires_grad:
            teacher = teacher.detach()
        if student.numel() == 0:
            # Nothing to distil: a zero that keeps the graph connected.
            return student.sum() * 0.
        valid = label_valid_mask(labels, self.ignore_index)
        # Label values matter (and are checked) where the loss reads them.
        used = self.requires_labels or valid is not None
        self._check_values(student, teacher, labels if used else None, valid)
        if labels is not None and self.requires_labels:
            labels = labels.clamp(0, student.size(1) - 1)
        device_type = student.device.type
        if torch.is_autocast_enabled(device_type):
            # Under AMP every op here stays in float32 (autocast would run
            # the kernels' matmuls/reductions in fp16/bf16).
            with torch.autocast(device_type, enabled=False):
                loss = self._compute(student, teacher, labels, valid)
        else:
            loss = self._compute(student, teacher, labels, valid)
        if self.loss_weight != 1.0:
            loss = loss * self.loss_weight
        return loss

    def _compute(self, student: Tensor, teacher: Tensor,
                 labels: Optional[Tensor],
                 valid: Optional[Tensor]) -> Tensor:
        if self.logit_standardization:
            dims = self.standardize_dims()
            student = standardize(student, dims)
            with torch.no_grad():
                teacher = standardize(teacher, dims)
        return self.compute(student, teacher, labels, valid)

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor],
                valid: Optional[Tensor]) -> Tensor:
        """The unweighted loss on checked float inputs.

        Args:
            student (Tensor): (N, C) or (N, C, H, W), float32/float64.
            teacher (Tensor): Same shape, detached.
            labels (Tensor, optional): int64 (N,) / (N, H, W); for losses
                with ``requires_labels`` clamped into [0, C) (ignored
                entries hold some valid class index).
            valid (Tensor, optional): bool, same shape as ``labels``: the
                entries to keep; None keeps all.
        """
        raise NotImplementedError


def row_weights(logits: Tensor, valid: Optional[Tensor], flat: bool = False):
    """Weights of the mean over rows (samples/pixels; classes along dim 1):
    1 / (number of rows) as a float, or ``valid / max(count, 1)`` shaped
    like the logits with dim 1 of size 1 (``flat``: (rows, 1)), 0 for
    ignored rows."""
    if valid is None:
        return 1.0 / (logits.numel() // logits.size(1))
    weights = (valid.reshape(-1, 1) if flat else valid.unsqueeze(1)).to(
        logits.dtype)
    return weights / weights.sum().clamp(min=1)


def channel_distributions(student: Tensor, teacher: Tensor,
                          valid: Optional[Tensor]):
    """For CWD-style losses: (N, C, H, W) -> (N, C, H*W) logits, the
    (N, 1, H*W) mask of the positions in each channel's distribution (None:
    all) and the weights of the mean over the N*C channels, leaving out
    images without a valid pixel (their distributions then use every
    position, finite, and weigh 0)."""
    student = student.flatten(2)
    teacher = teacher.flatten(2)
    num_images, num_classes = student.shape[:2]
    if valid is None:
        return student, teacher, None, 1.0 / (num_images * num_classes)
    valid = valid.flatten(1).unsqueeze(1)
    kept = valid.any(2, keepdim=True)
    mask = valid | ~kept
    weights = kept.to(student.dtype)
    weights = weights / (weights.sum() * num_classes).clamp(min=1)
    return student, teacher, mask, weights
