"""The teacher-logit store: the teacher's logits computed once, read back.

A distillation run asks its teacher for the logits of each training view.
``tools/build_teacher_store.py`` runs the teacher once on every view
training will make, and every later run of that teacher (any student,
loss or seed) reads the logits instead of running the teacher:

* exact mode: the augmentation has finitely many outcomes (the CIFAR
  recipe's ``RandomCrop(32, padding=4)`` + horizontal flip: 81 x 2 = 162
  views per image), all stored; the view axis is the view id;
* replay mode: random pipelines, replayed per (epoch, sample) by
  :class:`mmrankkd.ReplayDataset`; the view axis is the epoch.

Either mode can keep only each view's top-k logits (``topk``): the values,
their classes and the log-sum-exp of the rest, expanded back to full rows
by :func:`expand_topk`; each loss says whether it accepts that
(``BaseLogitLoss.teacher_topk``).

A store is a directory:

* ``index.json``: the layout (samples x views x classes, float32), what
  made it (the teacher's resolved config and its sha256, the checkpoint
  file's and the loaded weights' sha256, the teacher's preprocessing and
  precision, the class count, the training pipeline, the data set) and
  the sha256 of every block of rows. It is written last: a directory
  without it is an interrupted build.
* ``logits.f32``: float32 ``(num_samples, num_views, num_classes)``,
  C order, memory-mapped; or, in a top-k store, ``topk_values.f32``
  ``(num_samples, num_views, k)``, ``topk_indices.i2`` (int16; ``.i4`` for
  more than 32,767 classes) and ``rest_logsumexp.f32``
  ``(num_samples, num_views)``.
* ``filled.u8``: uint8 ``(num_samples, num_views)``, 1 where a view was
  written (a build limited with ``--num-samples`` leaves the rest out).
* ``labels.i64``: int64 ``(num_samples, )``, each sample's label, checked
  against the batch's so that another data set (or order) is refused.

:class:`StoredTeacher` is a *teacher source* (like
:class:`~.teacher.LiveTeacher`): ``logits(inputs, data_samples)`` reads each
sample's ``sample_idx`` and ``teacher_view`` (recorded by
:mod:`mmrankkd.datasets.transforms`; replay: ``replay_view``, recorded by
:class:`mmrankkd.ReplayDataset`) from its metainfo and returns the stored
rows. Validation's teacher predictions (agreement metrics, the
teacher's own score) still come from the live teacher, which the distiller
keeps loaded for them and for the spot check.
"""
import hashlib
import json
import logging
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import print_log
from torch import Tensor

from mmrankkd.datasets.records import (dataset_record, pipeline_record,
                                       plain, sha256_of, training_pipeline)
from mmrankkd.datasets.replay import REPLAY_KEY
from mmrankkd.datasets.transforms import VIEW_KEY, view_id

FORMAT = 'mmrankkd-teacher-store'
VERSION = 3
#: Bytes of one checksummed (sample block, view) slice of a store.
BLOCK_BYTES = 16 << 20
#: The files of every store: which views were written, each sample's label.
COMMON_FILES = {'filled': ('filled.u8', np.uint8),
                'labels': ('labels.i64', np.int64)}


class TeacherStoreError(ValueError):
    """A teacher store cannot be used (base class)."""


class StoreMismatchError(TeacherStoreError):
    """The store was made by another teacher, pipeline or data set."""


class StoreCorruptError(TeacherStoreError):
    """The store's files are missing, truncated or changed."""


class MissingViewError(TeacherStoreError):
    """A training sample's view is not in the store."""


# ----------------------------------------------------------------------
# Identity: what made the logits.
def file_sha256(path: str, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 of a model's state dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        value = value.detach().cpu().contiguous()
        digest.update(f'{name}:{value.dtype}:{tuple(value.shape)}'.encode())
        digest.update(value.numpy().tobytes() if value.dtype !=
                      torch.bfloat16 else value.view(torch.int16).numpy()
                      .tobytes())
    return digest.hexdigest()


def teacher_identity(distiller) -> Dict:
    """What decides the teacher's logits for a given input: its resolved
    config, checkpoint, loaded weights, preprocessing, precision and class
    count."""
    live = distiller.teacher_source
    ckpt = distiller.teacher_ckpt
    local = isinstance(ckpt, str) and osp.isfile(ckpt)
    return dict(
        teacher_config_sha256=sha256_of(distiller.teacher_cfg),
        teacher_config=plain(distiller.teacher_cfg),
        checkpoint=ckpt,
        checkpoint_sha256=file_sha256(ckpt) if local else None,
        weights_sha256=weights_sha256(live.model),
        teacher_input=live.teacher_input.describe(),
        teacher_autocast=live.autocast,
        teacher_channels_last=bool(live.channels_last),
        num_classes=distiller.num_classes)


#: Identity fields compared when a store is opened, with the fix to name.
_CHECKED = {
    'teacher_config_sha256': 'the teacher config differs',
    'checkpoint_sha256': 'the teacher checkpoint file differs',
    'weights_sha256': 'the loaded teacher weights differ',
    'teacher_input': 'the teacher\'s preprocessing differs',
    'teacher_autocast': 'model.teacher_autocast differs',
    'teacher_channels_last': 'model.teacher_channels_last differs',
    'num_classes': 'the class count differs',
}


# ----------------------------------------------------------------------
# Files.
def layout(index: Dict) -> Dict[str, tuple]:
    """``key -> (file name, dtype, shape)`` of a store's arrays."""
    n, v, c = index['num_samples'], index['num_views'], index['num_classes']
    k = index.get('topk')
    files = {}
    if k:
        kind = np.int16 if c <= np.iinfo(np.int16).max else np.int32
        files['values'] = ('topk_values.f32', np.float32, (n, v, k))
        files['indices'] = (f'topk_indices.{np.dtype(kind).str[1:]}',
                            kind, (n, v, k))
        files['rest'] = ('rest_logsumexp.f32', np.float32, (n, v))
    else:
        spatial = tuple(index.get('spatial') or ())
        files['logits'] = ('logits.f32', np.float32, (n, v, c) + spatial)
    files['filled'] = COMMON_FILES['filled'] + ((n, v), )
    files['labels'] = COMMON_FILES['labels'] + ((n, ), )
    return files


def topk_rows(logits: Tensor, k: int):
    """What a top-k store keeps of float32 ``(N, C)`` logits: the top-k
    values and classes (descending) and the log-sum-exp of the others
    (-inf when there are none)."""
    logits = logits.detach().float()
    values, indices = logits.topk(k, dim=1)
    rest = logits.scatter(1, indices, float('-inf')).logsumexp(dim=1)
    return values, indices, rest


def expand_topk(values: np.ndarray, indices: np.ndarray, rest: np.ndarray,
                num_classes: int) -> np.ndarray:
    """Full ``(N, C)`` logits from a top-k row: the kept classes get their
    values, the others share the rest's mass evenly (each gets
    ``rest - log(C - k)``), so the softmax at temperature 1 gives the kept
    classes their exact probabilities and spreads the remainder evenly
    (TinyViT's rule); no dropped class ranks above a kept one."""
    n, k = values.shape
    out = np.empty((n, num_classes), np.float32)
    if num_classes > k:
        out[:] = (rest - np.float32(np.log(num_classes - k)))[:, None]
    np.put_along_axis(out, indices.astype(np.int64), values, axis=1)
    return out


def _block_digest(arrays: Sequence[np.ndarray], start: int, stop: int,
                  view: int) -> str:
    """sha256 of samples ``start..stop-1`` of view ``view`` (arrays with a
    view axis) and of their per-sample arrays (labels)."""
    digest = hashlib.sha256()
    for array in arrays:
        part = array[start:stop, view] if array.ndim > 1 else \
            array[start:stop]
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def row_bytes(index: Dict) -> int:
    """Bytes of one (sample, view) row over a store's arrays with a view
    axis (the per-sample labels left out)."""
    return sum(int(np.prod(shape[2:])) * np.dtype(dtype).itemsize
               for _, dtype, shape in layout(index).values()
               if len(shape) > 1)


class TeacherStoreWriter:
    """Writes a store (used by ``tools/build_teacher_store.py``).

    Args:
        root (str): The store directory (created; must not hold a store).
        num_samples (int): Samples (rows) in the store.
        view_counts (list[int]): Exact mode: views of each view transform,
            in pipeline order; the store has their product per sample.
            Replay mode: ``[epochs]`` (view ``e`` is epoch ``e``'s).
        num_classes (int): Classes of the teacher's logits.
        block_size (int, optional): Samples per checksummed block (each
            block is checksummed per view). Defaults to None: as many as
            fill :data:`BLOCK_BYTES` per view.
        mode (str): ``'exact'`` (views enumerated) or ``'replay'`` (one
            view per epoch, made by :class:`mmrankkd.ReplayDataset`).
        topk (int, optional): Keep only the top-k logits of each view and
            the log-sum-exp of the rest (an approximation only some losses
            accept). Defaults to None (all logits).
        replay_seed (int, optional): The ``ReplayDataset`` seed (replay).
        spatial (tuple[int], optional): ``(H, W)`` of dense (segmentation)
            logits; empty for class logits. Defaults to ().
    """

    def __init__(self, root: str, num_samples: int, view_counts: List[int],
                 num_classes: int, block_size: Optional[int] = None,
                 mode: str = 'exact', topk: Optional[int] = None,
                 replay_seed: Optional[int] = None,
                 spatial: Sequence[int] = ()):
        if osp.exists(osp.join(root, 'index.json')):
            raise FileExistsError(
                f'{root} already holds a teacher store. Fix: choose a new '
                '--out directory or delete that one.')
        if topk is not None and not 1 <= int(topk) <= num_classes:
            raise ValueError(f'topk must be in [1, {num_classes}] (the class '
                             f'count), got {topk}. Fix: --topk between 1 and '
                             f'{num_classes}, or none (all logits).')
        if topk is not None and len(spatial):
            raise ValueError(
                'A top-k store of dense (segmentation) logits is not '
                'implemented. Fix: build a full store (no --topk).')
        os.makedirs(root, exist_ok=True)
        self.root = root
        self.index = dict(
            format=FORMAT, version=VERSION, mode=mode,
            num_samples=int(num_samples), view_counts=list(view_counts),
            num_views=int(np.prod(view_counts)), num_classes=int(num_classes),
            dtype='float32', spatial=[int(x) for x in spatial],
            topk=None if topk is None else int(topk),
            replay_seed=replay_seed)
        if block_size is None:
            block_size = BLOCK_BYTES // max(row_bytes(self.index), 1)
        self.index['block_size'] = int(min(max(block_size, 1),
                                           max(num_samples, 1)))
        self.arrays = {
            key: np.memmap(osp.join(root, name), dtype=dtype, mode='w+',
                           shape=shape)
            for key, (name, dtype, shape) in layout(self.index).items()}
        self.arrays['labels'][:] = -1

    def write(self, samples: np.ndarray, views: np.ndarray, logits: Tensor,
              labels: np.ndarray) -> None:
        """Store ``logits[i]`` (or its top-k) as view ``views[i]`` of
        ``samples[i]``."""
        k = self.index['topk']
        if k:
            values, indices, rest = topk_rows(logits, k)
            self.arrays['values'][samples, views] = values.cpu().numpy()
            self.arrays['indices'][samples, views] = indices.cpu().numpy()
            self.arrays['rest'][samples, views] = rest.cpu().numpy()
        else:
            spatial = tuple(self.index['spatial'])
            if tuple(logits.shape[2:]) != spatial:
                raise ValueError(
                    f'The teacher\'s logits are {tuple(logits.shape[1:])} '
                    f'per view, the store\'s '
                    f'{(self.index["num_classes"], ) + spatial}: the views '
                    'differ in size. Fix: a training pipeline whose views '
                    'all have one size (a fixed crop, or the data '
                    'preprocessor\'s size=...).')
            self.arrays['logits'][samples, views] = logits.detach().cpu(
            ).float().numpy()
        self.arrays['filled'][samples, views] = 1
        self.arrays['labels'][samples] = labels

    def close(self, **record) -> Dict:
        """Flush, checksum every block and write ``index.json`` (with
        ``record``: identity, pipeline, data set, build time)."""
        for array in self.arrays.values():
            array.flush()
        n, bs = self.index['num_samples'], self.index['block_size']
        arrays = list(self.arrays.values())
        self.index['block_sha256'] = [
            [_block_digest(arrays, s, min(s + bs, n), v)
             for v in range(self.index['num_views'])]
            for s in range(0, n, bs)]
        self.index['views_filled'] = int(self.arrays['filled'].sum())
        self.index.update(plain(record))
        tmp = osp.join(self.root, 'index.json.tmp')
        with open(tmp, 'w') as f:
            json.dump(self.index, f, indent=1)
        os.replace(tmp, osp.join(self.root, 'index.json'))
        del self.arrays
        return self.index


class TeacherStore:
    """A store opened for reading.

    Args:
        root (str): The store directory.
        verify (bool): Check the sha256 of each (block of samples, view)
            the first time it is read (blocks of :data:`BLOCK_BYTES`: the
            store is hashed once, spread over the views training reads).
            Sizes are always checked. Defaults to True.
    """

    def __init__(self, root: str, verify: bool = True):
        self.root = root
        self.verify = verify
        path = osp.join(root, 'index.json')
        if not osp.isfile(path):
            raise StoreCorruptError(
                f'{root} holds no teacher store (no index.json: not built, '
                'or the build was interrupted). Fix: run tools/'
                f'build_teacher_store.py CONFIG --out {root}.')
        try:
            with open(path) as f:
                self.index = json.load(f)
            assert self.index['format'] == FORMAT
            layout(self.index)
        except Exception as error:
            raise StoreCorruptError(
                f'{path} is not a readable teacher-store index ({error!r}). '
                'Fix: rebuild the store.') from error
        if self.index['version'] != VERSION:
            raise StoreMismatchError(
                f'{root} is a version {self.index["version"]} store; this '
                f'mmrankkd reads version {VERSION}. Fix: rebuild it.')
        self.arrays = {}
        for key, (name, dtype, shape) in layout(self.index).items():
            file = osp.join(root, name)
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            size = osp.getsize(file) if osp.isfile(file) else None
            if size != expected:
                raise StoreCorruptError(
                    f'{file} is {size} bytes, the index says {expected} '
                    f'({shape} {np.dtype(dtype).name}): the store is '
                    'truncated or was changed. Fix: rebuild it.')
            self.arrays[key] = np.memmap(file, dtype=dtype, mode='r',
                                         shape=shape)
        self.num_samples = self.index['num_samples']
        self.view_counts = list(self.index['view_counts'])
        self.num_classes = self.index['num_classes']
        #: ``'exact'`` or ``'replay'``.
        self.mode = self.index.get('mode', 'exact')
        #: Top-k kept per view (None: all logits).
        self.topk = self.index.get('topk')
        #: Dense stores: (H, W) of the teacher's logits; () for classes.
        self.spatial = tuple(self.index.get('spatial') or ())
        self._verified = np.zeros((len(self.index['block_sha256']),
                                   self.index['num_views']), bool)

    def _verify_blocks(self, samples: np.ndarray, views: np.ndarray) -> None:
        bs = self.index['block_size']
        arrays = list(self.arrays.values())
        for block, view in set(zip((samples // bs).tolist(),
                                   views.tolist())):
            if self._verified[block, view]:
                continue
            start = int(block) * bs
            stop = min(start + bs, self.num_samples)
            if _block_digest(arrays, start, stop, view) != \
                    self.index['block_sha256'][block][view]:
                raise StoreCorruptError(
                    f'{self.root}: samples {start}..{stop - 1}, view {view} '
                    'do not match their sha256 in index.json: the store was '
                    'changed or is corrupted. Fix: rebuild it.')
            self._verified[block, view] = True

    def check_identity(self, identity: Dict) -> None:
        """Refuse a store made by another teacher (config, checkpoint,
        weights, preprocessing, precision, class count)."""
        for key, what in _CHECKED.items():
            stored, ours = self.index.get(key), identity.get(key)
            if key == 'checkpoint_sha256' and (stored is None or ours is None):
                continue  # a URL: the weights' sha256 decides
            if stored != ours:
                raise StoreMismatchError(
                    f'Teacher store {self.root} does not fit this teacher: '
                    f'{what} (store: {stored!r}, this run: {ours!r}; store '
                    f'built from checkpoint {self.index.get("checkpoint")!r}'
                    '). Fix: build a store for this teacher with tools/'
                    'build_teacher_store.py, or point model.teacher_store at '
                    'the right one.')

    def read(self, samples: np.ndarray, views: np.ndarray) -> np.ndarray:
        """float32 ``(len(samples), num_classes[, H, W])``; raises
        :class:`MissingViewError` for a view that was not built."""
        if len(samples) and (samples.min() < 0 or
                             samples.max() >= self.num_samples):
            bad = samples[(samples < 0) | (samples >= self.num_samples)]
            raise MissingViewError(
                f'Samples {bad.tolist()[:8]} are not in teacher store '
                f'{self.root} ({self.num_samples} samples). Fix: build the '
                'store for the whole training set.')
        num_views = self.index['num_views']
        if len(views) and (views.min() < 0 or views.max() >= num_views):
            bad = views[(views < 0) | (views >= num_views)]
            what = ('epochs' if self.mode == 'replay' else 'views')
            raise MissingViewError(
                f'Teacher store {self.root} holds {what} 0..{num_views - 1}; '
                f'the batch asks for {sorted(set(bad.tolist()))[:8]}. Fix: '
                + ('build the store for every training epoch (tools/'
                   'build_teacher_store.py --epochs).' if self.mode ==
                   'replay' else 'rebuild it with this pipeline.'))
        if self.verify:
            self._verify_blocks(samples, views)
        missing = self.arrays['filled'][samples, views] == 0
        if missing.any():
            pairs = list(zip(samples[missing].tolist(),
                             views[missing].tolist()))
            raise MissingViewError(
                f'Teacher store {self.root} lacks (sample, view) {pairs[:8]}'
                '. Fix: build it for every sample and view (no '
                '--num-samples), or set model.teacher_store.on_missing='
                "'live' to run the teacher for such batches.")
        if self.topk:
            arrays = self.arrays
            return expand_topk(np.asarray(arrays['values'][samples, views]),
                               np.asarray(arrays['indices'][samples, views]),
                               np.asarray(arrays['rest'][samples, views]),
                               self.num_classes)
        return np.asarray(self.arrays['logits'][samples, views])

    def labels(self, samples: np.ndarray) -> np.ndarray:
        return np.asarray(self.arrays['labels'][samples])


# ----------------------------------------------------------------------
# The teacher source.
class StoredTeacher:
    """Teacher logits read from a :class:`TeacherStore`.

    Args:
        store (TeacherStore): The opened store.
        live (LiveTeacher): The live teacher, for validation predictions,
            the spot check and (``on_missing='live'``) missing views.
        spot_check_interval (int): Every this many training batches
            (counting from the first), also run the live teacher and refuse
            a difference beyond ``spot_check_tol``. 0 turns it off.
        spot_check_tol (float): Largest allowed absolute difference,
            relative to the batch's largest absolute logit. Defaults to 1e-4
            (float32 noise of a different batch composition is ~1e-6).
        on_missing (str): ``'error'`` (default): a view missing from the
            store is an error. ``'live'``: run the teacher for that batch
            (counted in :attr:`live_batches`, logged once).
    """

    def __init__(self, store: TeacherStore, live, spot_check_interval=0,
                 spot_check_tol: float = 1e-4, on_missing: str = 'error'):
        if on_missing not in ('error', 'live'):
            raise ValueError(
                "model.teacher_store.on_missing must be 'error' or 'live', "
                f'got {on_missing!r}.')
        self.store = store
        self.live = live
        self.spot_check_interval = int(spot_check_interval)
        self.spot_check_tol = float(spot_check_tol)
        self.on_missing = on_missing
        self.calls = 0
        self.live_batches = 0
        self.spot_checks = 0

    def keys(self, data_samples: Optional[list]):
        """(sample indices, view ids, labels) of a batch from its
        metainfo; named errors where the pipeline does not record them."""
        if not data_samples:
            raise MissingViewError(
                'The teacher store needs the data samples (sample_idx and '
                f'{VIEW_KEY} in their metainfo); the batch has none.')
        samples, views, labels = [], [], []
        counts = self.store.view_counts
        for ds in data_samples:
            meta = ds.metainfo
            if self.store.mode == 'replay':
                views.append(self._replay_epoch(meta))
            else:
                views.append(self._exact_view(meta, counts))
            samples.append(int(meta['sample_idx']))
            if 'gt_label' in ds:
                labels.append(int(ds.gt_label.reshape(-1)[0]))
        return np.asarray(samples), np.asarray(views), labels

    @staticmethod
    def _exact_view(meta: dict, counts: List[int]) -> int:
        if 'sample_idx' not in meta or VIEW_KEY not in meta:
            raise MissingViewError(
                'A training sample does not say which view it is '
                f'(metainfo has {sorted(meta)}; needs sample_idx and '
                f'{VIEW_KEY}). Fix: use mmrankkd.ViewRandomCrop / '
                'mmrankkd.ViewRandomFlip in the training pipeline and '
                "PackInputs(meta_keys=(..., 'sample_idx', "
                f"'{VIEW_KEY}')); see docs/teacher_store.md.")
        parts = meta[VIEW_KEY]
        if [int(c) for _, c in parts] != counts:
            raise StoreMismatchError(
                f'The sample\'s view transforms have '
                f'{[c for _, c in parts]} views, the store '
                f'{counts}: the training pipeline differs from the '
                'store\'s. Fix: train with the pipeline the store was '
                'built with, or rebuild the store.')
        return view_id(parts)

    def _replay_epoch(self, meta: dict) -> int:
        if 'sample_idx' not in meta or REPLAY_KEY not in meta:
            raise MissingViewError(
                f'Teacher store {self.store.root} is a replay store, but a '
                'training sample has no replayed view (metainfo has '
                f'{sorted(meta)}; needs sample_idx and {REPLAY_KEY}). Fix: '
                "train_dataloader.dataset=dict(type='mmrankkd.ReplayDataset',"
                " seed=..., dataset=...) with sampler=dict(type='mmrankkd."
                "ReplaySampler', ...); see docs/teacher_store.md.")
        seed, epoch, views = meta[REPLAY_KEY]
        stored = self.store.index.get('replay_seed')
        if int(seed) != stored:
            raise StoreMismatchError(
                f'The training views are replayed with ReplayDataset seed '
                f'{seed}, teacher store {self.store.root} with seed '
                f'{stored}: other views. Fix: set the ReplayDataset seed to '
                f'{stored}, or rebuild the store.')
        stored = self.store.index.get('replay_views_sha256')
        if views != stored:
            raise StoreMismatchError(
                f'The replayed training set (its data set config and '
                f'pipelines: {views}) differs from teacher store '
                f'{self.store.root}\'s ({stored}): other views. Fix: train '
                'with the data set and pipeline the store was built from, '
                'or rebuild the store.')
        return int(epoch)

    def logits(self, inputs: Tensor,
               data_samples: Optional[list] = None) -> Tensor:
        """The stored float32 logits of each sample's view."""
        samples, views, labels = self.keys(data_samples)
        calls, self.calls = self.calls, self.calls + 1
        try:
            rows = self.store.read(samples, views)
        except MissingViewError:
            if self.on_missing != 'live':
                raise
            if not self.live_batches:
                print_log(
                    'Teacher store: a batch has views the store lacks; '
                    'running the live teacher for such batches '
                    "(on_missing='live').", logger='current',
                    level=logging.WARNING)
            self.live_batches += 1
            return self.live.logits(inputs, data_samples)
        if labels and len(labels) == len(samples):
            stored = self.store.labels(samples)
            if not np.array_equal(stored, np.asarray(labels)):
                bad = np.flatnonzero(stored != np.asarray(labels))[:4]
                raise StoreMismatchError(
                    f'Samples {samples[bad].tolist()} have labels '
                    f'{np.asarray(labels)[bad].tolist()} but the store '
                    f'recorded {stored[bad].tolist()}: another data set or '
                    'sample order. Fix: train on the data set the store was '
                    'built from, or rebuild the store.')
        out = torch.from_numpy(rows).to(inputs.device)
        if self.spot_check_interval and calls % self.spot_check_interval \
                == 0:
            self.spot_check(out, inputs, data_samples, samples, views)
        return out

    def spot_check(self, stored: Tensor, inputs: Tensor, data_samples,
                   samples, views) -> None:
        live = self.live.logits(inputs, data_samples)
        if self.store.topk:  # compare what the store keeps of them
            kept = topk_rows(live, self.store.topk)
            live = torch.from_numpy(expand_topk(
                *(x.cpu().numpy() for x in kept),
                self.store.num_classes)).to(live.device)
        self.spot_checks += 1
        diff = (live - stored).abs().max().item()
        scale = max(live.abs().max().item(), 1.0)
        if not diff <= self.spot_check_tol * scale:
            raise StoreMismatchError(
                f'Spot check: the stored teacher logits differ from the live '
                f'teacher\'s by up to {diff:.3g} (tolerance '
                f'{self.spot_check_tol * scale:.3g}) on samples '
                f'{samples.tolist()[:8]}, views {views.tolist()[:8]}. The '
                'store does not match this teacher, pipeline or data. Fix: '
                'rebuild the store.')

    def predict(self, inputs: Tensor, data_samples: Optional[list] = None):
        """Validation: the live teacher's predictions."""
        return self.live.predict(inputs, data_samples)


def check_storable(distiller, mode: str) -> None:
    """Refuse a distiller whose teacher logits a store of ``mode``
    (``'exact'`` or ``'replay'``) cannot hold: a segmentor's in exact mode
    (the view transforms crop images, not label maps), or batches mixed
    by ``batch_augments`` (a mixed image is no view of one sample). Used
    by the distiller and by ``tools/build_teacher_store.py``."""
    if distiller.kind != 'cls' and mode != 'replay':
        raise ValueError(
            'An exact-mode teacher store holds class logits of '
            'classifiers: its view transforms (mmrankkd.ViewRandomCrop / '
            'ViewRandomFlip) crop images, not label maps. Fix: store a '
            'segmentor\'s dense logits in replay mode (mmrankkd.'
            'ReplayDataset + ReplaySampler; docs/teacher_store.md), or '
            'distil with the live teacher (no model.teacher_store).')
    if getattr(distiller.data_preprocessor, 'batch_augments', None):
        raise ValueError(
            'A teacher store with data_preprocessor.batch_augments '
            '(Mixup/CutMix): mixed images are not views of one sample. Fix: '
            'remove batch_augments, or use the live teacher (no '
            'model.teacher_store).')


def check_topk_losses(losses: Dict, store: TeacherStore) -> None:
    """Refuse a top-k store for losses that need every logit or the whole
    ranking (``BaseLogitLoss.teacher_topk``), each with its reason; log
    which losses take it exactly and which approximately."""
    k = store.topk
    verdicts = {name: (loss.teacher_topk(k) if hasattr(loss, 'teacher_topk')
                       else 'refused') for name, loss in losses.items()}
    refused = [f'{n} ({type(losses[n]).__name__}: ' +
               getattr(losses[n], 'topk_refusal',
                       'it does not say that it takes a top-k teacher') +
               ')' for n, v in verdicts.items() if v == 'refused']
    if refused:
        raise StoreMismatchError(
            f'Teacher store {store.root} keeps only the top-{k} logits of '
            f'each view, which {"; ".join(refused)} cannot use. Fix: build '
            'a full store (no --topk), or train these losses with the live '
            'teacher.')
    named = {v: [f'{n} ({type(losses[n]).__name__})' for n, got in
                 verdicts.items() if got == v]
             for v in ('exact', 'approximate')}
    if named['approximate']:
        print_log(
            f'Teacher store {store.root} keeps the top-{k} logits of each '
            f'view: {", ".join(named["approximate"])} get an approximate '
            'teacher (the other classes share the rest of its softmax mass '
            'evenly)' + (f'; {", ".join(named["exact"])} exact'
                         if named['exact'] else '') + '.',
            logger='current', level=logging.WARNING)


def build_stored_teacher(cfg: Union[str, dict], distiller) -> StoredTeacher:
    """``model.teacher_store`` -> a :class:`StoredTeacher` around the
    distiller's live teacher, refusing a store that does not fit.

    ``cfg``: the store directory, or ``dict(path=..., verify=True,
    spot_check_interval=0, spot_check_tol=1e-4, on_missing='error')``.
    """
    cfg = dict(path=cfg) if isinstance(cfg, str) else dict(cfg)
    if 'path' not in cfg:
        raise ValueError(
            'model.teacher_store must be a directory or a dict with '
            f'path=<directory>, got {cfg!r}.')
    store = TeacherStore(cfg.pop('path'), verify=cfg.pop('verify', True))
    check_storable(distiller, store.mode)
    store.check_identity(teacher_identity(distiller))
    if store.topk:
        check_topk_losses(distiller.distill_losses, store)
    source = StoredTeacher(store, distiller.teacher_source, **cfg)
    what = 'epochs' if store.mode == 'replay' else 'views'
    kept = f'top-{store.topk}' if store.topk else 'all'
    print_log(
        f'Teacher logits from {store.mode} store {store.root} '
        f'({store.num_samples} samples x {store.index["num_views"]} {what}, '
        f'{store.index["views_filled"]} built, {kept} logits kept); the '
        'live teacher runs only '
        'for validation' + (f' and a spot check every '
                            f'{source.spot_check_interval} batches'
                            if source.spot_check_interval else '') + '.',
        logger='current')
    return source


def check_store_config(cfg) -> None:
    """Start-up check of a run config with ``model.teacher_store``: its
    training pipeline and data set must be the store's."""
    store_cfg = (cfg.get('model') or {}).get('teacher_store')
    if not store_cfg:
        return
    path = store_cfg if isinstance(store_cfg, str) else store_cfg.get('path')
    index_path = osp.join(str(path), 'index.json')
    if not osp.isfile(index_path):
        TeacherStore(str(path))  # raises the named error
    with open(index_path) as f:
        index = json.load(f)
    dataset = cfg.train_dataloader.dataset
    pipeline = pipeline_record(training_pipeline(dataset))
    if pipeline != index.get('pipeline'):
        raise StoreMismatchError(
            f'The training pipeline differs from teacher store {path}\'s.\n'
            f'  this run: {json.dumps(pipeline)}\n'
            f'  store:    {json.dumps(index.get("pipeline"))}\n'
            'Fix: train with the store\'s pipeline, or rebuild the store '
            'from this config.')
    if index.get('mode') == 'replay':
        _check_replay_run(cfg, index, str(path))
    record = dataset_record(dataset)
    if record != index.get('dataset'):
        raise StoreMismatchError(
            f'The training data set {record} differs from teacher store '
            f'{path}\'s {index.get("dataset")}. Fix: train on the store\'s '
            'data set, or rebuild the store.')


def _check_replay_run(cfg, index: Dict, path: str) -> None:
    """A replay store needs the replay sampler, and an epoch-based run no
    more epochs than the store holds."""
    sampler = cfg.train_dataloader.get('sampler') or {}
    if 'ReplaySampler' not in str(sampler.get('type', '')):
        raise StoreMismatchError(
            f'Teacher store {path} is a replay store, but train_dataloader.'
            f'sampler is {sampler.get("type")!r}: the data loader would not '
            "tell the views' epochs. Fix: sampler=dict(type='mmrankkd."
            f"ReplaySampler', sampler={plain(sampler)!r}).")
    # The world size as torchrun / Slurm give it (1 otherwise).
    world = int(os.environ.get('WORLD_SIZE') or
                os.environ.get('SLURM_NTASKS') or 1)
    epochs = replay_passes(cfg, int(index.get('dataset_len') or
                                    index['num_samples']), world)
    if epochs and epochs > index['num_views']:
        raise StoreMismatchError(
            f'This run draws views of {epochs} epochs (passes over the data '
            f'set; {world} process(es)), but teacher store {path} holds '
            f'{index["num_views"]}. Fix: build the store with --epochs '
            f'{epochs}, or train fewer epochs.')


def replay_passes(cfg, dataset_len: int, world_size: int) -> Optional[int]:
    """How many epochs (passes over the data set) a run's training loop
    draws: ``max_epochs``, or for an iteration loop the passes its
    ``max_iters`` batches take with the replay sampler's wrapped sampler
    (``InfiniteSampler``: the batches of all ranks in one stream;
    ``DefaultSampler``: each rank's share, padded, per pass)."""
    train_cfg = cfg.get('train_cfg') or {}
    if train_cfg.get('max_epochs'):
        return int(train_cfg['max_epochs'])
    if not train_cfg.get('max_iters'):
        return None
    loader = cfg.train_dataloader
    iters = int(train_cfg['max_iters'])
    batch = int(loader.get('batch_size', 1))
    inner = (loader.get('sampler') or {}).get('sampler') or {}
    if 'Infinite' in str(inner.get('type', '')):
        return -(-iters * batch * world_size // max(dataset_len, 1))
    per_rank = -(-dataset_len // world_size)
    per_pass = (per_rank // batch if loader.get('drop_last', False) else
                -(-per_rank // batch))
    return -(-iters // max(per_pass, 1))
