"""Logit knowledge distillation as an MMEngine model.

``LogitDistiller`` wraps an OpenMMLab student (an mmseg segmentor or an
mmpretrain ``ImageClassifier``) and a frozen teacher of the same task. Each
training step runs the student **once** (backbone, head), computes the
student's own losses from those logits and the distillation losses between
the student's and the teacher's class logits.

The teacher is deliberately *not* a registered submodule: it is invisible to
``state_dict()`` (checkpoints hold the student only), to ``parameters()``
(the optimizer the runner builds never sees it), to the runner's
``init_weights()`` and to DDP. It still follows ``.to()`` / ``.cuda()``
and stays in eval mode.
"""
import copy
import os.path as osp
import re
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel, revert_sync_batchnorm
from mmengine.runner.checkpoint import _load_checkpoint
from mmengine.structures import BaseDataElement

from mmrankkd.registry import MODELS
from .model_source import ModelSource, build_model_from_source, \
    resolve_model_cfg

_URL_RE = re.compile(r'^([a-z0-9+\-]+:)?//|^(open-mmlab|torchvision|'
                     r'mmcls|openmmlab|modelzoo):', re.I)
_MAX_KEYS_SHOWN = 10


def _model_kind(model: nn.Module, role: str) -> str:
    """'seg' for mmseg segmentors, 'cls' for mmpretrain classifiers."""
    if getattr(model, 'decode_head', None) is not None and hasattr(
            model, 'extract_feat'):
        return 'seg'
    head = getattr(model, 'head', None)
    if head is not None and hasattr(head, '_get_loss') and hasattr(
            model, 'extract_feat'):
        return 'cls'
    raise TypeError(
        f'model.{role} is a {type(model).__name__}; LogitDistiller supports '
        'mmseg segmentors with a decode_head (e.g. EncoderDecoder) and '
        'mmpretrain classifiers with a classification head (e.g. '
        'ImageClassifier).')


def _num_classes(model: nn.Module, kind: str) -> int:
    if kind == 'seg':
        head = model.decode_head
        return int(getattr(head, 'out_channels', head.num_classes))
    return int(model.head.num_classes)


def _fmt_keys(keys: List[str]) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f', ... (+{more} more)' if more > 0 else '')


def load_teacher_checkpoint(teacher: nn.Module, ckpt: str) -> dict:
    """Load ``ckpt`` into ``teacher`` strictly, with errors that list the
    mismatching keys.

    Accepts plain checkpoints (``state_dict`` or a bare state dict), DDP
    prefixes (``module.``) and mmrankkd distillation checkpoints (keys under
    ``student.``, used when a distilled model becomes a teacher).

    Returns:
        dict: The checkpoint's ``meta`` (may be empty).
    """
    if not isinstance(ckpt, str) or not ckpt:
        raise ValueError(
            'model.teacher_ckpt is required: the path (or URL) of the trained '
            'teacher checkpoint. Fix: set model.teacher_ckpt in the config or '
            'pass --cfg-options model.teacher_ckpt=/path/to/teacher.pth')
    if not _URL_RE.match(ckpt) and not osp.isfile(osp.expanduser(ckpt)):
        raise FileNotFoundError(
            f'Teacher checkpoint "{ckpt}" does not exist. Fix: train or '
            'download the teacher and set model.teacher_ckpt (or pass '
            '--cfg-options model.teacher_ckpt=/path/to/teacher.pth).')
    checkpoint = _load_checkpoint(osp.expanduser(ckpt), map_location='cpu')
    if not isinstance(checkpoint, dict):
        raise ValueError(f'Teacher checkpoint "{ckpt}" holds a '
                         f'{type(checkpoint).__name__}, not a state dict.')
    state = checkpoint.get('state_dict', checkpoint)
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    if any(k.startswith('student.') for k in state):
        state = {k[len('student.'):]: v for k, v in state.items()
                 if k.startswith('student.')}
    expected = teacher.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shape = [f'{k}: checkpoint {tuple(state[k].shape)} vs teacher '
             f'{tuple(v.shape)}' for k, v in expected.items()
             if k in state and hasattr(state[k], 'shape')
             and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shape:
        lines = [f'Teacher checkpoint "{ckpt}" does not fit model.teacher '
                 f'({type(teacher).__name__}).']
        if missing:
            lines.append(f'  missing keys ({len(missing)}): '
                         f'{_fmt_keys(missing)}')
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): '
                         f'{_fmt_keys(unexpected)}')
        if shape:
            lines.append(f'  shape mismatches ({len(shape)}): '
                         + '; '.join(shape[:_MAX_KEYS_SHOWN]))
        lines.append('Fix: make model.teacher the architecture this '
                     'checkpoint was trained with (depth, channels, '
                     'num_classes), or point model.teacher_ckpt at the '
                     'checkpoint of this teacher.')
        raise ValueError('\n'.join(lines))
    teacher.load_state_dict(state, strict=True)
    return checkpoint.get('meta', {}) or {}


def _available_losses() -> List[str]:
    MODELS.import_from_location()
    return sorted(k for k in MODELS.module_dict if k.endswith('Loss'))


def build_distill_losses(cfgs: Optional[dict]) -> nn.ModuleDict:
    """Build ``distill_losses`` (name -> loss config) with clear errors."""
    if not cfgs:
        raise ValueError(
            'model.distill_losses is empty. Fix: name at least one loss, e.g.'
            " distill_losses=dict(loss_kd=dict(type='mmrankkd.KDLoss'))."
            f' Available: {", ".join(_available_losses())}')
    losses = nn.ModuleDict()
    for name, cfg in cfgs.items():
        if not name.startswith('loss_'):
            raise ValueError(
                f'Distill loss name "{name}" must start with "loss_" (MMEngine'
                ' only sums log entries whose key contains "loss"). Fix: '
                f'rename it to "loss_{name}".')
        if isinstance(cfg, nn.Module):
            losses[name] = cfg
            continue
        cfg = copy.deepcopy(dict(cfg))
        loss_type = cfg.get('type')
        # Bare names are looked up in mmrankkd, not the default scope.
        if isinstance(loss_type, str) and '.' not in loss_type:
            cfg.setdefault('_scope_', 'mmrankkd')
        try:
            losses[name] = MODELS.build(cfg)
        except KeyError as e:
            if 'not in' in str(e) and 'registry' in str(e):
                raise KeyError(
                    f'Unknown distill loss type "{loss_type}" for "{name}". '
                    f'Available in mmrankkd: {", ".join(_available_losses())}'
                    " (use e.g. type='mmrankkd.KDLoss').") from None
            raise
    return losses


@MODELS.register_module()
class LogitDistiller(BaseModel):
    """Distil a teacher's class logits into a student.

    Args:
        student (dict | str): The student: a model config dict,
            ``'mmseg::<config>'`` / ``'mmpretrain::<config>'``, or a local
            config file (its ``model`` is used). An mmseg segmentor or an
            mmpretrain ``ImageClassifier``.
        teacher (dict | str): The teacher, in the same forms and of the same
            task and class count as the student.
        teacher_ckpt (str): The teacher's trained checkpoint (local file, or
            URL where the network is reachable). Required; loaded strictly.
        distill_losses (dict[str, dict]): ``name -> loss config``. Names must
            start with ``loss_``; each is logged as ``distill.<name>``. A
            loss is called ``loss(student_logits, teacher_logits, labels)``
            and returns a scalar already scaled by its ``loss_weight``.
        student_task_loss (bool): Keep the student's own losses (decode/aux
            cross-entropy, classifier loss). False drops them (e.g. when the
            distill loss replaces CE, as Plackett-Luce does); the student's
            auxiliary head is then frozen since nothing trains it.
            Defaults to True.
        resize_teacher_logits (bool): For dense logits of different sizes,
            bilinearly resize the teacher's logits to the student's (logged
            once). If False a size mismatch is an error. Defaults to True.
        data_preprocessor (dict, optional): Defaults to the student's.
        init_cfg (dict, optional): Initialisation config; the teacher is
            never initialised (it is loaded from ``teacher_ckpt``).
    """

    def __init__(self,
                 student: ModelSource,
                 teacher: ModelSource,
                 teacher_ckpt: Optional[str] = None,
                 distill_losses: Optional[dict] = None,
                 student_task_loss: bool = True,
                 resize_teacher_logits: bool = True,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        losses = build_distill_losses(distill_losses)
        student_model = build_model_from_source(student, 'student')
        if data_preprocessor is None:
            data_preprocessor = student_model.data_preprocessor
        elif isinstance(data_preprocessor, dict):
            _, scope = resolve_model_cfg(student, 'student')
            data_preprocessor = copy.deepcopy(dict(data_preprocessor))
            # mmpretrain configs give the top-level preprocessor no type.
            data_preprocessor.setdefault(
                'type', 'SegDataPreProcessor' if _model_kind(
                    student_model, 'student') == 'seg' else
                'ClsDataPreprocessor')
            if scope is not None:
                data_preprocessor.setdefault('_scope_', scope)
            data_preprocessor = MODELS.build(data_preprocessor)
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self.kind = _model_kind(student_model, 'student')

        teacher_model = build_model_from_source(teacher, 'teacher')
        if _model_kind(teacher_model, 'teacher') != self.kind:
            raise TypeError(
                f'model.student is a {type(student_model).__name__} but '
                f'model.teacher is a {type(teacher_model).__name__}: both '
                'must be segmentors or both classifiers.')
        n_s = _num_classes(student_model, self.kind)
        n_t = _num_classes(teacher_model, self.kind)
        if n_s != n_t:
            raise ValueError(
                f'Class count mismatch: the teacher predicts {n_t} classes, '
                f'the student {n_s}. Fix: give both the same num_classes '
                '(decode_head/auxiliary_head.num_classes for segmentors, '
                'head.num_classes for classifiers).')
        self.num_classes = n_s
        # Eval-mode teacher: SyncBN behaves as BN, so plain BN works anywhere.
        teacher_model = revert_sync_batchnorm(teacher_model)
        self.teacher_meta = load_teacher_checkpoint(teacher_model,
                                                    teacher_ckpt)
        for p in teacher_model.parameters():
            p.requires_grad_(False)
        teacher_model.eval()
        # Not a registered submodule: see the module docstring.
        object.__setattr__(self, '_teacher', teacher_model)
        self.teacher_ckpt = teacher_ckpt

        self.distill_losses = losses
        self.student_task_loss = student_task_loss
        self.resize_teacher_logits = resize_teacher_logits
        self._resize_logged = False
        if not student_task_loss and self.kind == 'seg' and getattr(
                student_model, 'with_auxiliary_head', False):
            for p in student_model.auxiliary_head.parameters():
                p.requires_grad_(False)
            print_log(
                'student_task_loss=False: the student\'s auxiliary head '
                'gets no loss and is frozen.', logger='current')
        # Accept plain student checkpoints (load_from=<student.pth>).
        self._register_load_state_dict_pre_hook(self._add_student_prefix)

    # ------------------------------------------------------------------
    # The teacher: hidden from state_dict/parameters/init_weights/DDP.
    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher (not part of ``state_dict()``)."""
        return self.__dict__['_teacher']

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        teacher = self.__dict__.get('_teacher')
        if teacher is not None:
            teacher._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True) -> 'LogitDistiller':
        """Set the student's mode; the teacher always stays in eval."""
        super().train(mode)
        self.teacher.eval()
        return self

    def extra_repr(self) -> str:
        return (f'teacher={type(self.teacher).__name__} (frozen, not in '
                f'state_dict), teacher_ckpt={self.teacher_ckpt!r}')

    @staticmethod
    def _add_student_prefix(state_dict, prefix, *args, **kwargs):
        keys = [k for k in state_dict if k.startswith(prefix)]
        if keys and not any(
                k[len(prefix):].startswith(('student.', 'data_preprocessor.',
                                            'distill_losses.'))
                for k in keys):
            for k in keys:
                state_dict[prefix + 'student.' + k[len(prefix):]] = \
                    state_dict.pop(k)

    # ------------------------------------------------------------------
    def forward(self,
                inputs: torch.Tensor,
                data_samples: Optional[list] = None,
                mode: str = 'tensor'):
        """``loss`` distils; ``predict`` and ``tensor`` run the student
        only."""
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode in ('predict', 'tensor'):
            return self.student(inputs, data_samples, mode=mode)
        raise RuntimeError(f'Invalid mode "{mode}". Only supports loss, '
                           'predict and tensor mode')

    def _logits(self, model: nn.Module, inputs: torch.Tensor):
        """Features and class logits (dense heads: before the final
        resize)."""
        feats = model.extract_feat(inputs)
        if self.kind == 'seg':
            return feats, model.decode_head.forward(feats)
        return feats, model.head(feats)

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's class logits for preprocessed ``inputs``."""
        return self._logits(self.teacher, inputs)[1]

    @torch.no_grad()
    def predict_teacher(self, inputs: torch.Tensor,
                        data_samples: Optional[list] = None) -> list:
        """The teacher's predictions on a *copy* of ``data_samples``
        (mmseg/mmpretrain write predictions into the samples they get)."""
        return self.teacher.predict(inputs, copy.deepcopy(data_samples))

    def _labels(self, data_samples: list, logits: torch.Tensor):
        """Labels at the logits' resolution, or None if the samples have
        none."""
        if not data_samples:
            return None
        if self.kind == 'seg':
            if not all('gt_sem_seg' in ds for ds in data_samples):
                return None
            labels = torch.stack(
                [ds.gt_sem_seg.data for ds in data_samples]).to(logits.device)
            if labels.shape[-2:] != logits.shape[-2:]:
                labels = F.interpolate(
                    labels.float(), size=logits.shape[-2:], mode='nearest')
            return labels.squeeze(1).long()
        if not all('gt_label' in ds for ds in data_samples):
            return None
        return torch.cat([ds.gt_label for ds in data_samples]).to(
            logits.device).long()

    def _match_teacher(self, s_logits: torch.Tensor,
                       t_logits: torch.Tensor) -> torch.Tensor:
        if t_logits.shape[1] != s_logits.shape[1]:
            raise ValueError(
                f'Teacher logits have {t_logits.shape[1]} classes, student '
                f'logits {s_logits.shape[1]}: they must match.')
        if s_logits.dim() == 4 and t_logits.shape[-2:] != s_logits.shape[-2:]:
            if not self.resize_teacher_logits:
                raise ValueError(
                    f'Teacher logits are {tuple(t_logits.shape[-2:])}, '
                    f'student logits {tuple(s_logits.shape[-2:])}. Fix: set '
                    'model.resize_teacher_logits=True.')
            if not self._resize_logged:
                print_log(
                    'Resizing teacher logits from '
                    f'{tuple(t_logits.shape[-2:])} to the student\'s '
                    f'{tuple(s_logits.shape[-2:])} (bilinear).',
                    logger='current')
                self._resize_logged = True
            t_logits = F.interpolate(
                t_logits, size=s_logits.shape[-2:], mode='bilinear',
                align_corners=getattr(self.student, 'align_corners', False))
        return t_logits.to(s_logits.dtype)

    def loss(self, inputs: torch.Tensor,
             data_samples: list) -> Dict[str, torch.Tensor]:
        """Student losses (``decode.*``, ``aux.*``, ``cls.*``) plus
        distillation losses (``distill.<name>``), from one student
        forward."""
        student = self.student
        feats, s_logits = self._logits(student, inputs)
        losses: Dict[str, torch.Tensor] = {}
        if self.student_task_loss:
            if self.kind == 'seg':
                head_losses = student.decode_head.loss_by_feat(
                    s_logits, data_samples)
                losses.update(
                    {f'decode.{k}': v for k, v in head_losses.items()})
                if student.with_auxiliary_head:
                    aux = student.auxiliary_head
                    heads = aux if isinstance(aux, nn.ModuleList) else [aux]
                    for i, head in enumerate(heads):
                        tag = 'aux' if len(heads) == 1 and not isinstance(
                            aux, nn.ModuleList) else f'aux_{i}'
                        for k, v in head.loss(feats, data_samples,
                                              student.train_cfg).items():
                            losses[f'{tag}.{k}'] = v
            else:
                for k, v in student.head._get_loss(s_logits,
                                                   data_samples).items():
                    losses[f'cls.{k}'] = v
        t_logits = self._match_teacher(s_logits, self.teacher_logits(inputs))
        labels = self._labels(data_samples, s_logits)
        for name, loss in self.distill_losses.items():
            needs = getattr(loss, 'requires_labels', False)
            if needs and labels is None:
                raise ValueError(
                    f'distill loss "{name}" ({type(loss).__name__}) needs '
                    'labels but the data samples carry none (gt_sem_seg / '
                    'gt_label).')
            if needs or self.kind == 'seg':
                value = loss(s_logits, t_logits, labels)
            else:
                value = loss(s_logits, t_logits)
            losses[f'distill.{name}'] = value
        return losses


def attach_teacher_predictions(student_samples: List[BaseDataElement],
                               teacher_samples: List[BaseDataElement]):
    """Copy the teacher's predictions onto the student's samples as
    ``teacher_pred_sem_seg`` / ``teacher_seg_logits`` (segmentation) or
    ``teacher_pred_score`` / ``teacher_pred_label`` (classification)."""
    for s, t in zip(student_samples, teacher_samples):
        for field in ('pred_sem_seg', 'seg_logits', 'pred_score',
                      'pred_label'):
            if field in t:
                s.set_field(getattr(t, field), f'teacher_{field}')
    return student_samples
