"""Shared pieces of the logit distillation losses.

Input validation, flattening dense logits to rows, ignore masks, and the
small numerically stable building blocks (KL from log-probabilities, Pearson
correlation) that several losses use. Every loss in this package goes through
:class:`BaseLogitLoss`, so all of them validate inputs, detach the teacher,
upcast half precision and treat ignored pixels the same way.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

HALF_DTYPES = (torch.float16, torch.bfloat16)


def _describe(shape) -> str:
    return str(tuple(shape))


def check_logits(student_logits: Tensor, teacher_logits: Tensor,
                 loss_name: str) -> None:
    """Check that student and teacher logits can be distilled.

    Raises:
        ValueError: When either is not a floating point tensor, is neither
            2-D (N, C) nor 4-D (N, C, H, W), the two shapes differ, there are
            fewer than 2 classes, or either holds NaN/Inf.
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
    for role, logits in (('student', student_logits),
                         ('teacher', teacher_logits)):
        if not bool(torch.isfinite(logits).all()):
            raise ValueError(
                f'{loss_name}: {role} logits contain NaN or Inf. Fix: check '
                f'the {role} forward pass (e.g. fp16 overflow, a diverged '
                'model, or an unloaded checkpoint).')


def check_labels(labels: Optional[Tensor], logits: Tensor, ignore_index: int,
                 required: bool, loss_name: str) -> Optional[Tensor]:
    """Check labels against the logits they belong to.

    Args:
        labels (Tensor, optional): (N,) for (N, C) logits or (N, H, W) for
            (N, C, H, W) logits; class indices in [0, C) or ``ignore_index``.
        logits (Tensor): The student logits.
        ignore_index (int): Label value of samples/pixels to leave out.
        required (bool): Whether the loss cannot work without labels.
        loss_name (str): Used in error messages.

    Returns:
        Tensor or None: The labels as int64, or None when none were given.
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
    labels = labels.long()
    num_classes = logits.size(1)
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f'{loss_name}: labels contain {value}, outside [0, {num_classes}) '
            f'and not ignore_index={ignore_index}. Fix: set ignore_index to '
            'the dataset\'s ignore label or check num_classes.')
    return labels


def to_float(logits: Tensor) -> Tensor:
    """Upcast fp16/bf16 to float32; leave float32/float64 as they are."""
    return logits.float() if logits.dtype in HALF_DTYPES else logits


def logits_to_rows(logits: Tensor) -> Tensor:
    """(N, C) -> (N, C); (N, C, H, W) -> (N*H*W, C), one row per pixel."""
    if logits.dim() == 2:
        return logits
    num_classes = logits.size(1)
    return logits.permute(0, 2, 3, 1).reshape(-1, num_classes)


def valid_rows(student: Tensor,
               teacher: Tensor,
               labels: Optional[Tensor],
               ignore_index: int) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Flatten logits to rows (one per sample or pixel) and drop ignored rows.

    Returns:
        tuple: student rows (R, C), teacher rows (R, C) and labels (R,) or
        None, where R counts the samples/pixels whose label is not
        ``ignore_index`` (all of them when no labels are given).
    """
    student_rows = logits_to_rows(student)
    teacher_rows = logits_to_rows(teacher)
    if labels is None:
        return student_rows, teacher_rows, None
    label_rows = labels.reshape(-1)
    keep = label_rows != ignore_index
    if bool(keep.all()):
        return student_rows, teacher_rows, label_rows
    return student_rows[keep], teacher_rows[keep], label_rows[keep]


def kl_from_log_probs(log_p: Tensor,
                      log_q: Tensor,
                      dim: int,
                      valid: Optional[Tensor] = None) -> Tensor:
    """KL(p || q) = sum p * (log p - log q) along ``dim``.

    Args:
        log_p (Tensor): log-probabilities of p (finite where valid).
        log_q (Tensor): log-probabilities of q, same shape.
        dim (int): The distribution's dimension, summed over.
        valid (Tensor, optional): Bool mask broadcastable to ``log_p``;
            entries where it is False contribute nothing (their log-probs
            may be -inf).
    """
    if valid is not None:
        log_p = log_p.masked_fill(~valid, 0.)
        log_q = log_q.masked_fill(~valid, 0.)
        p = log_p.exp().masked_fill(~valid, 0.)
    else:
        p = log_p.exp()
    return (p * (log_p - log_q)).sum(dim)


def masked_log_softmax(logits: Tensor,
                       dim: int,
                       valid: Optional[Tensor] = None) -> Tensor:
    """log_softmax along ``dim`` over the entries where ``valid`` is True.

    Invalid entries get -inf; each slice along ``dim`` must hold at least one
    valid entry.
    """
    if valid is not None:
        logits = logits.masked_fill(~valid, float('-inf'))
    return F.log_softmax(logits, dim=dim)


def pearson_correlation(a: Tensor,
                        b: Tensor,
                        dim: int = 1,
                        eps: float = 1e-8) -> Tensor:
    """Pearson correlation along ``dim``: cos(a - mean(a), b - mean(b)).

    Where the product of the centred norms is below ``eps`` (a constant
    vector, e.g. a class column of saturated probabilities) the correlation
    is 0 with zero gradient. DIST's code divides by ``max(norm product,
    eps)`` instead: the same value, but a gradient of order 1/eps there.
    """
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    numerator = (a * b).sum(dim)
    denominator = a.norm(dim=dim) * b.norm(dim=dim)
    defined = denominator > eps
    safe_denominator = torch.where(defined, denominator,
                                   torch.ones_like(denominator))
    return torch.where(defined, numerator / safe_denominator,
                       torch.zeros_like(numerator))


def spatial_valid_mask(labels: Optional[Tensor],
                       ignore_index: int) -> Optional[Tensor]:
    """(N, H, W) labels -> (N, H*W) bool mask of pixels to keep, or None."""
    if labels is None:
        return None
    return (labels != ignore_index).flatten(1)


def channel_log_softmax(logits: Tensor, temperature: float,
                        valid: Optional[Tensor]) -> Tensor:
    """Per-channel spatial log-softmax used by CWD-style losses.

    Args:
        logits (Tensor): (N, C, H*W) logits.
        temperature (float): Divides the logits.
        valid (Tensor, optional): (N, 1, H*W) bool mask of kept pixels.

    Returns:
        Tensor: (N, C, H*W) log-probabilities over positions per channel.
    """
    return masked_log_softmax(logits / temperature, dim=-1, valid=valid)


def drop_empty_images(student: Tensor, teacher: Tensor,
                      valid: Optional[Tensor]):
    """Flatten (N, C, H, W) to (N', C, H*W), keeping images that have at least
    one valid pixel; ``valid`` becomes (N', 1, H*W) or stays None."""
    student = student.flatten(2)
    teacher = teacher.flatten(2)
    if valid is None:
        return student, teacher, None
    keep = valid.any(1)
    if not bool(keep.all()):
        student, teacher, valid = student[keep], teacher[keep], valid[keep]
    return student, teacher, valid.unsqueeze(1)


class BaseLogitLoss(nn.Module):
    """Common front end of every logit distillation loss in mmrankkd.

    ``forward`` validates the inputs, returns a zero that still backpropagates
    when no sample/pixel is valid, upcasts fp16/bf16 to float32, detaches the
    teacher, calls :meth:`compute` and multiplies by ``loss_weight``.
    Subclasses implement :meth:`compute` only.

    Args:
        loss_weight (float): Multiplies the loss. Defaults to 1.0.
        ignore_index (int): Label value of pixels/samples that contribute
            nothing. Defaults to 255.
    """

    #: Whether ``forward`` needs ``labels`` (the distiller reads this).
    requires_labels: bool = False
    #: Whether only 4-D (N, C, H, W) logits make sense for this loss.
    dense_only: bool = False
    #: What to use instead when 2-D logits reach a dense-only loss.
    dense_only_hint: str = ''

    def __init__(self, loss_weight: float = 1.0, ignore_index: int = 255):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.ignore_index = int(ignore_index)

    @property
    def loss_name(self) -> str:
        return type(self).__name__

    def positive(self, name: str, value: float) -> float:
        """``value`` as a float; a ValueError naming ``name`` unless > 0."""
        if not value > 0:
            raise ValueError(
                f'{self.loss_name}: {name} must be > 0, got {value}.')
        return float(value)

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
        labels = check_labels(labels, student_logits, self.ignore_index,
                              self.requires_labels, self.loss_name)
        student = to_float(student_logits)
        if student.size(0) == 0 or (labels is not None and not bool(
            (labels != self.ignore_index).any())):
            # Nothing to distil: a zero that keeps the graph connected.
            return student.sum() * 0. + 0.
        teacher = to_float(teacher_logits).detach()
        return self.compute(student, teacher, labels) * self.loss_weight

    def compute(self, student: Tensor, teacher: Tensor,
                labels: Optional[Tensor]) -> Tensor:
        """The unweighted loss on validated float inputs (teacher detached,
        at least one valid sample)."""
        raise NotImplementedError
