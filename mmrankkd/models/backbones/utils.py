"""Helpers shared by the CIFAR backbones."""
from typing import Sequence, Tuple

from mmcv.cnn import build_norm_layer
from torch import nn

#: The initialisation of the public CIFAR definitions (RepDistiller,
#: mdistiller) for the ResNet, WRN, VGG and MobileNetV2 families: convs
#: ``normal(0, sqrt(2 / (k * k * out_channels)))`` (Kaiming normal,
#: fan-out, ReLU gain) with zero bias, norms weight 1 and bias 0.
KAIMING_FAN_OUT_INIT = [
    dict(type='Kaiming', layer='Conv2d', mode='fan_out',
         nonlinearity='relu', distribution='normal', bias=0),
    dict(type='Constant', val=1, bias=0, layer=['_BatchNorm', 'GroupNorm']),
]


def norm_layer(norm_cfg: dict, num_features: int) -> nn.Module:
    """Build the norm layer ``norm_cfg`` describes (``BN`` by default)."""
    return build_norm_layer(norm_cfg, num_features)[1]


def check_out_indices(out_indices: Sequence[int], num_outputs: int,
                      name: str) -> Tuple[int, ...]:
    """Validate ``out_indices`` and turn negative indices into positive.

    Args:
        out_indices (Sequence[int]): Requested outputs.
        num_outputs (int): How many outputs the backbone has.
        name (str): The backbone's name, for the error message.

    Returns:
        tuple[int]: The indices, each in ``[0, num_outputs)``.
    """
    if isinstance(out_indices, int):
        out_indices = [out_indices]
    out = []
    for index in out_indices:
        if not -num_outputs <= index < num_outputs:
            raise ValueError(
                f'{name}: out_indices {tuple(out_indices)} out of range; it '
                f'has {num_outputs} outputs (0..{num_outputs - 1}, or '
                'negative from the end).')
        out.append(index % num_outputs)
    return tuple(out)


def channel_shuffle(x, groups: int):
    """ShuffleNet's channel shuffle: ``(N, g * c, H, W)`` viewed as
    ``(N, g, c, H, W)``, the two channel axes swapped, flattened back."""
    n, c, h, w = x.size()
    if groups == 1:
        return x
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(
        n, c, h, w)
