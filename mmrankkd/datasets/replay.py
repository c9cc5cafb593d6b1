"""Augmentation replayed from a seed: one view per (epoch, sample).

Continuous augmentations (ImageNet's ``RandomResizedCrop``, Cityscapes'
random resize and crop) have too many outcomes to store the teacher's
logits for all of them. Instead, the view a sample gets in epoch ``e`` is
fixed in advance: :class:`ReplayDataset` runs the wrapped data set's
pipeline for sample ``i`` in epoch ``e`` with every global random
generator (numpy's, Python's ``random``, torch's CPU generator) seeded from
``(seed, e, i)``, so that the same view comes out wherever and whenever it
is made: in a data loader worker of rank 3 during training, or in
``tools/build_teacher_store.py`` which runs the teacher once on each
``(e, i)``. Outside the sample the generators go on deterministically
(:func:`seeded_generators`).

The epoch reaches the workers through the sampler, the one part of the
data loader that lives in the main process and knows it:
:class:`ReplaySampler` wraps mmengine's sampler and yields ``(epoch, i)``
keys, so it works with any number of workers, ``persistent_workers`` and
DDP alike::

    train_dataloader = dict(
        sampler=dict(type='mmrankkd.ReplaySampler',
                     sampler=dict(type='DefaultSampler', shuffle=True)),
        dataset=dict(type='mmrankkd.ReplayDataset', seed=0,
                     dataset=dict(type='ImageNet', ...,
                                  pipeline=train_pipeline)))

Each data sample's metainfo gets ``sample_idx`` (the index in the
:class:`ReplayDataset`) and ``replay_view = (seed, epoch, views)``
(``views``: :func:`~mmrankkd.datasets.records.views_sha256` of the wrapped
data set config, its pipelines included), which
:class:`~mmrankkd.models.distillers.teacher_store.StoredTeacher` reads and
compares with the store's.

What is replayed: randomness drawn from numpy's, Python's and torch's
global generators, which is what every transform of mmcv, mmpretrain and
mmseg uses. A transform with its own generator or with state carried from
sample to sample (mmdet's ``CachedMosaic`` / ``CachedMixUp``) cannot be
replayed; the ``Cached*`` ones are refused by name.

Note: the views depend on ``ReplayDataset.seed``, not on the run's seed;
runs of several seeds that share a store see the same views (their sample
order, initialisation and everything else still differ).
"""
import contextlib
import random
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from torch.utils.data import Sampler

from mmrankkd.registry import DATA_SAMPLERS, DATASETS
from .records import views_sha256

#: The metainfo key holding ``(seed, epoch, views digest)`` of a replayed
#: view.
REPLAY_KEY = 'replay_view'


def replay_seed(seed: int, epoch: int, index: int) -> int:
    """The 32-bit seed of sample ``index``'s view in ``epoch``.

    Args:
        seed (int): The :class:`ReplayDataset` seed.
        epoch (int): The epoch (or pass) of the view.
        index (int): The sample.

    Returns:
        int: numpy's ``SeedSequence([seed, epoch, index])`` state, the same
        on every platform.
    """
    return int(np.random.SeedSequence(
        [int(seed), int(epoch), int(index)]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_generators(seed: int):
    """Seed numpy's, Python's and torch's (CPU) global generators with
    ``seed`` for the block. Afterwards torch's state is restored, and
    numpy's and Python's streams go on from a seed drawn from each of them
    on entry: deterministic, as if the block had drawn one number, and
    cheaper than saving and restoring their states (measured on one CPU
    core: ~45 us per replayed sample in all, against ~160 us with
    numpy's ``get_state``/``set_state``)."""
    np_next = int(np.random.randint(0, 2**32, dtype=np.uint64))
    py_next = random.getrandbits(32)
    torch_state = torch.get_rng_state()
    np.random.seed(seed)
    random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        np.random.seed(np_next)
        random.seed(py_next)
        torch.set_rng_state(torch_state)


@DATASETS.register_module()
class ReplayDataset:
    """A data set whose augmentation is replayed from ``(seed, epoch, i)``.

    Indexed with ``(epoch, i)`` keys (from :class:`ReplaySampler`); any
    mmengine data set inside (mmpretrain's, mmseg's, ``RepeatDataset``...).

    Args:
        dataset (dict | Dataset): The data set (config) whose pipeline is
            replayed.
        seed (int): The replay seed; a teacher store records it. Defaults
            to 0.
        lazy_init (bool): Defer the wrapped data set's ``full_init``.
            Defaults to False.
    """

    def __init__(self, dataset: Union[dict, object], seed: int = 0,
                 lazy_init: bool = False):
        #: :func:`views_sha256` of the data set config (None when given a
        #: built data set: a teacher store then cannot be built from it).
        self.views_sha256 = (views_sha256(dataset)
                             if isinstance(dataset, dict) else None)
        self.dataset = (MMENGINE_DATASETS.build(dataset)
                        if isinstance(dataset, dict) else dataset)
        self.seed = int(seed)
        _check_replayable(self.dataset)
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        """The wrapped data set's metainfo."""
        return self.dataset.metainfo

    @property
    def pipeline(self):
        """The wrapped data set's pipeline (None for ConcatDataset)."""
        return getattr(self.dataset, 'pipeline', None)

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def get_data_info(self, index: int) -> dict:
        return self.dataset.get_data_info(index)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Tuple[int, int]) -> dict:
        if not (isinstance(key, (tuple, list)) and len(key) == 2):
            raise TypeError(
                f'ReplayDataset is indexed with (epoch, index) keys, got '
                f'{key!r}. Fix: train_dataloader.sampler=dict(type='
                "'mmrankkd.ReplaySampler', sampler=dict(type="
                "'DefaultSampler', shuffle=True)) (or the InfiniteSampler "
                'of an iteration-based run).')
        epoch, index = int(key[0]), int(key[1])
        with seeded_generators(replay_seed(self.seed, epoch, index)):
            data = self.dataset[index]
        samples = data['data_samples']
        for sample in samples if isinstance(samples, list) else [samples]:
            sample.set_metainfo({'sample_idx': index,
                                 REPLAY_KEY: (self.seed, epoch,
                                              self.views_sha256)})
        return data


def _check_replayable(dataset) -> None:
    """Refuse, by name, transforms whose views depend on earlier samples
    (they cannot be made again for one (epoch, sample))."""
    parts = [dataset]
    while parts:
        part = parts.pop()
        inner = getattr(part, 'dataset', None)
        parts += ([inner] if inner is not None else []) + list(
            getattr(part, 'datasets', None) or [])
        pipeline = getattr(part, 'pipeline', None)
        for t in getattr(pipeline, 'transforms', None) or []:
            if type(t).__name__.startswith('Cached'):
                raise ValueError(
                    f'{type(t).__name__} mixes in samples cached from '
                    'earlier ones, so a view cannot be made again from '
                    'its (epoch, sample) seed. Fix: its uncached form '
                    '(e.g. Mosaic), or train without ReplayDataset.')


@DATA_SAMPLERS.register_module()
class ReplaySampler(Sampler):
    """mmengine's sampler yielding ``(epoch, index)`` keys for
    :class:`ReplayDataset`.

    The epoch is the one the training loop sets (``set_epoch``: mmengine's
    ``DefaultSampler``); for an ``InfiniteSampler`` (iteration-based runs)
    it is the pass over the data set that the index belongs to (the
    infinite sampler deals each pass, a permutation, across the ranks), so
    ``(epoch, index)`` names one draw in either case (except the indices
    ``DefaultSampler`` repeats to even out the ranks, which get the same
    view). Other samplers (e.g. ``RepeatAugSampler``, which repeats each
    index within an epoch on purpose) are refused.

    Args:
        dataset (ReplayDataset): The training set (given by the runner).
        sampler (dict | Sampler): The sampler whose indices are keyed.
            Defaults to ``dict(type='DefaultSampler', shuffle=True)``.
        seed (int, optional): Passed to the wrapped sampler (given by the
            runner).
        **sampler_args: Further arguments of the wrapped sampler config
            (e.g. ``shuffle=True`` that a base config's
            ``sampler=dict(type='DefaultSampler', shuffle=True)`` leaves
            when a derived config merges this sampler into it); the
            wrapped config's own values win.
    """

    def __init__(self, dataset, sampler: Union[dict, Sampler, None] = None,
                 seed: Optional[int] = None, **sampler_args):
        sampler = dict(type='DefaultSampler', shuffle=True) \
            if sampler is None else sampler
        if isinstance(sampler, dict):
            sampler = MMENGINE_DATA_SAMPLERS.build(
                dict(sampler_args, **sampler),
                default_args=dict(dataset=dataset, seed=seed))
        elif sampler_args:
            raise TypeError(
                f'ReplaySampler: {sorted(sampler_args)} are arguments of the '
                'wrapped sampler, which is already built. Fix: remove them.')
        if not isinstance(dataset, ReplayDataset):
            raise TypeError(
                'ReplaySampler yields (epoch, index) keys for an mmrankkd.'
                f'ReplayDataset, but the training set is '
                f'{type(dataset).__name__}. Fix: make ReplayDataset the '
                "outermost data set: dataset=dict(type='mmrankkd."
                "ReplayDataset', dataset=<the data set, wrappers "
                'included>); train_cfg.num_batch_per_epoch (which slices '
                'the data set) is not supported with it.')
        self.sampler = sampler
        self.infinite = isinstance(sampler, InfiniteSampler)
        if not isinstance(sampler, (DefaultSampler, InfiniteSampler)):
            raise TypeError(
                'ReplaySampler wraps mmengine\'s DefaultSampler or '
                f'InfiniteSampler, got {type(sampler).__name__} (a sampler '
                'that repeats indices within an epoch would repeat their '
                'views). Fix: wrap DefaultSampler or InfiniteSampler.')
        self.epoch = 0
        self._last_epoch = None  # the epoch last iterated (finite samplers)
        self._stream = None  # an infinite sampler's index generator
        self._drawn = 0  # indices taken from it

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the keys (and of the wrapped sampler)."""
        self.epoch = int(epoch)
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        if self.infinite:
            # The infinite sampler's index generator is made once and
            # continued by every pass; count the draws from that generator
            # (a new one, e.g. after its seed was restored on resume,
            # starts the count again).
            inner = self.sampler
            if inner.indices is not self._stream:
                self._stream, self._drawn = inner.indices, 0
            for index in self._stream:
                position = inner.rank + self._drawn * inner.world_size
                self._drawn += 1
                yield position // inner.size, int(index)
            return
        if self._last_epoch == self.epoch:
            raise RuntimeError(
                f'ReplaySampler: a second full pass in epoch {self.epoch} '
                'without set_epoch would replay the same views. Fix: call '
                'set_epoch before each pass (mmengine\'s training loops '
                'do).')
        for index in self.sampler:
            yield self.epoch, int(index)
        # A pass counts once finished: a data loader iterator that was
        # started and dropped (prefetching workers, a restarted iterator on
        # resume) may start the epoch again.
        self._last_epoch = self.epoch
