"""The CIFAR-100 model zoo of the distillation benchmarks (CRD/RepDistiller,
mdistiller) and the key mapping of their released checkpoints.

Each architecture name is a model config
``configs/cifar100/_base_/models/<name>.py`` (an mmpretrain
``ImageClassifier``: one of this package's backbones, global average
pooling, ``LinearClsHead``). The backbones keep the original parameter
names, so a released state dict converts by a prefix:

* the final linear layer (``fc.*``, ``classifier.*``, ``classifier.0.*`` or
  ``linear.*``, see :data:`ORIGINAL_HEAD_PREFIX`) -> ``head.fc.*``;
* every other key ``k`` -> ``backbone.k``.
"""
from collections import OrderedDict
from typing import Dict, Mapping

import torch

#: Architecture name (the originals' ``model_dict`` key) -> the prefix of
#: the original's final linear layer.
ORIGINAL_HEAD_PREFIX: Dict[str, str] = {
    **{name: 'fc.' for name in (
        'resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44',
        'resnet56', 'resnet110', 'resnet8x4', 'resnet32x4', 'wrn_16_1',
        'wrn_16_2', 'wrn_40_1', 'wrn_40_2')},
    **{name: 'classifier.' for name in (
        'vgg8', 'vgg11', 'vgg13', 'vgg16', 'vgg19')},
    'MobileNetV2': 'classifier.0.',
    'ShuffleV1': 'linear.',
    'ShuffleV2': 'linear.',
    'ResNet50': 'linear.',
}

#: Every architecture of the zoo.
CIFAR_ZOO_ARCHS = tuple(ORIGINAL_HEAD_PREFIX)

#: The teachers CRD released (``<arch>_vanilla/ckpt_epoch_240.pth``).
RELEASED_TEACHERS = ('wrn_40_2', 'resnet56', 'resnet110', 'resnet32x4',
                     'vgg13', 'ResNet50')

HEAD_PREFIX = 'head.fc.'
BACKBONE_PREFIX = 'backbone.'


def _check_arch(arch: str) -> str:
    if arch not in ORIGINAL_HEAD_PREFIX:
        raise KeyError(f'Unknown CIFAR zoo architecture "{arch}". Known: '
                       f'{", ".join(CIFAR_ZOO_ARCHS)}.')
    return ORIGINAL_HEAD_PREFIX[arch]


def original_to_zoo_state_dict(state_dict: Mapping[str, torch.Tensor],
                               arch: str) -> 'OrderedDict[str, torch.Tensor]':
    """Rename a released state dict's keys to the zoo model's.

    ``<head prefix>x`` -> ``head.fc.x``, every other ``k`` -> ``backbone.k``
    (order kept, tensors not copied).

    Args:
        state_dict (Mapping[str, Tensor]): The original model's state dict
            (plain keys, no ``module.`` prefix).
        arch (str): Architecture name, a key of
            :data:`ORIGINAL_HEAD_PREFIX`.

    Returns:
        OrderedDict[str, Tensor]: The renamed state dict.
    """
    head = _check_arch(arch)
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(head):
            out[HEAD_PREFIX + key[len(head):]] = value
        else:
            out[BACKBONE_PREFIX + key] = value
    return out


def zoo_to_original_state_dict(state_dict: Mapping[str, torch.Tensor],
                               arch: str) -> 'OrderedDict[str, torch.Tensor]':
    """The inverse of :func:`original_to_zoo_state_dict`: a zoo model's
    state dict under the original key names (e.g. to run it in the
    original code)."""
    head = _check_arch(arch)
    out = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith(HEAD_PREFIX):
            out[head + key[len(HEAD_PREFIX):]] = value
        elif key.startswith(BACKBONE_PREFIX):
            out[key[len(BACKBONE_PREFIX):]] = value
        else:
            raise KeyError(f'"{key}" is neither under "{BACKBONE_PREFIX}" '
                           f'nor "{HEAD_PREFIX}": not a zoo model key.')
    return out


def fill_num_batches_tracked(
        state_dict: Mapping[str, torch.Tensor]
) -> 'OrderedDict[str, torch.Tensor]':
    """Add ``num_batches_tracked`` (0) to every norm layer that has
    ``running_mean`` but no counter (checkpoints written by torch < 0.4.1),
    right after its ``running_var``, so that a strict load succeeds. The
    counter only matters for ``momentum=None`` norms (cumulative average),
    which none of the zoo uses.

    Returns:
        OrderedDict[str, Tensor]: A new dict (the input is not changed).
    """
    out = OrderedDict()
    keys = set(state_dict)
    for key, value in state_dict.items():
        out[key] = value
        if key.endswith('running_var'):
            counter = key[:-len('running_var')] + 'num_batches_tracked'
            if counter not in keys:
                out[counter] = torch.tensor(0, dtype=torch.long)
    return out
