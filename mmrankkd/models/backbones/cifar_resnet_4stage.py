"""The 4-stage CIFAR ResNet-18/34/50/101/152 of the distillation benchmarks
(the CIFAR-100 ``ResNet50`` teacher).

Same layers and parameter names as the public definitions (RepDistiller
``models/resnetv2.py``, mdistiller ``mdistiller/models/cifar/resnetv2.py``),
without the classifier: a released checkpoint's key ``k`` is this
backbone's ``k``, and its ``linear.*`` is ``head.fc.*``.
"""
from typing import Sequence

from mmengine.model import BaseModule
from torch import nn

from mmrankkd.registry import MODELS
from .utils import KAIMING_FAN_OUT_INIT, check_out_indices, norm_layer


def _shortcut(in_channels, out_channels, stride, norm_cfg):
    """Identity (an empty ``Sequential``, no parameters) or a 1x1
    projection with norm, named ``shortcut`` as in the original."""
    if stride == 1 and in_channels == out_channels:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        norm_layer(norm_cfg, out_channels))


class ShortcutBasicBlock(BaseModule):
    """Basic block (two 3x3 convs) with a ``shortcut`` branch.

    Args:
        in_channels (int): Input channels.
        planes (int): Output channels.
        stride (int): Stride of the first conv. Defaults to 1.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """
    expansion = 1

    def __init__(self, in_channels, planes, stride=1,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm_layer(norm_cfg, planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, planes, stride, norm_cfg)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ShortcutBottleneck(BaseModule):
    """Bottleneck block (1x1, strided 3x3, 1x1 with 4x expansion) with a
    ``shortcut`` branch.

    Args:
        in_channels (int): Input channels.
        planes (int): Bottleneck width; the output has ``4 * planes``.
        stride (int): Stride of the 3x3 conv. Defaults to 1.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """
    expansion = 4

    def __init__(self, in_channels, planes, stride=1,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm_layer(norm_cfg, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = norm_layer(norm_cfg, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out_channels, stride,
                                  norm_cfg)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


@MODELS.register_module()
class CIFARResNet4Stage(BaseModule):
    """ImageNet-layout ResNet on a CIFAR stem: a 3x3 stride-1 conv to 64
    channels and no max-pool, then four stages (widths 64, 128, 256, 512
    times the block expansion, strides 1, 2, 2, 2). On 32x32 input the last
    map is 4x4; pool with ``GlobalAveragePooling``.

    Not mmpretrain's ``ResNet_CIFAR``: same network for depth 50, but the
    parameter names (``shortcut`` instead of ``downsample``) are the public
    CIFAR definitions', so their released checkpoints load by a prefix.

    Args:
        depth (int): 18, 34, 50, 101 or 152. Defaults to 50.
        out_indices (Sequence[int]): Stages (0-3) whose outputs are
            returned. Defaults to ``(3, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to the original's
            Kaiming-normal (fan-out) convs and unit norms.
    """
    arch_settings = {
        18: (ShortcutBasicBlock, (2, 2, 2, 2)),
        34: (ShortcutBasicBlock, (3, 4, 6, 3)),
        50: (ShortcutBottleneck, (3, 4, 6, 3)),
        101: (ShortcutBottleneck, (3, 4, 23, 3)),
        152: (ShortcutBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth: int = 50,
                 out_indices: Sequence[int] = (3, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=KAIMING_FAN_OUT_INIT):
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'CIFARResNet4Stage: depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth}.')
        block, stage_blocks = self.arch_settings[depth]
        self.out_indices = check_out_indices(out_indices, 4,
                                             'CIFARResNet4Stage')
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, 64)
        self.relu = nn.ReLU(inplace=True)
        in_channels = 64
        for i, (num_blocks, planes, stride) in enumerate(
                zip(stage_blocks, (64, 128, 256, 512), (1, 2, 2, 2))):
            blocks = []
            for j in range(num_blocks):
                blocks.append(block(in_channels, planes, stride if j == 0
                                    else 1, norm_cfg))
                in_channels = planes * block.expansion
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        outs = []
        for i in range(4):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
