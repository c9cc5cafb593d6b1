"""Read the distillation losses' deferred value checks at the boundaries
of a run.

Each loss checks its inputs (NaN/Inf logits, labels outside [0, C)) on the
device and, with ``validate='deferred'`` (the default), reads the result on
the host only every ``validate_interval`` calls (see
:class:`mmrankkd.models.losses.utils.BaseLogitLoss`). Without this hook the
calls after the last read of a run are never checked, and a checkpoint can
be written after a NaN or a bad label that no read has seen yet.

``ValueCheckHook`` reads them (``flush()``: one device sync when calls are
pending) at the end of every training epoch (iteration-based training: at
its end), on every rank before each checkpoint that ``CheckpointHook``
writes (raising there means the checkpoint is not written; MMEngine saves
on rank 0 only, so the read happens where every rank still is, right after
the iteration or epoch that the checkpoint ends, and again before
``save_best`` checkpoints on rank 0) and at the end of training. It also
tells the losses which training iteration each call is, so their errors
name iterations as well as calls.

With several processes, the reads that every rank makes at the same point
(epoch ends, the iteration a checkpoint ends, the end of training) are
compared across ranks: a failed check on any rank raises the same
``ValueError``, naming that rank, on every rank, so all stop together
instead of the healthy ranks waiting in their next collective (under
``srun``, until the communication timeout). The read before a ``save_best``
checkpoint is rank 0's alone.

The shipped distillation configs list it in ``custom_hooks``; a run of a
distiller without it logs a warning naming it.

Config::

    custom_hooks = [dict(type='mmrankkd.ValueCheckHook')]
"""
from typing import Optional

from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmrankkd.registry import HOOKS
from .exact_resume import checkpoint_due


def _model(runner):
    return runner.model.module if is_model_wrapper(
        runner.model) else runner.model


def _losses(runner) -> list:
    losses = getattr(_model(runner), 'distill_losses', None)
    if losses is None:
        return []
    return [loss for loss in losses.values() if hasattr(loss, 'flush')]


@HOOKS.register_module()
class ValueCheckHook(Hook):
    """Flush the distillation losses' deferred value checks at the end of
    every training epoch, before every checkpoint and at the end of
    training. Does nothing for models without ``distill_losses``."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        model = _model(runner)
        if hasattr(model, 'distill_losses'):
            model.value_checks_flushed = True
        for loss in _losses(runner):
            if hasattr(loss, 'align_iterations'):
                loss.align_iterations(runner.iter)

    def _flush(self, runner, every_rank: bool = True) -> None:
        """Read the pending checks; ``every_rank``: all ranks are here, so
        a failure on any rank is raised on all."""
        failure = None
        try:
            for loss in _losses(runner):
                loss.flush()
        except ValueError as error:
            if not every_rank or get_world_size() == 1:
                raise
            failure = error
        if not every_rank or get_world_size() == 1:
            return
        found = all_gather_object(None if failure is None else str(failure))
        if failure is not None:
            raise failure
        bad = [(rank, msg) for rank, msg in enumerate(found) if msg]
        if bad:
            rank, msg = bad[0]
            raise ValueError(
                f'Rank {rank} of {len(found)} failed its deferred value '
                f'checks (rank {get_rank()} stops with it): {msg}')

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if checkpoint_due(runner, by_epoch=False):
            self._flush(runner)

    def after_train_epoch(self, runner) -> None:
        self._flush(runner)

    def before_save_checkpoint(self, runner,
                               checkpoint: Optional[dict] = None) -> None:
        # Rank 0 alone saves (MMEngine): no collective here.
        self._flush(runner, every_rank=False)

    def after_train(self, runner) -> None:
        self._flush(runner)
        if _losses(runner):
            print_log('Distillation losses: the deferred value checks of '
                      'every call are read, none failed.', logger='current')
