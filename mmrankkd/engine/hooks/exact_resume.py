"""Resume that continues exactly where training stopped.

MMEngine's resume restores weights, optimizer, parameter schedulers and the
iteration count, and re-seeds the random generators with the run's seed.
The generators' *states* are not restored, so random crops, flips and
dropout after a resume differ from an uninterrupted run; and a checkpoint
saved without optimizer state silently restarts the optimizer and the
learning-rate schedule.

:class:`ExactResumeHook` makes N iterations (or epochs) in one run and N/2
plus ``--resume`` give bit-identical weights (same machine, same world
size, deterministic kernels; tested on CPU with validation in between,
``randomness.seed=None`` with 0 and 2 workers, and 2 gloo ranks). It:

- saves every rank's states of Python's ``random``, numpy's and torch's
  (CPU and CUDA) generators in each checkpoint (with several ranks they are
  gathered right before ``CheckpointHook`` saves, since rank 0 alone
  writes the file), and on resume each rank restores its own, at the point
  the uninterrupted run had reached: for iteration based loops after
  MMEngine has skipped the batches already trained on (the skip itself
  runs the data pipeline, which draws random numbers), for epoch based
  loops before the next epoch starts;
- keeps validation out of the training stream: the states are saved before
  validation and restored after it (any val loop, run at iteration or
  epoch boundaries), so the val DataLoader iterator's seed draw and any
  random transform in validation do not shift training, and a checkpoint
  written during validation (``save_best``) holds the training stream's
  states;
- saves the sampler seed and the ``worker_init_fn`` seed of the train and
  val dataloaders. With ``randomness.seed=None`` the resumed process builds
  its dataloaders from a fresh seed before the checkpoint is loaded; the
  hook puts the checkpoint's seeds back (and restarts the train iterator,
  whose sampler and workers may already be running) before the first
  batch is drawn;
- refuses to resume from a checkpoint without optimizer or scheduler state;
- validates a run resumed from its final checkpoint: the checkpoint of the
  last epoch (or iteration) is written before its validation, so a run
  stopped during that validation left a final checkpoint whose score was
  never logged, and MMEngine's loop, resumed there, trains nothing and
  validates nothing. (An iteration loop resumed there skips its trained
  batches without loading them.)

Not exact, with a warning saying what differs: resuming with another world
size than the checkpoint's (generator states are then not restored; the
data is sharded differently anyway), a multi-rank checkpoint saved outside
``CheckpointHook``'s schedule (it holds rank 0's states only; not
restored), an epoch based loop with ``persistent_workers=True`` and
``num_workers > 0`` (uninterrupted workers carry their generators across
epochs, resumed workers start from their seed), and checkpoints written by
the earlier version of this hook (no dataloader seeds). Random draws made
by other hooks between the checkpoint and the next batch are not replayed.
"""
import logging
import random
from functools import partial
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator

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


def _built_loop(runner, name: str) -> Optional[BaseLoop]:
    """``runner.<name>_loop`` if it has been built (the public property
    would build it from its config)."""
    loop = getattr(runner, f'_{name}_loop', None)
    return loop if isinstance(loop, BaseLoop) else None


def _sampler(loader):
    """The index sampler (inside the batch sampler when there is one, and
    inside a wrapper such as ``mmrankkd.ReplaySampler`` that has its own
    ``sampler``)."""
    sampler = getattr(loader.batch_sampler, 'sampler', None) or loader.sampler
    while not hasattr(sampler, 'seed') and hasattr(sampler, 'sampler'):
        sampler = sampler.sampler
    return sampler


def _loader_seeds(loader) -> dict:
    """The seeds MMEngine built ``loader`` with: the sampler's (shuffle
    order) and ``worker_init_fn``'s (random state of worker processes)."""
    seeds = {}
    seed = getattr(_sampler(loader), 'seed', None)
    if isinstance(seed, int):
        seeds['sampler'] = seed
    fn = loader.worker_init_fn
    if isinstance(fn, partial) and 'seed' in fn.keywords:
        seeds['worker'] = fn.keywords['seed']
    return seeds


def _data_seeds(runner) -> dict:
    """:func:`_loader_seeds` of the train and val dataloaders."""
    out = {}
    for name in ('train', 'val'):
        loop = _built_loop(runner, name)
        if loop is not None and hasattr(loop, 'dataloader'):
            out[name] = _loader_seeds(loop.dataloader)
    return out


def _set_loader_seeds(loader, seeds: dict) -> bool:
    """Put ``seeds`` (from :func:`_loader_seeds`) into ``loader``; whether
    anything changed."""
    now = _loader_seeds(loader)
    changed = False
    if 'sampler' in seeds and 'sampler' in now and \
            seeds['sampler'] != now['sampler']:
        sampler = _sampler(loader)
        sampler.seed = seeds['sampler']
        if hasattr(sampler, '_indices_of_rank'):
            # InfiniteSampler: its index generator is made once, at build.
            sampler.indices = sampler._indices_of_rank()
        changed = True
    if 'worker' in seeds and 'worker' in now and \
            seeds['worker'] != now['worker']:
        fn = loader.worker_init_fn
        loader.worker_init_fn = partial(
            fn.func, *fn.args, **dict(fn.keywords, seed=seeds['worker']))
        changed = True
    return changed


def _shutdown_workers(iterator) -> None:
    if hasattr(iterator, '_shutdown_workers'):
        iterator._shutdown_workers()


def _progress(loop) -> int:
    """Epochs (epoch loops) or iterations done."""
    if isinstance(loop, EpochBasedTrainLoop):
        return loop.epoch
    return loop.iter


def _at_end(loop) -> bool:
    """Whether a train loop has nothing left to train."""
    if isinstance(loop, EpochBasedTrainLoop):
        return loop.epoch >= loop.max_epochs
    if isinstance(loop, IterBasedTrainLoop):
        return loop.iter >= loop.max_iters
    return False


def _stop_iterator(loop: IterBasedTrainLoop) -> None:
    """Shut down the workers of ``loop``'s data iterator (inside MMEngine's
    infinite iterator and our :class:`_RestoreAfterSkip`)."""
    it = loop.dataloader_iterator
    while it is not None and not hasattr(it, '_shutdown_workers'):
        it = getattr(it, '__dict__', {}).get('_iterator')
    _shutdown_workers(it)
    loader = loop.dataloader
    if getattr(loader, '_iterator', None) is not None:  # persistent workers
        _shutdown_workers(loader._iterator)
        loader._iterator = None


def _restart_iterator(loop: IterBasedTrainLoop) -> None:
    """Give ``loop`` a fresh data iterator: the one built with the loop
    has already drawn indices and started workers with the old seeds."""
    _stop_iterator(loop)
    loop.dataloader_iterator = _InfiniteDataloaderIterator(loop.dataloader)


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


def checkpoint_due(runner, by_epoch: bool) -> bool:
    """Whether a ``CheckpointHook`` saves in this ``after_train_iter``
    (``by_epoch=False``) or ``after_train_epoch`` (True): its own test."""
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch and (
                hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                or hook.save_last and hook.is_last_train_epoch(runner)):
            return True
        if not by_epoch and (
                hook.every_n_train_iters(runner, hook.interval,
                                         hook.save_begin)
                or hook.save_last and hook.is_last_train_iter(runner)):
            return True
    return False


def _warn(message: str) -> None:
    print_log(message, logger='current', level=logging.WARNING)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Save and restore every rank's random generator states and the
    dataloader seeds, keep validation out of the training stream, refuse
    incomplete resumes.

    See the module docstring for what is exact and what is warned about.
    The priority (``LOW``) puts this hook before MMEngine's
    ``CheckpointHook`` (``VERY_LOW``): with several ranks it gathers their
    states in ``after_train_iter`` / ``after_train_epoch`` right before the
    checkpoint hook saves (``Runner.save_checkpoint``, and so
    ``before_save_checkpoint``, runs on rank 0 only).

    Config::

        custom_hooks = [dict(type='mmrankkd.ExactResumeHook')]

    Args:
        require_optimizer (bool): Raise when resuming from a checkpoint
            without optimizer or parameter-scheduler state (resuming would
            silently restart the optimizer and the learning rate).
            Defaults to True.
    """

    priority = 'LOW'

    def __init__(self, require_optimizer: bool = True):
        self.require_optimizer = require_optimizer
        self._pending: Optional[dict] = None
        # The training stream's states while validation runs, and (several
        # ranks) every rank's states at that point / at the last
        # scheduled checkpoint: (runner.iter, [state per rank]).
        self._before_val: Optional[dict] = None
        self._val_ranks: Optional[list] = None
        self._gathered: Optional[tuple] = None
        # Resumed from the final checkpoint: validate it (after_train).
        self._validate_final = False

    @staticmethod
    def _gather(runner, states: dict) -> list:
        """Every rank's ``states`` and dataloader seeds (a collective)."""
        return all_gather_object(dict(states, data_seeds=_data_seeds(runner)))

    # ---------------------------------------------------------------- save
    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if get_world_size() > 1 and checkpoint_due(runner, by_epoch=False):
            self._gathered = (runner.iter,
                              self._gather(runner, get_rng_states()))

    def after_train_epoch(self, runner) -> None:
        if get_world_size() > 1 and checkpoint_due(runner, by_epoch=True):
            self._gathered = (runner.iter,
                              self._gather(runner, get_rng_states()))

    def before_val(self, runner) -> None:
        # Validation leaves the training stream untouched: the DataLoader
        # iterator's base-seed draw and random transforms happen in between.
        self._before_val = get_rng_states()
        if get_world_size() > 1:
            self._val_ranks = self._gather(runner, self._before_val)

    def after_val(self, runner) -> None:
        if self._before_val is not None:
            set_rng_states(self._before_val)
        self._before_val = self._val_ranks = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        # Inside validation (save_best) the training stream is the one
        # saved before validation started.
        states = self._before_val or get_rng_states()
        world_size = get_world_size()
        ranks = [dict(states, data_seeds=_data_seeds(runner))]
        if world_size > 1 and self._before_val is not None:
            ranks = self._val_ranks
        elif world_size > 1 and self._gathered is not None and \
                self._gathered[0] == runner.iter:
            ranks = self._gathered[1]
        # else (a save outside CheckpointHook's schedule): rank 0's only,
        # and resuming from it warns.
        checkpoint[RNG_KEY] = dict(world_size=world_size, ranks=ranks)

    # -------------------------------------------------------------- resume
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
            _warn('The checkpoint holds no random generator states (saved '
                  'without ExactResumeHook): data augmentation and dropout '
                  'after resume will differ from an uninterrupted run.')

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        resumed = runner.cfg.get('resume', False) or getattr(
            runner, '_resume', False)
        if resumed and _at_end(loop):
            self._validate_final = True
        self._restore(runner, loop)
        if self._validate_final and isinstance(loop, IterBasedTrainLoop):
            # MMEngine skips every trained batch before the loop, which has
            # nothing left to train: skip them without loading them.
            _stop_iterator(loop)
            nothing = iter(lambda: None, object())  # None, forever
            if isinstance(loop.dataloader_iterator, _RestoreAfterSkip):
                loop.dataloader_iterator._iterator = nothing
            else:
                loop.dataloader_iterator = nothing

    def _restore(self, runner, loop) -> None:
        """Put the checkpoint's generator states and dataloader seeds
        back."""
        if self._pending is None:
            return
        saved, self._pending = self._pending, None
        if 'ranks' not in saved:  # the earlier format: rank 0's states
            _warn('The checkpoint was saved by an earlier ExactResumeHook: '
                  'it has no sampler/worker seeds, so with '
                  'randomness.seed=None the resumed run differs from an '
                  'uninterrupted one.')
            saved = dict(world_size=1, ranks=[dict(saved, data_seeds={})])
        rank, world_size = get_rank(), get_world_size()
        ranks = saved['ranks']
        exact = saved['world_size'] == world_size == len(ranks)
        mine = ranks[rank] if exact else ranks[0]
        self._restore_data_seeds(runner, loop, mine['data_seeds'], exact)
        if not exact:
            if saved['world_size'] != world_size:
                what = (f'was saved by {saved["world_size"]} ranks, this '
                        f'run has {world_size}')
            else:
                what = ("holds rank 0's states only (saved outside "
                        "CheckpointHook's schedule)")
            _warn(f'The checkpoint {what}: random generator states are '
                  'not restored (each rank keeps MMEngine\'s re-seeding), '
                  'so augmentation and dropout after resume differ from an '
                  'uninterrupted run (with another world size the data is '
                  'sharded differently as well).')
            return
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop.dataloader_iterator, loop.iter, mine)
        else:
            set_rng_states(mine)
        print_log('Random generator states restored from the checkpoint.',
                  logger='current')

    def after_train(self, runner) -> None:
        if not self._validate_final:
            return
        self._validate_final = False
        loop = runner.train_loop
        val_begin = getattr(loop, 'val_begin', 1)
        if runner.val_loop is None or _progress(loop) < val_begin:
            return
        print_log('Resumed from the final checkpoint: validating it (a run '
                  'stopped during its final validation never logged that '
                  'score).', logger='current')
        runner.val_loop.run()

    def _restore_data_seeds(self, runner, loop, seeds: dict,
                            own_rank: bool) -> None:
        """Build-time seeds of the dataloaders back to the checkpoint's
        (they differ when ``randomness.seed`` is None). Without this rank's
        own entry only the sampler seed (the same on every rank) is
        restored."""
        for name, loader_seeds in seeds.items():
            this = _built_loop(runner, name)
            if this is None or not hasattr(this, 'dataloader'):
                continue
            if not own_rank:  # worker seeds depend on the rank
                loader_seeds = {k: v for k, v in loader_seeds.items()
                                if k == 'sampler'}
            if not _set_loader_seeds(this.dataloader, loader_seeds):
                continue
            if name == 'train' and isinstance(loop, IterBasedTrainLoop):
                _restart_iterator(loop)
            print_log(f'{name} dataloader seeds restored from the '
                      f'checkpoint: {loader_seeds}.', logger='current')
        loader = loop.dataloader
        if isinstance(loop, EpochBasedTrainLoop) and \
                loader.persistent_workers and loader.num_workers > 0:
            _warn('persistent_workers=True with num_workers>0 in an epoch '
                  'based loop: an uninterrupted run\'s worker processes '
                  'carry their random generators across epochs, resumed '
                  'workers start from their seed, so augmentation after '
                  'resume differs. Fix: persistent_workers=False for an '
                  'exact resume.')
