# Convert a released CIFAR-100 checkpoint of the CRD / RepDistiller model zoo
# (the teachers `<arch>_vanilla/ckpt_epoch_240.pth`, or mdistiller's students)
# into a checkpoint of our model config
# configs/cifar100/_base_/models/<arch>.py, which the distiller's
# `teacher_ckpt` (and mmengine's load_checkpoint) loads strictly.
#
#   python tools/convert_crd_checkpoint.py \
#       save/models/resnet32x4_vanilla/ckpt_epoch_240.pth \
#       checkpoints/cifar100/resnet32x4.pth --arch resnet32x4
#
# Accepted inputs: {'epoch', 'model': state_dict, 'accuracy', 'optimizer'}
# (the released teachers, written by an old torch in the legacy format,
# CUDA tensors, a numpy float64 learning rate), {'model': state_dict}
# (mdistiller's students), or a bare state dict; a `module.` prefix is
# dropped. The file is read weights-only on the CPU: tensors, containers,
# numbers, numpy scalars and dtypes load, anything else is refused.
#
# Key mapping: the original's final linear layer (`fc.`, `classifier.`,
# `classifier.0.` or `linear.`) -> `head.fc.`, every other key `k` ->
# `backbone.k`; norm layers without `num_batches_tracked` (torch < 0.4.1)
# get it (0). The result is {'state_dict': ..., 'meta': {...}}.
import argparse
import os
import os.path as osp
import sys
from collections import OrderedDict

import torch

import mmrankkd  # noqa: F401  (weights-only allow-list, backbones)
from mmrankkd.engine.safe_load import UnsafeCheckpointError, safe_torch_load
from mmrankkd.models.backbones import (CIFAR_ZOO_ARCHS, ORIGINAL_HEAD_PREFIX,
                                       fill_num_batches_tracked,
                                       original_to_zoo_state_dict)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MODEL_CONFIGS = osp.join(REPO, 'configs', 'cifar100', '_base_', 'models')
_MAX_KEYS_SHOWN = 8


class ArchMismatchError(ValueError):
    """The checkpoint's keys or shapes are not those of ``--arch``."""


def model_config_path(arch):
    """``configs/cifar100/_base_/models/<arch>.py``."""
    return osp.join(MODEL_CONFIGS, f'{arch}.py')


def build_zoo_model(arch, config=None, device=None):
    """Build the mmpretrain model of ``arch`` from its config."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(config or model_config_path(arch))
    if device is None:
        return MODELS.build(cfg.model)
    with torch.device(device):
        return MODELS.build(cfg.model)


def extract_state_dict(checkpoint, src):
    """The state dict inside a loaded released checkpoint, plus what else
    it says (epoch, accuracy) as plain numbers."""
    if not isinstance(checkpoint, dict):
        raise ValueError(
            f'"{src}" holds a {type(checkpoint).__name__}, not a checkpoint '
            'dict. Fix: pass a released checkpoint ({"model": state_dict, '
            '...}) or a state dict.')
    info = {}
    for key in ('epoch', 'accuracy', 'best_acc'):
        value = checkpoint.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, (int, float)):
            info[key] = value
    if isinstance(checkpoint.get('model'), dict):
        state = checkpoint['model']
    elif isinstance(checkpoint.get('state_dict'), dict):
        state = checkpoint['state_dict']
    elif checkpoint and all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        state = checkpoint
    else:
        raise ValueError(
            f'"{src}" has no state dict: no "model" or "state_dict" entry, '
            f'and its values are not all tensors (keys: '
            f'{", ".join(map(str, list(checkpoint)[:_MAX_KEYS_SHOWN]))}). '
            'Fix: pass a released checkpoint ({"model": state_dict, ...}) '
            'or a state dict.')
    state = OrderedDict(
        (k[len('module.'):] if k.startswith('module.') else k, v)
        for k, v in state.items())
    return state, info


def _shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def _fmt(keys):
    keys = sorted(keys)
    more = len(keys) - _MAX_KEYS_SHOWN
    return ', '.join(keys[:_MAX_KEYS_SHOWN]) + (f', ... (+{more} more)'
                                                if more > 0 else '')


def _fitting_archs(original_shapes):
    """Architectures whose original state dict has exactly these keys and
    shapes (models built on the meta device: no memory, no init)."""
    fits = []
    for arch in CIFAR_ZOO_ARCHS:
        converted = original_to_zoo_state_dict(original_shapes, arch)
        expected = _shapes(build_zoo_model(arch, device='meta').state_dict())
        if converted == expected:
            fits.append(arch)
    return fits


def check_fits(original, arch, src, config=None):
    """Raise :class:`ArchMismatchError` naming the missing, unexpected and
    mis-shaped keys (original names) when ``original`` (a state dict with
    the original keys, counters filled) is not an ``arch`` checkpoint."""
    model = build_zoo_model(arch, config, device='meta')
    expected = _shapes(model.state_dict())
    converted = _shapes(original_to_zoo_state_dict(original, arch))
    if converted == expected:
        return
    # Report in the original names, which the user's file has.
    head = ORIGINAL_HEAD_PREFIX[arch]
    to_orig = {k: (head + k[len('head.fc.'):] if k.startswith('head.fc.')
                   else k[len('backbone.'):]) for k in expected}
    missing = [to_orig[k] for k in expected if k not in converted]
    unexpected = [k for k, zk in zip(original, converted)
                  if zk not in expected]
    shape = [f'{to_orig[k]}: checkpoint {converted[k]} vs {arch} {v}'
             for k, v in expected.items()
             if k in converted and converted[k] != v]
    lines = [f'"{src}" is not a {arch} checkpoint (model config '
             f'{config or model_config_path(arch)}).']
    if missing:
        lines.append(f'  missing keys ({len(missing)}): {_fmt(missing)}')
    if unexpected:
        lines.append(f'  unexpected keys ({len(unexpected)}): '
                     f'{_fmt(unexpected)}')
    if shape:
        lines.append(f'  shape mismatches ({len(shape)}): ' +
                     '; '.join(shape[:_MAX_KEYS_SHOWN]))
    fits = _fitting_archs(_shapes(original))
    if fits:
        lines.append(f'Its keys and shapes are those of {" / ".join(fits)}.'
                     f' Fix: pass --arch {fits[0]}.')
    else:
        lines.append(
            'Fix: pass the --arch the file was trained as (a released '
            'teacher sits in a folder named <arch>_vanilla); one of '
            f'{", ".join(CIFAR_ZOO_ARCHS)}.')
    raise ArchMismatchError('\n'.join(lines))


def convert(src, dst, arch, config=None):
    """Convert the released checkpoint ``src`` of ``arch`` to ``dst``.

    Args:
        src (str): The released file.
        dst (str): Where to write ``{'state_dict': ..., 'meta': ...}``.
        arch (str): One of :data:`CIFAR_ZOO_ARCHS`.
        config (str, optional): The model config to check against. Defaults
            to ``configs/cifar100/_base_/models/<arch>.py``.

    Returns:
        dict: The written ``meta``, plus ``num_tensors`` and
        ``filled_counters``.
    """
    if arch not in CIFAR_ZOO_ARCHS:
        raise ValueError(f'Unknown --arch "{arch}". Fix: use one of '
                         f'{", ".join(CIFAR_ZOO_ARCHS)}.')
    if not osp.isfile(src):
        raise FileNotFoundError(
            f'"{src}" does not exist. Fix: download the released teachers '
            "with RepDistiller's scripts/fetch_pretrained_teachers.sh (they "
            'land in save/models/<arch>_vanilla/), see docs/cifar100_zoo.md.')
    state, info = extract_state_dict(safe_torch_load(src, 'cpu'), src)
    filled = fill_num_batches_tracked(state)
    num_filled = len(filled) - len(state)
    check_fits(filled, arch, src, config)
    state_dict = original_to_zoo_state_dict(filled, arch)
    # The real load, strict, on the CPU: what teacher_ckpt will do.
    build_zoo_model(arch, config).load_state_dict(state_dict, strict=True)
    meta = dict(
        arch=arch,
        config=osp.relpath(config or model_config_path(arch), REPO),
        source=osp.basename(osp.dirname(osp.abspath(src))) + '/' +
        osp.basename(src),
        converted_by='tools/convert_crd_checkpoint.py',
        **info)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': state_dict, 'meta': meta}, dst)
    return dict(meta, num_tensors=len(state_dict), filled_counters=num_filled)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a released CRD/RepDistiller (or mdistiller) '
        'CIFAR-100 checkpoint to an mmrankkd zoo checkpoint')
    parser.add_argument('src', help='released checkpoint, e.g. '
                        'save/models/resnet32x4_vanilla/ckpt_epoch_240.pth')
    parser.add_argument('dst', help='converted checkpoint to write')
    parser.add_argument(
        '--arch', required=True, choices=CIFAR_ZOO_ARCHS, metavar='NAME',
        help='the architecture the file was trained as (the folder name '
        'without "_vanilla"): ' + ', '.join(CIFAR_ZOO_ARCHS))
    parser.add_argument(
        '--config', help='model config to check against (default: '
        'configs/cifar100/_base_/models/<arch>.py)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        res = convert(args.src, args.dst, args.arch, args.config)
    except (ArchMismatchError, UnsafeCheckpointError, ValueError,
            FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    extra = ''.join(f', {k} {res[k]:g}' for k in ('epoch', 'accuracy')
                    if k in res)
    print(f'{args.arch}: {res["num_tensors"]} tensors '
          f'({res["filled_counters"]} num_batches_tracked filled){extra} '
          f'-> {args.dst}\n'
          f'Use it as model.teacher="{res["config"]}", '
          f'model.teacher_ckpt="{args.dst}".')
    return 0


if __name__ == '__main__':
    sys.exit(main())
