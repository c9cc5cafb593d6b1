"""Checks of a run's config made before anything is built, so a mistake
fails at start-up with a message naming it, not after minutes of
training."""
import torch
from mmengine.config import Config

_DISTILL_LOOPS = {'val': 'mmrankkd.DistillValLoop',
                  'test': 'mmrankkd.DistillTestLoop'}


def _metric_types(evaluator):
    if evaluator is None:
        return []
    if isinstance(evaluator, dict) and 'metrics' in evaluator:
        evaluator = evaluator['metrics']
    if isinstance(evaluator, dict):
        evaluator = [evaluator]
    return [str(m.get('type', '')) for m in evaluator]


def check_run_config(cfg: Config) -> None:
    """Raise ValueError for configs that cannot run here.

    * An agreement metric (``mmrankkd.TeacherStudentAgreement``) reads the
      teacher's predictions, which only the distill loops attach: with a
      plain ``ValLoop``/``TestLoop`` it would fail at the first validation.
    * Mixed precision (``AmpOptimWrapper``, ``--amp``) needs a CUDA GPU in
      MMEngine 0.10.
    * A teacher store (``model.teacher_store``) must have been built with
      this run's training pipeline and data set.
    """
    from mmrankkd.models.distillers.teacher_store import check_store_config
    check_store_config(cfg)
    for stage, loop in _DISTILL_LOOPS.items():
        metrics = _metric_types(cfg.get(f'{stage}_evaluator'))
        loop_cfg = cfg.get(f'{stage}_cfg') or {}
        loop_type = str(loop_cfg.get('type', f'{stage.capitalize()}Loop'))
        if any(m.endswith('TeacherStudentAgreement') for m in metrics) and \
                not loop_type.endswith(loop.split('.')[1]):
            raise ValueError(
                f'{stage}_evaluator has mmrankkd.TeacherStudentAgreement, '
                f'which needs the teacher\'s predictions, but {stage}_cfg is '
                f'{loop_type!r}. Fix: {stage}_cfg=dict(type={loop!r}) (or '
                'drop the agreement metric).')
    optim = cfg.get('optim_wrapper') or {}
    if 'Amp' in str(optim.get('type', '')) and not torch.cuda.is_available():
        raise ValueError(
            'Mixed precision (--amp / AmpOptimWrapper) needs a CUDA GPU, and '
            'none is available. Fix: drop --amp (train in float32 on CPU), '
            'or run on a GPU machine.')
