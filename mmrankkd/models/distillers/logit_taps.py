"""Which module of an OpenMMLab model produces its class logits, and how to
read them from that module's output.

The distiller never re-implements a host model's loss: it calls the
model's own ``loss()`` (student) or a plain forward (teacher) and reads the
class logits with a forward hook on one module, the *logit module*:

======================================  =====================================
model                                   logit module and logits
======================================  =====================================
mmseg ``EncoderDecoder``                ``decode_head``; its output before
                                        the final resize
mmseg ``CascadeEncoderDecoder``         the last dense stage: OCRNet's OCR
                                        head; PointRend's coarse head
                                        (``decode_head.0``), since the point
                                        head only scores sampled points
DANet, EncNet (tuples)                  the first map (DANet: PAM+CAM fused;
                                        EncNet: the segmentation map, not the
                                        SE-loss vector)
DDRNet (training: context, spatial)     the context map (what it predicts)
PIDNet (training: P, I, D)              the I branch (what it predicts)
K-Net (training: one map per stage)     the last stage
MaskFormer, Mask2Former                 ``log`` of the per-pixel semantic
                                        scores their inference forms,
                                        ``einsum(softmax(cls)[..., :-1],
                                        sigmoid(mask))``, last decoder layer,
                                        at mask resolution
Conformer (CNN and transformer scores)  their sum, as its ``predict`` does
mmpretrain ``ImageClassifier``          ``head``: its class scores (VGG:
                                        the backbone's classifier, passed
                                        through ``ClsHead``; DeiT teachers:
                                        the mean of the class and
                                        distillation token scores, as the
                                        head predicts)
======================================  =====================================

``tap=dict(module='decode_head.conv_seg', index=None)`` overrides the rule
for custom heads: the named submodule's output (``index`` picks one element
of a tuple/list output).
"""
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
from torch import Tensor

# Head type name -> index of the class logit map in a tuple/list output.
_TUPLE_INDEX = {
    'DAHead': 0,
    'EncHead': 0,
    'DDRHead': 0,
    'PIDHead': 1,
    'IterativeDecodeHead': -1,
}
# Head type name -> how its own predict() combines a tuple output.
_TUPLE_COMBINE = {
    'ConformerHead': lambda output: output[0] + output[1],
}
_QUERY_HEADS = ('MaskFormerHead', 'Mask2FormerHead')
_SEMANTIC_EPS = 1e-6


def _type_names(module: nn.Module):
    return [cls.__name__ for cls in type(module).__mro__]


def query_semantic_logits(output) -> Tensor:
    """``log`` of MaskFormer/Mask2Former per-pixel class scores from
    ``(cls_scores, mask_preds)`` (per decoder layer; the last one is used).

    Inference takes the argmax over classes of
    ``sum_q softmax(cls_q)[c] * sigmoid(mask_q)``; the log keeps that order
    and its softmax over classes is those scores normalised per pixel.
    """
    cls_scores, mask_preds = output
    cls = cls_scores[-1].float().softmax(-1)[..., :-1]
    masks = mask_preds[-1].float().sigmoid()
    scores = torch.einsum('bqc,bqhw->bchw', cls, masks)
    return scores.clamp_min(_SEMANTIC_EPS).log()


def default_logit_module(model: nn.Module, kind: str):
    """``(name, module)`` of the module whose output holds the class
    logits (see the module docstring)."""
    if kind == 'cls':
        return 'head', model.head
    head = model.decode_head
    if isinstance(head, nn.ModuleList):
        dense = [i for i, h in enumerate(head)
                 if 'PointHead' not in _type_names(h)]
        index = dense[-1]
        return f'decode_head.{index}', head[index]
    return 'decode_head', head


def _extractor(module: nn.Module, index: Optional[int]) -> Callable:
    names = _type_names(module)
    if index is None and any(n in _QUERY_HEADS for n in names):
        return query_semantic_logits
    combine = next((_TUPLE_COMBINE[n] for n in names if n in _TUPLE_COMBINE),
                   None)
    if index is None and combine is not None:
        return combine
    if index is None:
        index = next((_TUPLE_INDEX[n] for n in names if n in _TUPLE_INDEX),
                     None)

    def extract(output):
        if isinstance(output, Tensor):
            return output
        if isinstance(output, (tuple, list)) and index is not None:
            return output[index]
        raise TypeError(
            f'{type(module).__name__} returned a {type(output).__name__}, '
            'and mmrankkd does not know which element holds the class '
            'logits. Fix: name it in the distiller config, e.g. '
            "student_tap=dict(module='decode_head', index=0) (and "
            'teacher_tap for the teacher).')

    return extract


class _RecordingForward:
    """Stands in for a module's ``forward`` and hands each output to a tap.

    A forward hook is not enough: mmseg's decode heads call
    ``self.forward(inputs)`` directly in ``loss()``, which skips hooks.
    The module and the class's function are held as attributes (not a bound
    method), so a ``deepcopy`` of the model (e.g. an EMA copy) records its
    own forward, not the original's.
    """

    def __init__(self, module: nn.Module, tap: 'LogitTap'):
        self.module = module
        self.tap = tap
        self.function = type(module).forward

    def __call__(self, *args, **kwargs):
        output = self.function(self.module, *args, **kwargs)
        self.tap.record(output)
        return output


class LogitTap:
    """Reads the class logits of one forward pass of ``model`` from the
    output of its logit module.

    Use as a context manager around exactly one forward; :attr:`logits`
    then holds the class logits of that pass (the first call of the module
    in it: cascades call their first stage twice in training).

    Args:
        model (nn.Module): An mmseg segmentor or mmpretrain classifier.
        kind (str): ``'seg'`` or ``'cls'``.
        role (str): ``'student'`` or ``'teacher'``, for error messages.
        module (str, optional): Dotted name of the logit module. Defaults to
            the rule in the module docstring.
        index (int, optional): Element of a tuple/list output holding the
            logits. Defaults to the rule for known heads.
    """

    def __init__(self,
                 model: nn.Module,
                 kind: str,
                 role: str,
                 module: Optional[str] = None,
                 index: Optional[int] = None):
        if module is None:
            self.name, self.module = default_logit_module(model, kind)
        else:
            try:
                self.module = model.get_submodule(module)
            except AttributeError:
                raise ValueError(
                    f'{role}_tap.module="{module}" is not a submodule of '
                    f'the {role} ({type(model).__name__}). Fix: use a name '
                    'from model.named_modules(), e.g. "decode_head" or '
                    '"head".') from None
            self.name = module
        self.role = role
        self._extract = _extractor(self.module, index)
        self._output: Any = None
        self._active = False
        self.module.forward = _RecordingForward(self.module, self)

    def record(self, output) -> None:
        """Keep ``output`` if it is the first of the current forward."""
        if self._active and self._output is None:
            self._output = output

    def __enter__(self) -> 'LogitTap':
        self._output = None
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._active = False

    @property
    def fired(self) -> bool:
        """Whether the logit module ran since the context was entered."""
        return self._output is not None

    @property
    def logits(self) -> Tensor:
        """The class logits of the last tapped forward."""
        if self._output is None:
            raise RuntimeError(
                f'The {self.role}\'s logit module "{self.name}" '
                f'({type(self.module).__name__}) did not run in the '
                f'{self.role}\'s forward. Fix: name the module that produces '
                f'the class logits with {self.role}_tap=dict(module=...).')
        logits = self._extract(self._output)
        self._output = None
        if not isinstance(logits, Tensor) or logits.dim() not in (2, 4):
            shape = getattr(logits, 'shape', None)
            raise TypeError(
                f'The {self.role}\'s logit module "{self.name}" gave '
                f'{type(logits).__name__} {tuple(shape) if shape else ""}; '
                'class logits are (N, C) or (N, C, H, W). Fix: point '
                f'{self.role}_tap at the module producing them.')
        return logits
