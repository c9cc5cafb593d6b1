"""Validation/test loops for distillers: score the student, compare it with
the teacher, optionally score the teacher once.

They are MMEngine's ``ValLoop`` / ``TestLoop`` (same ``run``, val-loss
handling included) with two additions. Each iteration asks the distiller
to predict with the teacher as well: the batch is preprocessed once, the
student predicts (exactly what the plain loop would produce), the teacher
predicts on a copy of the samples, and its predictions are attached to the
student's samples as ``teacher_*`` fields (:func:`attach_teacher_predictions`).
The evaluator therefore sees ordinary student predictions (``IoUMetric`` /
``Accuracy`` score the student unchanged) and agreement metrics such as
``mmrankkd.TeacherStudentAgreement`` read both.

With ``score_teacher=True`` the first run also feeds the teacher's
predictions to a copy of the evaluator's metrics (agreement metrics left
out) and reports them as ``teacher/<metric>``; the teacher is frozen, so
later runs reuse that result instead of recomputing it.

Config::

    val_cfg = dict(type='mmrankkd.DistillValLoop', score_teacher=True)
    val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                     dict(type='mmrankkd.TeacherStudentAgreement')]
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

from mmengine.evaluator import Evaluator
from mmengine.model import is_model_wrapper
from mmengine.runner import TestLoop, ValLoop
from mmengine.structures import BaseDataElement
from torch.utils.data import DataLoader

from mmrankkd.models.distillers.teacher import PREDICTION_FIELDS
from mmrankkd.registry import LOOPS

def _as_teacher_prediction(sample: BaseDataElement) -> dict:
    """The sample as a dict whose ``pred_*`` fields are the teacher's."""
    data = sample.to_dict()
    for field in PREDICTION_FIELDS:
        if f'teacher_{field}' in data:
            data[field] = data.pop(f'teacher_{field}')
    return data


def _follow_student_ignore_index(metrics, model) -> None:
    """Agreement metrics ignore the label the student ignores (one place
    decides it: the distiller's ``ignore_index``)."""
    ignore = getattr(model, 'ignore_index', None)
    if ignore is None:
        return
    for m in metrics:
        if not _is_agreement_metric(m) or not hasattr(m, 'ignore_index'):
            continue
        if m.ignore_index is None:
            m.ignore_index = ignore
        elif m.ignore_index != ignore:
            raise ValueError(
                f'{type(m).__name__} sets ignore_index={m.ignore_index} but '
                f'the student ignores {ignore}. Fix: remove ignore_index '
                'from the metric (it follows the student) or make them '
                'agree.')


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


def _is_agreement_metric(metric) -> bool:
    return getattr(metric, 'needs_teacher', False)


class _StudentTeacherEvaluator(Evaluator):
    """The student's evaluator, plus the teacher's metrics (``teacher/``
    prefix) computed from the attached teacher predictions on the first
    evaluation and reused after."""

    def __init__(self, metrics, teacher_metrics):
        super().__init__(metrics)
        self.teacher = Evaluator(teacher_metrics) if teacher_metrics else None
        self.teacher_results: Optional[Dict[str, float]] = None

    @property
    def teacher_pending(self) -> bool:
        return self.teacher is not None and self.teacher_results is None

    @Evaluator.dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        Evaluator.dataset_meta.fset(self, dataset_meta)
        if self.teacher is not None:
            self.teacher.dataset_meta = dataset_meta

    def process(self, data_samples: Sequence, data_batch=None):
        super().process(data_samples, data_batch)
        if self.teacher_pending:
            self.teacher.process(
                [_as_teacher_prediction(s) for s in data_samples],
                data_batch)

    def evaluate(self, size: int) -> dict:
        metrics = super().evaluate(size)
        if self.teacher_pending:
            self.teacher_results = self.teacher.evaluate(size)
        metrics.update(self.teacher_results or {})
        return metrics


class _DistillEvalMixin:
    """Shared by :class:`DistillValLoop` and :class:`DistillTestLoop`."""

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
        _follow_student_ignore_index(self.evaluator.metrics, model)
        teacher_metrics = []
        if score_teacher:
            teacher_metrics = [copy.deepcopy(m) for m in self.evaluator.metrics
                               if not _is_agreement_metric(m)]
            for m in teacher_metrics:
                m.prefix = 'teacher/' + m.prefix.lstrip('/') \
                    if m.prefix else 'teacher'
        meta = self.evaluator.dataset_meta
        self.evaluator = _StudentTeacherEvaluator(self.evaluator.metrics,
                                                  teacher_metrics)
        self.evaluator.dataset_meta = meta

    @property
    def teacher_metrics(self) -> Optional[Dict[str, float]]:
        """The teacher's scores once computed (else None)."""
        return self.evaluator.teacher_results

    def run(self) -> dict:
        """The base loop's run; the distiller stops predicting with the
        teacher when it ends (also on an error)."""
        try:
            return super().run()
        finally:
            _unwrap(self.runner.model).predict_with_teacher = False

    def run_iter(self, idx, data_batch: Sequence[dict]):
        """The base loop's iteration, with the teacher predicting too when
        a metric needs it."""
        _unwrap(self.runner.model).predict_with_teacher = \
            self.evaluator.teacher_pending or any(
                _is_agreement_metric(m) for m in self.evaluator.metrics)
        super().run_iter(idx, data_batch)


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


@LOOPS.register_module()
class DistillTestLoop(_DistillEvalMixin, TestLoop):
    """``TestLoop`` counterpart of :class:`DistillValLoop`."""
