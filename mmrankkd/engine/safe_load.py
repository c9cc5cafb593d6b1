"""Weights-only checkpoint loading for OpenMMLab checkpoints on torch >= 2.6.

MMEngine 0.10.7 calls ``torch.load(f, map_location)``; since torch 2.6 that
means ``weights_only=True``, which refuses the few non-tensor types MMEngine
puts into its own checkpoints (``HistoryBuffer`` and numpy arrays/scalars in
``message_hub``), so ``--resume``, ``load_from`` and teacher loading fail with
``UnpicklingError: Weights only load failed``.

Instead of turning weights-only loading off (which would execute arbitrary
pickles), ``import mmrankkd`` allow-lists exactly those types with
:func:`torch.serialization.add_safe_globals`, and wraps MMEngine's checkpoint
loaders so that a checkpoint holding anything else fails with an error that
names the offending type and the ways out.
"""
import functools
import pickle
import re
from typing import Callable, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_globals() -> List:
    """numpy objects that pickled arrays, dtypes and scalars reference,
    under both numpy-1 (``numpy.core``) and numpy-2 (``numpy._core``)
    names, so checkpoints written with either load."""
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    out = [np.ndarray, np.dtype]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out.append((multiarray._reconstruct, f'{mod}._reconstruct'))
        out.append((multiarray.scalar, f'{mod}.scalar'))
    # dtype classes (numpy >= 1.25 pickles dtypes as numpy.dtypes.XDType).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            obj = getattr(dtypes, name)
            if isinstance(obj, type) and issubclass(obj, np.dtype):
                out.append(obj)
    return out


def _history_buffer_getattr(obj, name):
    """Stands in for ``builtins.getattr`` while unpickling.

    ``HistoryBuffer`` pickles its statistics table as
    ``getattr(HistoryBuffer, 'mean')`` etc. Allow-listing the real
    ``getattr`` would let a checkpoint fetch any attribute of any allowed
    object; this only resolves public methods of ``HistoryBuffer``.
    """
    if obj is HistoryBuffer and isinstance(name, str) and \
            not name.startswith('_') and callable(
                getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a checkpoint; only '
        'HistoryBuffer statistics methods are.')


#: What OpenMMLab checkpoints legitimately hold besides tensors and
#: containers.
SAFE_GLOBALS = [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')
                ] + _numpy_globals()


def allow_openmmlab_checkpoint_types() -> None:
    """Allow-list :data:`SAFE_GLOBALS` for ``torch.load(weights_only=True)``
    (idempotent)."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds objects outside the weights-only allow-list."""


def _explain(filename, err: Exception) -> UnsafeCheckpointError:
    found = re.search(r'GLOBAL ([\w.]+)', str(err))
    what = f' ({found.group(1)})' if found else ''
    return UnsafeCheckpointError(
        f'Refusing to load "{filename}": it holds Python objects{what} '
        'outside the weights-only allow-list (tensors, containers, numbers, strings, '
        'numpy arrays and MMEngine HistoryBuffer), and unpickling them could '
        'run arbitrary code.\n'
        'Fix: if you trust the file, either allow the named type with '
        'torch.serialization.add_safe_globals([...]) before training, or '
        're-save it as a plain state dict: torch.save({"state_dict": '
        'torch.load(f, weights_only=False)["state_dict"]}, out).')


def _guard(loader: Callable) -> Callable:
    if getattr(loader, '_mmrankkd_guarded', False):
        return loader

    @functools.wraps(loader)
    def guarded(filename, *args, **kwargs):
        try:
            return loader(filename, *args, **kwargs)
        except pickle.UnpicklingError as e:
            if isinstance(e, UnsafeCheckpointError):
                raise
            raise _explain(filename, e) from None

    guarded._mmrankkd_guarded = True
    return guarded


#: MMEngine's checkpoint loaders (public functions of
#: ``mmengine.runner.checkpoint``) and the prefixes they serve.
_SCHEMES = (
    ('load_from_local', ''),
    ('load_from_http', ('http://', 'https://')),
    ('load_from_pavi', 'pavi://'),
    ('load_from_ceph', (r'(\S+\:)?s3://', r'(\S+\:)?petrel://')),
    ('load_from_torchvision', ('modelzoo://', 'torchvision://')),
    ('load_from_openmmlab', ('open-mmlab://', 'openmmlab://')),
    ('load_from_mmcls', 'mmcls://'),
)


def guard_checkpoint_loaders() -> None:
    """Re-register every MMEngine checkpoint scheme loader (local, http,
    ...) through ``CheckpointLoader.register_scheme(..., force=True)``,
    wrapped so a refused unpickle raises :class:`UnsafeCheckpointError`."""
    from mmengine.runner import checkpoint
    for name, prefixes in _SCHEMES:
        loader = getattr(checkpoint, name, None)
        if loader is not None:
            CheckpointLoader.register_scheme(
                prefixes, _guard(loader), force=True)


def safe_torch_load(filename, map_location='cpu'):
    """``torch.load(..., weights_only=True)`` with the allow-list and a
    clear error."""
    allow_openmmlab_checkpoint_types()
    try:
        return torch.load(filename, map_location=map_location,
                          weights_only=True)
    except pickle.UnpicklingError as e:
        raise _explain(filename, e) from None


allow_openmmlab_checkpoint_types()
guard_checkpoint_loaders()
