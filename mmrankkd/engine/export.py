"""Turn a distillation checkpoint into a plain student checkpoint (and
config) that mmseg's / mmpretrain's own inference APIs load."""
import copy
import os
import os.path as osp
from typing import Optional

import torch
from mmengine.config import Config, ConfigDict

from mmrankkd.models.distillers.checkpoint import strip_student_prefix
from mmrankkd.models.distillers.model_source import resolve_model_cfg
from .safe_load import safe_torch_load

_DROP = ('data_preprocessor.', 'distill_losses.')


def _plain(obj):
    """Containers, numbers and strings only, so the file loads with
    ``torch.load(weights_only=True)`` without mmrankkd's allow-list."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj) if isinstance(
            obj, list) else tuple(_plain(v) for v in obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, 'item') and getattr(obj, 'size', 2) == 1:
        return obj.item()  # numpy scalar
    if hasattr(obj, 'tolist'):
        return obj.tolist()
    return str(obj)


def student_state_dict(checkpoint: dict) -> dict:
    """The student's weights from a distillation checkpoint (``student.*``
    keys, prefix removed). A plain checkpoint is returned unchanged."""
    return strip_student_prefix(checkpoint.get('state_dict', checkpoint))


def student_config(distill_cfg: Config) -> Config:
    """A plain config for the student: the distillation config with its
    ``model`` replaced by the student model, plain val/test loops, no
    agreement metrics, no mmrankkd hooks and no ``custom_imports`` of
    mmrankkd."""
    cfg = copy.deepcopy(distill_cfg)
    model, scope = resolve_model_cfg(cfg.model.student, 'student')
    if scope is not None and scope != cfg.get('default_scope'):
        model['_scope_'] = scope
    cfg.model = model

    def keep(m):
        return 'mmrankkd' not in str(m.get('type', ''))

    for key in ('val_evaluator', 'test_evaluator'):
        ev = cfg.get(key)
        if isinstance(ev, (list, tuple)):
            kept = [m for m in ev if keep(m)]
            cfg[key] = kept[0] if len(kept) == 1 else kept
    for key, loop in (('val_cfg', 'ValLoop'), ('test_cfg', 'TestLoop')):
        if key in cfg and 'mmrankkd' in str(cfg[key].get('type', '')):
            cfg[key] = ConfigDict(type=loop)
    hooks = [h for h in cfg.get('custom_hooks') or [] if keep(h)]
    if 'custom_hooks' in cfg:
        cfg.custom_hooks = hooks
    imports = cfg.get('custom_imports')
    if imports:
        rest = [m for m in imports.get('imports', [])
                if not str(m).startswith('mmrankkd')]
        if rest:
            cfg.custom_imports = dict(imports, imports=rest)
        else:
            cfg.pop('custom_imports')
    for key in ('teacher_ckpt', ):
        cfg.pop(key, None)
    return cfg


def export_student(checkpoint: str,
                   out: str,
                   config: Optional[str] = None,
                   config_out: Optional[str] = None,
                   cfg_options: Optional[dict] = None) -> dict:
    """Write a plain student checkpoint (``{'meta', 'state_dict'}``).

    Args:
        checkpoint (str): A distillation checkpoint.
        out (str): Path of the student checkpoint to write.
        config (str, optional): The distillation config; needed to write
            the student config.
        config_out (str, optional): Where to write the plain student
            config (defaults to ``<out>.py`` when ``config`` is given).
        cfg_options (dict, optional): Overrides merged into the
            distillation config before the student config is written, as
            ``--cfg-options`` of ``tools/train.py`` (e.g.
            ``{'test_dataloader.dataset.data_root': 'data/x'}``), so the
            written config holds what training used.

    Returns:
        dict: ``dict(checkpoint=out, config=config_out or None,
        num_tensors=...)``.
    """
    ckpt = safe_torch_load(checkpoint, map_location='cpu')
    state = student_state_dict(ckpt)
    state = {k: v for k, v in state.items() if not k.startswith(_DROP)}
    meta = _plain(ckpt.get('meta', {}) or {})
    meta = {k: meta[k] for k in ('dataset_meta', 'epoch', 'iter', 'seed',
                                 'mmengine_version', 'time') if k in meta}
    meta['exported_from'] = osp.abspath(checkpoint)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    torch.save({'meta': meta, 'state_dict': state}, out)
    written = None
    if config is not None:
        written = config_out or osp.splitext(out)[0] + '.py'
        cfg = Config.fromfile(config)
        if cfg_options:
            cfg.merge_from_dict(cfg_options)
        student_config(cfg).dump(written)
    elif cfg_options:
        raise ValueError('cfg_options change the written student config: '
                         'pass the distillation config too (--config)')
    return dict(checkpoint=out, config=written, num_tensors=len(state))
