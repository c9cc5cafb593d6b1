"""Logit knowledge distillation as an MMEngine model.

``LogitDistiller`` wraps an OpenMMLab student (any mmseg segmentor or
mmpretrain ``ImageClassifier``) and a frozen teacher of the same task. Each
training step:

1. runs the student's own ``loss()`` once (every head, auxiliary head,
   cascade stage, point sampling and query matching stays the host's), and
   reads the student's class logits from that same forward with a hook
   (:mod:`.logit_taps` says which module, per family);
2. maps the batch to the teacher's own preprocessing (:mod:`.teacher_input`)
   and reads the teacher's class logits the same way, under ``no_grad`` in
   eval mode;
3. computes each distillation loss on the two logits (and the labels, for
   the losses that need them).

The teacher is deliberately *not* a registered submodule: it is invisible to
``state_dict()`` (checkpoints hold the student only), to ``parameters()``
(the optimizer the runner builds never sees it), to the runner's
``init_weights()`` and to DDP. It still follows ``.to()`` / ``.cuda()``
and stays in eval mode.
"""
import copy
import logging
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MessageHub, print_log
from mmengine.model import BaseModel, revert_sync_batchnorm

from mmrankkd.registry import MODELS
from .checkpoint import load_teacher_checkpoint, read_teacher_checkpoint
from .distillation_token import (distillation_token_step,
                                 has_distillation_token)
from .logit_taps import LogitTap
from .model_checks import (add_student_prefix, build_distill_losses,
                           check_batch_augments_kept,
                           check_trainable_student, model_kind, num_classes,
                           student_ignore_index)
from .model_source import ModelSource, build_resolved, resolve_model_cfg
from .teacher import AUTOCAST_DTYPES, LiveTeacher, attach_teacher_predictions
from .teacher_input import TeacherInput
from .teacher_store import build_stored_teacher
from .views import VIEW_NAMES, check_views, is_multi_view, preprocess_views
from .unused_parameters import (check_first_step, freeze,
                                probe_unreached_parameters)

@MODELS.register_module()
class LogitDistiller(BaseModel):
    """Distil a teacher's class logits into a student.

    Args:
        student (dict | str): The student: a model config dict,
            ``'mmseg::<config>'`` / ``'mmpretrain::<config>'``, or a local
            config file (its ``model`` is used). Any mmseg segmentor or
            mmpretrain ``ImageClassifier``.
        teacher (dict | str): The teacher, in the same forms and of the same
            task and class count as the student.
        teacher_ckpt (str): The teacher's trained checkpoint (local file, or
            URL where the network is reachable). Required; loaded strictly.
        distill_losses (dict[str, dict]): ``name -> loss config``. Names must
            start with ``loss_``; each is logged as ``distill.<name>``. A
            loss is called ``loss(student_logits, teacher_logits, labels)``
            and returns a scalar already scaled by its ``loss_weight``.
        student_task_loss (bool): Keep the student's own losses (the host's
            ``loss()`` keys: ``decode.*``, ``aux.*``, ``decode_<i>.*``;
            classifiers' under ``cls.*``). False drops them (e.g. when the
            distill loss replaces CE, as Plackett-Luce does); every student
            parameter that then gets no gradient (auxiliary heads, point
            heads, side branches) is frozen and named in the log when the
            distiller is built (:mod:`.unused_parameters`). Defaults to
            True.
        resize_teacher_logits (bool): For dense logits of different sizes,
            bilinearly resize the teacher's logits to the student's (logged
            once). If False a size mismatch is an error. Defaults to True.
        teacher_data_preprocessor (str | dict, optional): How the teacher's
            input is made from the preprocessed batch. None (default): the
            teacher's own preprocessing, from its config (its model's
            ``data_preprocessor``, or its config file's top-level one); a
            teacher config without one gets the student's inputs (logged).
            ``'student'``: the student's inputs unchanged (no mapping).
            A dict: this preprocessor config.
        student_tap (dict, optional): ``dict(module=..., index=...)``: the
            module whose output holds the student's class logits, for custom
            heads (see :mod:`mmrankkd.models.distillers.logit_taps`).
        teacher_tap (dict, optional): The same for the teacher.
        teacher_autocast (str, optional): ``'bf16'`` or ``'fp16'``: run the
            teacher's forward under ``torch.autocast`` (its logits are then
            upcast to float32). Defaults to None (full precision).
        teacher_channels_last (bool): Run the teacher in channels_last
            memory format. Defaults to False.
        teacher_store (str | dict, optional): Read the teacher's training
            logits from a store built by ``tools/build_teacher_store.py``
            (a directory, or ``dict(path=..., spot_check_interval=...,
            on_missing=...)``; see :mod:`.teacher_store`) instead of running
            the teacher; the live teacher still serves validation. Defaults
            to None (the live teacher).
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
                 teacher_data_preprocessor: Optional[Union[str, dict]] = None,
                 student_tap: Optional[dict] = None,
                 teacher_tap: Optional[dict] = None,
                 teacher_autocast: Optional[str] = None,
                 teacher_channels_last: bool = False,
                 teacher_store: Optional[Union[str, dict]] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        # Cheap checks first: nothing is built for a config that cannot run.
        if teacher_autocast not in (None, *AUTOCAST_DTYPES):
            raise ValueError(
                f'model.teacher_autocast must be None, "bf16" or "fp16", got '
                f'{teacher_autocast!r}.')
        losses = build_distill_losses(distill_losses)
        # Read (download) the teacher's checkpoint once, before building.
        teacher_checkpoint = read_teacher_checkpoint(teacher_ckpt)

        student_cfg, student_scope = resolve_model_cfg(student, 'student')
        student_model = build_resolved(student_cfg, student_scope)
        kind = model_kind(student_model, 'student')
        check_trainable_student(student_model, kind)
        if data_preprocessor is None:
            data_preprocessor = student_model.data_preprocessor
        elif isinstance(data_preprocessor, dict):
            data_preprocessor = copy.deepcopy(dict(data_preprocessor))
            # mmpretrain configs give the top-level preprocessor no type.
            data_preprocessor.setdefault(
                'type', 'SegDataPreProcessor'
                if kind == 'seg' else 'ClsDataPreprocessor')
            if student_scope is not None:
                data_preprocessor.setdefault('_scope_', student_scope)
            data_preprocessor = MODELS.build(data_preprocessor)
        check_batch_augments_kept(student_model, data_preprocessor)
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = student_model
        self.kind = kind

        teacher_cfg, teacher_scope = resolve_model_cfg(teacher, 'teacher')
        teacher_model = build_resolved(teacher_cfg, teacher_scope)
        if model_kind(teacher_model, 'teacher') != kind:
            raise TypeError(
                f'model.student is a {type(student_model).__name__} but '
                f'model.teacher is a {type(teacher_model).__name__}: both '
                'must be segmentors or both classifiers.')
        self.student_tap = LogitTap(student_model, kind, 'student',
                                    **(student_tap or {}))
        teacher_tap = LogitTap(teacher_model, kind, 'teacher',
                               **(teacher_tap or {}))
        n_s = num_classes(student_model, self.student_tap, kind)
        n_t = num_classes(teacher_model, teacher_tap, kind)
        if n_s and n_t and n_s != n_t:
            raise ValueError(
                f'Class count mismatch: the teacher predicts {n_t} classes, '
                f'the student {n_s}. Fix: give both the same num_classes '
                '(decode_head/auxiliary_head.num_classes for segmentors, '
                'head.num_classes for classifiers).')
        self.num_classes = n_s or n_t
        # Eval-mode teacher: SyncBN behaves as BN, so plain BN works anywhere.
        teacher_model = revert_sync_batchnorm(teacher_model)
        self.teacher_meta = load_teacher_checkpoint(
            teacher_model, teacher_ckpt, teacher_checkpoint)
        del teacher_checkpoint
        for p in teacher_model.parameters():
            p.requires_grad_(False)
        teacher_model.eval()
        if teacher_channels_last:
            teacher_model.to(memory_format=torch.channels_last)
        # Not a registered submodule: see the module docstring.
        object.__setattr__(self, '_teacher', teacher_model)
        self.teacher_ckpt = teacher_ckpt
        self.teacher_cfg = teacher_cfg
        self.teacher_input = self._build_teacher_input(
            teacher_data_preprocessor, teacher_cfg)
        #: Where the teacher's logits come from (:mod:`.teacher`).
        self.teacher_source = LiveTeacher(
            teacher_model, kind, teacher_tap, self.teacher_input,
            teacher_autocast, teacher_channels_last)
        num_views = self._views_of(losses)
        if teacher_store is not None and num_views > 1:
            raise ValueError(
                'model.teacher_store with a two-view loss (MLKD): a store '
                'keys the teacher\'s logits by sample and view, and both '
                'views of a MultiView sample share those keys. Fix: train '
                'two-view losses with the live teacher (remove '
                'teacher_store).')
        self.distill_losses = losses
        if teacher_store is not None:  # the store replaces it in training
            self.teacher_source = build_stored_teacher(teacher_store, self)
        #: Views of each image the losses take (2: MLKD's weak + strong).
        self.num_views = num_views
        #: A DeiT student: class token on the labels, distillation token
        #: on the teacher (:mod:`.distillation_token`).
        self.distillation_token = has_distillation_token(student_model, kind)
        if self.distillation_token:
            if student_tap:
                raise ValueError(
                    'model.student_tap is set, but a DeiT student\'s '
                    'distill losses always get its distillation token\'s '
                    'logits (head.layers.head_dist). Fix: remove '
                    'student_tap.')
            if not student_task_loss:
                raise ValueError(
                    'model.student_task_loss=False with a DeiT '
                    '(distillation-token) student: nothing would train its '
                    'class-token head, which its predictions still average '
                    'in. Fix: keep student_task_loss=True (the class token '
                    'learns from the labels, as in the DeiT paper).')
            if self.num_views > 1:
                raise ValueError(
                    'A DeiT (distillation-token) student cannot take '
                    'two-view losses (MLKD). Fix: use one-view losses, e.g. '
                    "mmrankkd.DeiTDistillationLoss.")
            print_log(
                'DeiT student: its head\'s loss trains the class token, the '
                'distill losses get the distillation token\'s logits; it '
                'predicts with their average.', logger='current')
        self._set_ignore_index()
        self._check_batch_augments()
        self.student_task_loss = student_task_loss
        self.resize_teacher_logits = resize_teacher_logits
        self._resize_logged = False
        #: Set by the distill val/test loops when a metric needs the
        #: teacher's predictions too.
        self.predict_with_teacher = False
        # Without the task loss, parameters off the logits' path (aux
        # heads, side branches) get no gradient: frozen and named now,
        # before a runner wraps the model in DDP (:mod:`.unused_parameters`).
        self._first_step_checked = student_task_loss
        if not student_task_loss:
            freeze(probe_unreached_parameters(student_model, kind,
                                              self.student_tap),
                   'student_task_loss=False')
        #: Set by ``mmrankkd.ValueCheckHook`` when a runner trains with it.
        self.value_checks_flushed = False
        self._unflushed_warned = False
        # Accept plain student checkpoints (load_from=<student.pth>).
        self.register_load_state_dict_pre_hook(add_student_prefix)

    # ------------------------------------------------------------------
    # Build-time helpers.
    def _build_teacher_input(self, setting, teacher_cfg) -> TeacherInput:
        student_pre = self.data_preprocessor
        if setting == 'student':
            return TeacherInput(student_pre, student_pre)
        if isinstance(setting, dict):
            cfg = copy.deepcopy(dict(setting))
            cfg.setdefault('type', 'SegDataPreProcessor' if self.kind ==
                           'seg' else 'ClsDataPreprocessor')
            cfg.setdefault('_scope_',
                           'mmseg' if self.kind == 'seg' else 'mmpretrain')
            teacher_pre = MODELS.build(cfg)
        elif setting is None:
            if teacher_cfg.get('data_preprocessor') is None:
                print_log(
                    'The teacher config declares no data_preprocessor: the '
                    'teacher gets the student\'s inputs. Set model.teacher_'
                    'data_preprocessor if it was trained with another '
                    'normalisation.', logger='current')
                return TeacherInput(student_pre, student_pre)
            teacher_pre = self.teacher.data_preprocessor
        else:
            raise ValueError(
                'model.teacher_data_preprocessor must be None (the teacher\'s '
                "own), 'student' or a preprocessor config dict, got "
                f'{setting!r}.')
        mapping = TeacherInput(student_pre, teacher_pre)
        print_log(f'The teacher gets {mapping.describe()}.', logger='current')
        return mapping

    def _set_ignore_index(self) -> None:
        """Dense losses ignore the student's ignore label
        (:attr:`ignore_index`); classifier labels have no ignore value
        (class 255 is a class)."""
        self.ignore_index = student_ignore_index(self.student, self.kind)
        head = self.student.decode_head if self.kind == 'seg' else None
        for name, loss in self.distill_losses.items():
            if not hasattr(loss, 'ignore_index'):
                continue
            if self.kind == 'cls':
                if loss.ignore_index is not None:
                    raise ValueError(
                        f'distill loss "{name}" sets ignore_index='
                        f'{loss.ignore_index}, but classification labels '
                        'have no ignore value: samples of that class would '
                        'get no gradient. Fix: remove ignore_index.')
                continue
            head_ignore = self.ignore_index
            if loss.ignore_index is None:
                loss.ignore_index = head_ignore
            elif loss.ignore_index != head_ignore:
                raise ValueError(
                    f'distill loss "{name}" sets ignore_index='
                    f'{loss.ignore_index} but the student\'s '
                    f'{type(head).__name__} ignores {head_ignore}. Fix: '
                    'remove ignore_index from the loss (it follows the '
                    'head) or make them agree.')

    def _views_of(self, losses: nn.ModuleDict) -> int:
        """1, or 2 where a loss takes two views (``num_views = 2``)."""
        views = {getattr(loss, 'num_views', 1) for loss in losses.values()}
        num_views = max(views)
        if num_views not in (1, 2):
            raise ValueError(f'distill losses with num_views={num_views}: '
                             'only 1 or 2 views are supported.')
        if num_views == 2 and self.kind != 'cls':
            raise ValueError(
                'Two-view losses (MLKD) are for classifiers; the student is '
                'a segmentor. Fix: use a per-pixel loss (KD, DKD, DIST).')
        if num_views == 2 and getattr(self.data_preprocessor,
                                      'batch_augments', None) is not None:
            raise ValueError(
                'Two-view losses (MLKD) run each view as its own batch; '
                'the data preprocessor\'s batch_augments (Mixup/CutMix) '
                'would mix the two views differently. Fix: remove '
                'data_preprocessor.batch_augments.')
        return num_views

    def _check_batch_augments(self) -> None:
        """Label-requiring losses cannot use mixed (Mixup/CutMix) targets:
        refuse rather than silently train on the un-mixed hard label."""
        if getattr(self.data_preprocessor, 'batch_augments', None) is None:
            return
        needs = [n for n, loss in self.distill_losses.items()
                 if getattr(loss, 'requires_labels', False)]
        if needs:
            raise ValueError(
                f'distill losses {needs} need hard labels, but the data '
                'preprocessor mixes samples (batch_augments, e.g. Mixup/'
                'CutMix), whose targets are soft. Fix: remove '
                'data_preprocessor.batch_augments, or use label-free losses '
                '(KD, DIST, BDD, Kendall, CMKD).')

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

    def __deepcopy__(self, memo: dict) -> 'LogitDistiller':
        """A copy that shares the frozen teacher (and its source) instead of
        copying it: EMA hooks deep-copy the model to average the student's
        weights, and a second teacher would only cost memory."""
        memo[id(self.teacher)] = self.teacher
        memo[id(self.teacher_source)] = self.teacher_source
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        for key, value in self.__dict__.items():
            copied.__dict__[key] = copy.deepcopy(value, memo)
        return copied

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

    def teacher_logits(self, inputs: torch.Tensor,
                       data_samples: Optional[list] = None) -> torch.Tensor:
        """The teacher's float32 class logits for the student's preprocessed
        ``inputs``."""
        return self.teacher_source.logits(inputs, data_samples)

    def predict_teacher(self, inputs: torch.Tensor,
                        data_samples: Optional[list] = None) -> list:
        """The teacher's predictions for the student's preprocessed
        ``inputs``, in new samples (``data_samples`` are not modified)."""
        return self.teacher_source.predict(inputs, data_samples)

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper) -> Dict[str, torch.Tensor]:
        """BaseModel's train step; with two-view losses each view of the
        batch is preprocessed on its own (:mod:`.views`)."""
        if self.num_views == 1:
            if isinstance(data, dict) and is_multi_view(data.get('inputs')):
                raise ValueError(
                    'The train pipeline yields several views of each image '
                    '(MultiView) but no distill loss takes more than one. '
                    'Fix: drop MultiView from the pipeline or add a two-view '
                    'loss (mmrankkd.MLKDLoss).')
            return super().train_step(data, optim_wrapper)
        with optim_wrapper.optim_context(self):
            data = preprocess_views(self.data_preprocessor, data,
                                    self.num_views, True)
            losses = self._run_forward(data, mode='loss')
        parsed_losses, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(parsed_losses)
        return log_vars

    def val_step(self, data: Union[dict, tuple, list]) -> list:
        """The student's predictions; with ``predict_with_teacher`` set (by
        the distill loops) the teacher's are attached as ``teacher_*``
        fields."""
        data = self.data_preprocessor(data, False)
        outputs = self(**data, mode='predict')
        if self.predict_with_teacher:
            attach_teacher_predictions(
                outputs, self.predict_teacher(data['inputs'],
                                              data['data_samples']))
        return outputs

    test_step = val_step

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

    def match_teacher(self, s_logits: torch.Tensor,
                      t_logits: torch.Tensor) -> torch.Tensor:
        """The teacher's logits in the student's shape (dense: resized to
        the student's H, W), kept in float32 whatever the student's dtype
        under mixed precision; a named error when the class counts
        differ."""
        if t_logits.shape[1] != s_logits.shape[1] or \
                t_logits.dim() != s_logits.dim():
            raise ValueError(
                f'Teacher logits {tuple(t_logits.shape)} and student logits '
                f'{tuple(s_logits.shape)} differ in class count or layout: '
                'they must predict the same classes. Fix: give both the '
                'same num_classes (or point student_tap/teacher_tap at the '
                'modules producing comparable logits).')
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
        return t_logits

    def loss(self, inputs: torch.Tensor,
             data_samples: list) -> Dict[str, torch.Tensor]:
        """The student's own losses (its ``loss()``'s keys; classifiers'
        under ``cls.``) plus distillation losses (``distill.<name>``), from
        one student forward per view."""
        if self.num_views > 1:
            losses = self._multi_view_loss(inputs, data_samples)
        else:
            losses = self._one_view_loss(inputs, data_samples)
        if not self._first_step_checked and torch.is_grad_enabled():
            self._first_step_checked = True
            check_first_step(self.student, list(losses.values()))
        if not self._unflushed_warned:
            self._warn_if_unflushed()
        return losses

    def _student_forward(self, inputs: torch.Tensor, data_samples: list):
        """The student's own losses and its class logits, from one forward
        (a DeiT student: :func:`distillation_token_step`)."""
        if self.distillation_token:
            task_losses, s_logits = distillation_token_step(
                self.student, inputs, data_samples)
        else:
            with self.student_tap:
                task_losses = self.student.loss(inputs, data_samples)
            s_logits = self.student_tap.logits
        # The losses compute in float32: under mixed precision the student's
        # logits are upcast and the teacher's are never rounded to half.
        return task_losses, s_logits.float()

    def _distill(self, logits: List[torch.Tensor],
                 labels: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Each distill loss on ``logits`` (``[s, t]``, or ``[s_weak,
        t_weak, s_strong, t_strong]``: two-view losses get all four, the
        others the weak view), with the labels where a loss needs them or
        the logits are dense (ignored pixels)."""
        losses: Dict[str, torch.Tensor] = {}
        for name, loss in self.distill_losses.items():
            args = logits if getattr(loss, 'num_views', 1) == 2 else \
                logits[:2]
            needs = getattr(loss, 'requires_labels', False)
            if needs and labels is None:
                raise ValueError(
                    f'distill loss "{name}" ({type(loss).__name__}) needs '
                    'labels but the data samples carry none (gt_sem_seg / '
                    'gt_label).')
            if needs or self.kind == 'seg':
                args = args + [labels]
            losses[f'distill.{name}'] = loss(*args)
        return losses

    def _one_view_loss(self, inputs: torch.Tensor,
                       data_samples: list) -> Dict[str, torch.Tensor]:
        task_losses, s_logits = self._student_forward(inputs, data_samples)
        losses: Dict[str, torch.Tensor] = {}
        if self.student_task_loss:
            prefix = 'cls.' if self.kind == 'cls' else ''
            losses.update({prefix + k: v for k, v in task_losses.items()})
        t_logits = self.match_teacher(
            s_logits, self.teacher_logits(inputs, data_samples))
        losses.update(self._distill([s_logits, t_logits],
                                    self._labels(data_samples, s_logits)))
        return losses

    def _multi_view_loss(self, views: List[torch.Tensor],
                         data_samples: list) -> Dict[str, torch.Tensor]:
        """Two views (weak, strong): the student's own loss on each (the
        strong view's keys under ``cls.strong.``), the teacher on each; a
        two-view loss gets ``(s_weak, t_weak, s_strong, t_strong)``, a
        one-view loss the weak view only."""
        check_views(views, self.num_views)
        losses: Dict[str, torch.Tensor] = {}
        logits = []
        for name, inputs in zip(VIEW_NAMES, views):
            task_losses, s_logits = self._student_forward(inputs,
                                                          data_samples)
            if self.student_task_loss:
                prefix = 'cls.' if name == VIEW_NAMES[0] else f'cls.{name}.'
                losses.update({prefix + k: v for k, v in task_losses.items()})
            logits += [s_logits, self.match_teacher(
                s_logits, self.teacher_logits(inputs, data_samples))]
        losses.update(self._distill(logits,
                                    self._labels(data_samples, logits[0])))
        return losses

    def _warn_if_unflushed(self) -> None:
        """Once: a runner trains this distiller without
        ``mmrankkd.ValueCheckHook``, so deferred value checks of the last
        calls before a checkpoint or the end would go unread."""
        self._unflushed_warned = True
        deferred = [name for name, loss in self.distill_losses.items()
                    if getattr(loss, 'validate', None) == 'deferred']
        in_runner = MessageHub.get_current_instance().get_info(
            'max_iters') is not None
        if deferred and in_runner and not self.value_checks_flushed:
            print_log(
                f'distill losses {deferred} check their inputs (NaN/Inf, '
                'labels) in deferred reads, but the runner has no mmrankkd.'
                'ValueCheckHook: the calls after the last read (up to '
                'validate_interval) are not checked before checkpoints or '
                'at the end of training. Fix: custom_hooks=[dict(type='
                "'mmrankkd.ValueCheckHook'), ...].", logger='current',
                level=logging.WARNING)
