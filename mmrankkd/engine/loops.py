"""Validation/test loops for distillers: score the student, compare it with
the teacher, optionally score the teacher once.

Each batch is preprocessed once; the student predicts (exactly what the plain
``ValLoop`` would produce), the teacher predicts on a copy of the samples,
and the teacher's predictions are attached to the student's samples as
``teacher_*`` fields. The evaluator therefore sees ordinary student
predictions (``IoUMetric`` / ``Accuracy`` score the student unchanged) and
agreement metrics such as ``mmrankkd.TeacherStudentAgreement`` read both.

With ``score_teacher=True`` the first run also feeds the teacher's
predictions to a copy of the evaluator (agreement metrics left out) and logs
its results as ``teacher/<metric>``; the teacher is frozen, so later runs
reuse that result instead of recomputing it.

Config::

    val_cfg = dict(type='mmrankkd.DistillValLoop', score_teacher=True)
    val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                     dict(type='mmrankkd.TeacherStudentAgreement')]
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
from mmengine.evaluator import Evaluator
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from mmengine.runner.amp import autocast
from torch.utils.data import DataLoader

from mmrankkd.registry import LOOPS


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _is_agreement_metric(metric) -> bool:
    return getattr(metric, 'needs_teacher', False)


class _DistillEvalMixin:
    """Shared by :class:`DistillValLoop` and :class:`DistillTestLoop`, which
    only name their ``stage`` (the hooks they call) and base loop."""

    stage: str

    def __init__(self,
                 runner,
                 dataloader: Union[DataLoader, Dict],
                 evaluator: Union[Evaluator, Dict, List],
                 fp16: bool = False,
                 score_teacher: bool = False) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        model = _unwrap(self.runner.model)
        if not hasattr(model, 'predict_teacher'):
            raise TypeError(
                f'{type(self).__name__} needs a distiller model '
                '(mmrankkd.LogitDistiller), got '
                f'{type(model).__name__}. Fix: use val_cfg=dict('
                "type='ValLoop') for plain models.")
        self.score_teacher = score_teacher
        self.teacher_metrics: Optional[Dict[str, float]] = None
        self.teacher_evaluator = None
        if score_teacher:
            metrics = [copy.deepcopy(m) for m in self.evaluator.metrics
                       if not _is_agreement_metric(m)]
            for m in metrics:
                m.prefix = 'teacher/' + (m.prefix or '').lstrip('/') \
                    if m.prefix else 'teacher'
            self.teacher_evaluator = Evaluator(metrics)
            self.teacher_evaluator.dataset_meta = self.evaluator.dataset_meta

    @torch.no_grad()
    def _predict_both(self, data_batch):
        wrapped = self.runner.model
        model = _unwrap(wrapped)
        with autocast(enabled=self.fp16):
            data = model.data_preprocessor(data_batch, False)
            outputs = model(**data, mode='predict')
            need_teacher = self.teacher_metrics is None and \
                self.teacher_evaluator is not None
            if need_teacher or any(
                    _is_agreement_metric(m) for m in self.evaluator.metrics):
                teacher_out = model.predict_teacher(data['inputs'],
                                                    data['data_samples'])
                from mmrankkd.models.distillers import \
                    attach_teacher_predictions
                attach_teacher_predictions(outputs, teacher_out)
                if need_teacher:
                    self.teacher_evaluator.process(
                        data_samples=teacher_out, data_batch=data_batch)
        return outputs

    def run(self) -> dict:
        stage = self.stage
        runner = self.runner
        runner.call_hook(f'before_{stage}')
        runner.call_hook(f'before_{stage}_epoch')
        runner.model.eval()
        fresh_teacher = self.teacher_evaluator is not None and \
            self.teacher_metrics is None
        for idx, data_batch in enumerate(self.dataloader):
            runner.call_hook(
                f'before_{stage}_iter', batch_idx=idx, data_batch=data_batch)
            outputs = self._predict_both(data_batch)
            self.evaluator.process(data_samples=outputs, data_batch=data_batch)
            runner.call_hook(
                f'after_{stage}_iter',
                batch_idx=idx,
                data_batch=data_batch,
                outputs=outputs)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        if fresh_teacher:
            self.teacher_metrics = self.teacher_evaluator.evaluate(
                len(self.dataloader.dataset))
        if self.teacher_metrics:
            metrics.update(self.teacher_metrics)
        runner.call_hook(f'after_{stage}_epoch', metrics=metrics)
        runner.call_hook(f'after_{stage}')
        return metrics


@LOOPS.register_module()
class DistillValLoop(_DistillEvalMixin, ValLoop):
    """``ValLoop`` that also runs the distiller's teacher (see the module
    docstring).

    Args:
        runner (Runner): The runner.
        dataloader (DataLoader | dict): The validation dataloader.
        evaluator (Evaluator | dict | list): The student's metrics plus any
            agreement metrics.
        fp16 (bool): Whether to validate under autocast. Defaults to False.
        score_teacher (bool): Also score the teacher once with the same
            metrics, logged as ``teacher/<metric>``. Defaults to False.
    """

    stage = 'val'

    def run_iter(self, idx, data_batch: Sequence[dict]):  # pragma: no cover
        raise NotImplementedError('DistillValLoop runs batches in run()')


@LOOPS.register_module()
class DistillTestLoop(_DistillEvalMixin, TestLoop):
    """``TestLoop`` counterpart of :class:`DistillValLoop`."""

    stage = 'test'
