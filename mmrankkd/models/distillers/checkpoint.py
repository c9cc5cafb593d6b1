"""Checkpoint I/O of distillers: strict teacher loading and the ``student.``
prefix of distillation checkpoints.

A distiller's ``state_dict()`` holds the student only, under ``student.``;
:func:`strip_student_prefix` turns such a state dict back into a plain
student state dict (used for teachers that were distilled students and by
:mod:`mmrankkd.engine.export`).
"""
import os.path as osp
import re
from typing import Dict, List, Optional
from urllib.parse import urlparse

import torch.nn as nn
from mmengine.runner.checkpoint import CheckpointLoader

STUDENT_PREFIX = 'student.'
_URL_RE = re.compile(r'^[a-z][a-z0-9+\-.]*://|^(open-mmlab|openmmlab|'
                     r'torchvision|mmcls|modelzoo):', re.I)
_MAX_KEYS_SHOWN = 10


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL or an OpenMMLab model-zoo scheme rather
    than a local file."""
    return bool(_URL_RE.match(path))


def strip_student_prefix(state: Dict) -> Dict:
    """``student.*`` keys without the prefix when the state dict comes from
    a distiller; otherwise ``state`` unchanged (as a new dict)."""
    if not any(k.startswith(STUDENT_PREFIX) for k in state):
        return dict(state)
    return {k[len(STUDENT_PREFIX):]: v for k, v in state.items()
            if k.startswith(STUDENT_PREFIX)}


def _fmt_keys(keys: List[str]) -> str:
    keys = sorted(keys)
    shown = ', '.join(keys[:_MAX_KEYS_SHOWN])
    more = len(keys) - _MAX_KEYS_SHOWN
    return shown + (f', ... (+{more} more)' if more > 0 else '')


def check_teacher_ckpt(ckpt: Optional[str]) -> str:
    """Fail early (before any model is built) when ``ckpt`` is unset or a
    local file that does not exist. URLs are checked by
    :func:`read_teacher_checkpoint`, which downloads them."""
    if not isinstance(ckpt, str) or not ckpt:
        raise ValueError(
            'model.teacher_ckpt is required: the path (or URL) of the trained '
            'teacher checkpoint. Fix: set model.teacher_ckpt in the config or '
            'pass --cfg-options model.teacher_ckpt=/path/to/teacher.pth')
    if not is_remote(ckpt) and not osp.isfile(osp.expanduser(ckpt)):
        raise FileNotFoundError(
            f'Teacher checkpoint "{ckpt}" does not exist. Fix: train or '
            'download the teacher and set model.teacher_ckpt (or pass '
            '--cfg-options model.teacher_ckpt=/path/to/teacher.pth).')
    return ckpt


def read_teacher_checkpoint(ckpt: str) -> dict:
    """Read (for a URL: download once, with the request that fetches it)
    the teacher checkpoint, with a named error when it cannot be had.

    Called before any model is built, so an unreachable URL fails at once.
    Downloads go through MMEngine's ``CheckpointLoader`` (the torch hub
    cache; under torch.distributed rank 0 downloads and the other ranks
    read the cache).
    """
    check_teacher_ckpt(ckpt)
    try:
        checkpoint = CheckpointLoader.load_checkpoint(
            osp.expanduser(ckpt), map_location='cpu', logger='current')
    except Exception as e:  # URLError, HTTPError, timeouts, ...
        if not is_remote(ckpt):
            raise
        name = osp.basename(urlparse(ckpt).path) or 'teacher.pth'
        raise FileNotFoundError(
            f'Teacher checkpoint URL "{ckpt}" cannot be read ({e}). Fix: '
            'download it where you have network, then pass '
            f'--cfg-options model.teacher_ckpt=/path/to/{name} (or set '
            'model.teacher_ckpt in the config).') from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f'Teacher checkpoint "{ckpt}" holds a '
                         f'{type(checkpoint).__name__}, not a state dict.')
    return checkpoint


def load_teacher_checkpoint(teacher: nn.Module,
                            ckpt: str,
                            checkpoint: Optional[dict] = None) -> dict:
    """Load ``ckpt`` into ``teacher`` strictly, with errors that list the
    mismatching keys.

    Accepts mmengine checkpoints (``state_dict``), bare state dicts, DDP
    prefixes (``module.``) and mmrankkd distillation checkpoints (keys under
    ``student.``, used when a distilled model becomes a teacher). The
    model's own load hooks run (e.g. SwinV2 regenerates buffers that
    checkpoints leave out), and what they account for is not reported as
    missing.

    Args:
        teacher (nn.Module): The teacher model.
        ckpt (str): The checkpoint's path or URL (named in errors).
        checkpoint (dict, optional): The checkpoint already read by
            :func:`read_teacher_checkpoint`; read from ``ckpt`` if None.

    Returns:
        dict: The checkpoint's ``meta`` (may be empty).
    """
    if checkpoint is None:
        checkpoint = read_teacher_checkpoint(ckpt)
    state = checkpoint.get('state_dict', checkpoint)
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    state = strip_student_prefix(state)
    expected = teacher.state_dict()
    shape = [f'{k}: checkpoint {tuple(state[k].shape)} vs teacher '
             f'{tuple(v.shape)}' for k, v in expected.items()
             if k in state and hasattr(state[k], 'shape')
             and tuple(state[k].shape) != tuple(v.shape)]
    missing: List[str] = []
    unexpected: List[str] = []
    if not shape:
        result = teacher.load_state_dict(state, strict=False)
        # Keys the checkpoint has but the model's own load hooks dropped
        # (SwinV2 re-creates its relative_coords_table) are not missing.
        missing = [k for k in result.missing_keys if k not in state]
        unexpected = result.unexpected_keys
    if missing or unexpected or shape:
        lines = [f'Teacher checkpoint "{ckpt}" does not fit model.teacher '
                 f'({type(teacher).__name__}).']
        if missing:
            lines.append(f'  missing keys ({len(missing)}): '
                         f'{_fmt_keys(missing)}')
        if unexpected:
            lines.append(f'  unexpected keys ({len(unexpected)}): '
                         f'{_fmt_keys(unexpected)}')
        if shape:
            lines.append(f'  shape mismatches ({len(shape)}): '
                         + '; '.join(shape[:_MAX_KEYS_SHOWN]))
        lines.append('Fix: make model.teacher the architecture this '
                     'checkpoint was trained with (depth, channels, '
                     'num_classes), or point model.teacher_ckpt at the '
                     'checkpoint of this teacher.')
        raise ValueError('\n'.join(lines))
    return checkpoint.get('meta', {}) or {}
