"""What the distiller derives from, and checks about, the models and
losses it is given, before anything trains: the task of each model, its
class count, the student's ignore label, whether the student can be
trained, the distillation losses built from their configs, and the
load-state-dict hook that accepts plain student checkpoints."""
import copy
import logging
from typing import List, Optional

import torch.nn as nn
from mmengine.logging import print_log

from mmrankkd.registry import MODELS
from .checkpoint import STUDENT_PREFIX
from .logit_taps import LogitTap

# mmpretrain heads whose distilled (two-token) form mmpretrain refuses to
# train, with mmpretrain's reason. (DeiT's trains: .distillation_token.)
_UNTRAINABLE_HEADS = {
    'EfficientFormerClsHead': 'MMPretrain doesn\'t support to train the '
    'distilled version EfficientFormer',
    'LeViTClsHead': 'MMPretrain doesn\'t support training in distillation '
    'mode',
}


def _host_bases():
    """(segmentor base, classifier base) classes of the installed hosts
    (None for a host that is not installed)."""
    try:
        from mmseg.models.segmentors import BaseSegmentor
    except ImportError:  # pragma: no cover - mmseg not installed
        BaseSegmentor = None
    try:
        from mmpretrain.models.classifiers import ImageClassifier
    except ImportError:  # pragma: no cover - mmpretrain not installed
        ImageClassifier = None
    return BaseSegmentor, ImageClassifier


def model_kind(model: nn.Module, role: str) -> str:
    """'seg' for mmseg segmentors, 'cls' for mmpretrain classifiers."""
    segmentor, classifier = _host_bases()
    if segmentor is not None and isinstance(model, segmentor) and getattr(
            model, 'decode_head', None) is not None:
        return 'seg'
    if classifier is not None and isinstance(model, classifier) and getattr(
            model, 'head', None) is not None:
        return 'cls'
    raise TypeError(
        f'model.{role} is a {type(model).__name__}; LogitDistiller supports '
        'mmseg segmentors with a decode_head (EncoderDecoder, '
        'CascadeEncoderDecoder, ...) and mmpretrain ImageClassifiers with a '
        'head.')


def num_classes(model: nn.Module, tap: LogitTap, kind: str):
    """The class count a model predicts, where its modules say so (else
    None: checked on the first batch)."""
    if kind == 'cls':
        for module in (model.head, getattr(model, 'backbone', None)):
            if getattr(module, 'num_classes', None):
                return int(module.num_classes)
        return None
    head = tap.module
    value = getattr(head, 'out_channels', None) or getattr(
        head, 'num_classes', None)
    return int(value) if value else None


def check_trainable_student(model: nn.Module, kind: str) -> None:
    if kind != 'cls':
        return
    head = model.head
    names = [c.__name__ for c in type(head).__mro__]
    for name, reason in _UNTRAINABLE_HEADS.items():
        distilled = getattr(head, 'distillation', getattr(head, 'dist', True))
        if name in names and distilled:
            raise ValueError(
                f'model.student has a {type(head).__name__} with a '
                f'distillation token: {reason}. Fix: use the model\'s '
                'non-distilled head as the student (e.g. '
                "head=dict(type='LinearClsHead'/'VisionTransformerClsHead', "
                "...) or distillation=False); as a teacher it is fine.")


def check_batch_augments_kept(student: nn.Module,
                              preprocessor: nn.Module) -> None:
    """Refuse a distiller preprocessor that silently drops the student's
    sample mixing: mmpretrain turns a classifier's ``train_cfg.augments``
    (Mixup/CutMix) into its data preprocessor's ``batch_augments``, and a
    top-level ``model.data_preprocessor`` replaces that preprocessor."""
    own = getattr(student.data_preprocessor, 'batch_augments', None)
    if own is not None and preprocessor is not student.data_preprocessor \
            and getattr(preprocessor, 'batch_augments', None) is None:
        names = ', '.join(type(a).__name__
                          for a in getattr(own, 'augments', [])) or 'mixing'
        raise ValueError(
            f'The student mixes samples ({names}, from its '
            'train_cfg.augments) in its data '
            'preprocessor, but model.data_preprocessor replaces that '
            'preprocessor without them: training would silently drop the '
            'mixing. Fix: add batch_augments=dict(augments=[...]) to '
            'model.data_preprocessor, or remove model.data_preprocessor '
            'to use the student\'s.')


def student_ignore_index(student: nn.Module, kind: str) -> Optional[int]:
    """The label value the student's decode head ignores (None for
    classifiers). One place decides it: the losses and the agreement
    metric follow it, whichever module ``student_tap`` reads logits from."""
    if kind != 'seg':
        return None
    heads = student.decode_head
    heads = list(heads) if isinstance(heads, nn.ModuleList) else [heads]
    values = {getattr(h, 'ignore_index', None) for h in heads}
    values.discard(None)
    if len(values) > 1:
        raise ValueError(
            f'The student\'s decode heads ignore different labels '
            f'{sorted(values)}. Fix: give every decode head the same '
            'ignore_index.')
    if not values:
        print_log(
            f'The student\'s {type(heads[0]).__name__} declares no '
            'ignore_index: distillation losses ignore label 255 (mmseg\'s '
            'default).', logger='current', level=logging.WARNING)
        return 255
    return int(values.pop())


def add_student_prefix(module, state_dict, prefix, *args) -> None:
    """Load-state-dict pre-hook: a plain student state dict (e.g.
    ``load_from=<student.pth>``) gets the ``student.`` prefix."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    if keys and not any(
            k[len(prefix):].startswith((STUDENT_PREFIX, 'data_preprocessor.',
                                        'distill_losses.', 'teacher_input.'))
            for k in keys):
        for k in keys:
            state_dict[prefix + STUDENT_PREFIX + k[len(prefix):]] = \
                state_dict.pop(k)


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
            lookup = f'mmrankkd.{loss_type}'
        else:
            lookup = loss_type
        if not isinstance(lookup, str) or MODELS.get(lookup) is None:
            raise KeyError(
                f'Unknown distill loss type "{loss_type}" for "{name}". '
                f'Available in mmrankkd: {", ".join(_available_losses())}'
                " (use e.g. type='mmrankkd.KDLoss').")
        losses[name] = MODELS.build(cfg)
    return losses
