"""Where the teacher's logits come from.

A distiller asks a *teacher source* for two things: the teacher's class
logits on a training batch (:meth:`LiveTeacher.logits`) and, for validation
metrics that compare, the teacher's predictions (:meth:`LiveTeacher.predict`).
:class:`LiveTeacher` runs the frozen teacher model: it maps the student's
preprocessed batch to the teacher's own preprocessing (:mod:`.teacher_input`),
runs the forward under ``no_grad`` (optionally under autocast and in
channels_last) and reads the class logits from the teacher's logit module
(:mod:`.logit_taps`). The logits it returns are always float32.
"""
import inspect
from typing import List, Optional

import torch
import torch.nn as nn
from mmengine.structures import BaseDataElement
from torch import Tensor

from .logit_taps import LogitTap
from .teacher_input import TeacherInput

AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}

#: Prediction fields copied from the teacher's samples as ``teacher_<f>``.
PREDICTION_FIELDS = ('pred_sem_seg', 'seg_logits', 'pred_score',
                     'pred_label')


def attach_teacher_predictions(student_samples: List[BaseDataElement],
                               teacher_samples: List[BaseDataElement]):
    """Copy the teacher's predictions onto the student's samples as
    ``teacher_pred_sem_seg`` / ``teacher_seg_logits`` (segmentation) or
    ``teacher_pred_score`` / ``teacher_pred_label`` (classification)."""
    for s, t in zip(student_samples, teacher_samples):
        for field in PREDICTION_FIELDS:
            if field in t:
                s.set_field(getattr(t, field), f'teacher_{field}')
    return student_samples


def metainfo_copies(data_samples: Optional[list]) -> Optional[list]:
    """New samples holding only each sample's metainfo (image shapes,
    padding, flip): what a model's ``predict`` reads, without copying the
    ground truth or any prediction already written into the samples."""
    if data_samples is None:
        return None
    return [type(ds)(metainfo=ds.metainfo) for ds in data_samples]


def query_head_samples(data_samples: list) -> list:
    """Metainfo copies with ``batch_input_shape``, which MaskFormer and
    Mask2Former heads read in ``forward`` and add themselves (as the
    sample's ``img_shape``) only inside their own ``loss()`` /
    ``predict()``; the student's samples are left untouched."""
    samples = metainfo_copies(data_samples)
    for ds in samples:
        ds.set_metainfo(dict(batch_input_shape=ds.metainfo['img_shape']))
    return samples


def forward_to_logits(model: nn.Module, kind: str, tap: LogitTap,
                      inputs: Tensor, data_samples: Optional[list]) -> None:
    """Run ``model`` just far enough for ``tap`` (entered by the caller) to
    record its class logits: a classifier's ``tensor`` forward, or a
    segmentor's backbone/neck and decode head(s) up to the tapped one."""
    if kind == 'cls':
        model(inputs, mode='tensor')
        return
    feats = model.extract_feat(inputs)
    heads = model.decode_head
    if isinstance(heads, nn.ModuleList):  # cascade: stage by stage
        out = heads[0].forward(feats)
        for head in heads[1:]:
            if tap.fired:
                break
            out = head.forward(feats, out)
    elif 'batch_data_samples' in inspect.signature(
            type(heads).forward).parameters:  # query heads
        heads.forward(feats, query_head_samples(data_samples))
    else:
        heads.forward(feats)


class LiveTeacher:
    """The frozen teacher model as the source of teacher logits.

    Args:
        model (nn.Module): The teacher (loaded, frozen, in eval mode).
        kind (str): ``'seg'`` or ``'cls'``.
        tap (LogitTap): Reads the class logits from the teacher's forward.
        teacher_input (TeacherInput): Maps the student's preprocessed batch
            to the teacher's preprocessing.
        autocast (str, optional): ``'bf16'`` / ``'fp16'``: run the forward
            under ``torch.autocast`` of that dtype; None: full precision,
            also when the caller runs under autocast (mixed precision
            training).
        channels_last (bool): Feed the teacher channels_last inputs.
    """

    def __init__(self,
                 model: nn.Module,
                 kind: str,
                 tap: LogitTap,
                 teacher_input: TeacherInput,
                 autocast: Optional[str] = None,
                 channels_last: bool = False):
        self.model = model
        self.kind = kind
        self.tap = tap
        self.teacher_input = teacher_input
        self.autocast = autocast
        self.channels_last = channels_last

    def _context(self, inputs: Tensor):
        if self.autocast is None:
            return torch.autocast(inputs.device.type, enabled=False)
        return torch.autocast(inputs.device.type,
                              dtype=AUTOCAST_DTYPES[self.autocast])

    def _inputs(self, inputs: Tensor, data_samples: Optional[list]) -> Tensor:
        inputs = self.teacher_input(inputs, data_samples)
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return inputs

    @torch.no_grad()
    def logits(self, inputs: Tensor,
               data_samples: Optional[list] = None) -> Tensor:
        """The teacher's float32 class logits for the student's
        preprocessed ``inputs``."""
        inputs = self._inputs(inputs, data_samples)
        with self.tap, self._context(inputs):
            forward_to_logits(self.model, self.kind, self.tap, inputs,
                              data_samples)
        return self.tap.logits.float()

    @torch.no_grad()
    def predict(self, inputs: Tensor,
                data_samples: Optional[list] = None) -> list:
        """The teacher's predictions, written into fresh samples that carry
        only the metainfo of ``data_samples``."""
        inputs = self._inputs(inputs, data_samples)
        with self._context(inputs):
            return self.model.predict(inputs, metainfo_copies(data_samples))
