"""Resume that continues exactly where training stopped.

MMEngine's resume restores weights, optimizer, parameter schedulers and the
iteration count, and re-seeds the random generators with the run's seed.
The generators' *states* are not restored, so random crops, flips and
dropout after a resume differ from an uninterrupted run; and a checkpoint
saved without optimizer state silently restarts the optimizer and the
learning-rate schedule.

:class:`ExactResumeHook` saves the states of Python's ``random``, numpy's
and torch's (CPU and CUDA) generators in every checkpoint and restores them
on resume at the point the uninterrupted run had reached: for iteration
based loops after MMEngine has skipped the batches already trained on (the
skip itself runs the data pipeline, which draws random numbers), for epoch
based loops before the next epoch starts. It refuses to resume from a
checkpoint without optimizer or scheduler state.
"""
import random
from typing import Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop

from mmrankkd.registry import HOOKS

RNG_KEY = 'rng_states'


def get_rng_states() -> dict:
    """The states of every global random generator training draws from."""
    states = dict(python=random.getstate(), numpy=np.random.get_state(),
                  torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states['cuda'] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Restore what :func:`get_rng_states` returned."""
    random.setstate(_as_tuple(states['python']))
    np.random.set_state(_as_tuple(states['numpy']))
    torch.set_rng_state(states['torch'])
    if 'cuda' in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states['cuda'])


def _as_tuple(state):
    """Python's and numpy's states are tuples (nested for ``random``)."""
    if isinstance(state, list):
        return tuple(_as_tuple(v) for v in state)
    return state


class _RestoreAfterSkip:
    """Wraps a train-loop data iterator: after ``skip`` batches have been
    drawn (MMEngine's resume skip), restores ``states`` right before the
    next batch is fetched, as the uninterrupted run fetched it."""

    def __init__(self, iterator, skip: int, states: dict):
        self._iterator = iterator
        self._skip = skip
        self._states: Optional[dict] = states

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
        elif self._states is not None:
            set_rng_states(self._states)
            self._states = None
        return next(self._iterator)

    def __iter__(self):
        return self

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save and restore random generator states; refuse incomplete resumes.

    Config::

        custom_hooks = [dict(type='mmrankkd.ExactResumeHook')]

    Args:
        require_optimizer (bool): Raise when resuming from a checkpoint
            without optimizer or parameter-scheduler state (resuming would
            silently restart the optimizer and the learning rate).
            Defaults to True.
    """

    priority = 'VERY_LOW'

    def __init__(self, require_optimizer: bool = True):
        self.require_optimizer = require_optimizer
        self._pending: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = get_rng_states()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not runner.cfg.get('resume', False):
            return  # load_from: weights only, a fresh run
        needed = ['optimizer']
        if getattr(runner, 'param_schedulers', None):
            needed.append('param_schedulers')
        missing = [k for k in needed if k not in checkpoint]
        if self.require_optimizer and missing:
            raise RuntimeError(
                f'Cannot resume exactly: the checkpoint has no {missing} '
                'state, so the optimizer and learning-rate schedule would '
                'restart from scratch. Fix: resume from a checkpoint saved '
                'with save_optimizer=True (the CheckpointHook default), or '
                'start a new run from its weights with load_from=CKPT '
                'instead of --resume.')
        self._pending = checkpoint.get(RNG_KEY)
        if self._pending is None:
            print_log(
                'The checkpoint holds no random generator states (saved '
                'without ExactResumeHook): data augmentation after resume '
                'will differ from an uninterrupted run.', logger='current')

    def before_train(self, runner) -> None:
        if self._pending is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop.dataloader_iterator, loop.iter, self._pending)
        else:
            set_rng_states(self._pending)
        self._pending = None
        print_log('Random generator states restored from the checkpoint.',
                  logger='current')
