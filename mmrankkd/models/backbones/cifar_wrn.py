"""Wide ResNets for CIFAR (wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2).

Same layers and parameter names as the public definitions (RepDistiller
``models/wrn.py``, mdistiller ``mdistiller/models/cifar/wrn.py``), without
the classifier: a released checkpoint's key ``k`` is this backbone's ``k``,
and its ``fc.*`` is ``head.fc.*``.
"""
from typing import Sequence

import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from mmrankkd.registry import MODELS
from .utils import KAIMING_FAN_OUT_INIT, check_out_indices, norm_layer


class WideBasicBlock(BaseModule):
    """Pre-activation block of the CIFAR Wide ResNet.

    ``bn1 -> relu -> conv1 (3x3, strided) -> bn2 -> relu -> conv2 (3x3)``.
    Where the width changes, the shortcut is a strided 1x1 ``convShortcut``
    fed with the *activated* input ``relu(bn1(x))``; otherwise it is the
    raw input.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of ``conv1`` and the shortcut.
        drop_rate (float): Dropout between the convs. Defaults to 0.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels, out_channels, stride, drop_rate=0.0,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.bn1 = norm_layer(norm_cfg, in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1,
                               bias=False)
        self.bn2 = norm_layer(norm_cfg, out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1,
                               bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_channels == out_channels
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_channels, out_channels, 1, stride, 0, bias=False)

    def forward(self, x):
        act = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(act)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        shortcut = x if self.equal_in_out else self.convShortcut(act)
        return shortcut + out


class WideResStage(BaseModule):
    """A stage of :class:`WideBasicBlock`, its blocks in ``layer`` (the
    original's ``NetworkBlock``)."""

    def __init__(self, num_blocks, in_channels, out_channels, stride,
                 drop_rate=0.0, norm_cfg=dict(type='BN')):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_channels if i == 0 else out_channels,
                           out_channels, stride if i == 0 else 1, drop_rate,
                           norm_cfg) for i in range(num_blocks)
        ])

    def forward(self, x):
        return self.layer(x)


@MODELS.register_module()
class CIFARWideResNet(BaseModule):
    """Wide ResNet WRN-depth-k for CIFAR (Zagoruyko & Komodakis, 2016).

    A 3x3 stem to 16 channels, three stages ``block1..3`` of
    ``(depth - 4) / 6`` pre-activation blocks with widths
    ``16k, 32k, 64k`` and strides 1, 2, 2, then the final ``bn1`` + ReLU.
    Pool with ``GlobalAveragePooling`` (the original's ``avg_pool2d(8)`` on
    the 8x8 map).

    Args:
        depth (int): ``6n + 4`` (16, 40, ...). Defaults to 40.
        widen_factor (int): k. Defaults to 2.
        drop_rate (float): Dropout inside the blocks. Defaults to 0.
        out_indices (Sequence[int]): Stages (0-2) whose outputs are
            returned; stage 2's output is taken after the final norm and
            ReLU (what the classifier sees). Defaults to ``(2, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to the original's
            ``normal(0, sqrt(2 / (9 * out_channels)))`` convs (Kaiming
            normal, fan-out) and unit norms.
    """

    def __init__(self,
                 depth: int = 40,
                 widen_factor: int = 2,
                 drop_rate: float = 0.0,
                 out_indices: Sequence[int] = (2, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=KAIMING_FAN_OUT_INIT):
        super().__init__(init_cfg=init_cfg)
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError('CIFARWideResNet: depth must be 6n + 4 (10, 16, '
                             f'22, 28, 40, ...), got {depth}.')
        num_blocks = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.out_indices = check_out_indices(out_indices, 3,
                                             'CIFARWideResNet')
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        for i, stride in enumerate((1, 2, 2)):
            self.add_module(
                f'block{i + 1}',
                WideResStage(num_blocks, widths[i], widths[i + 1], stride,
                             drop_rate, norm_cfg))
        self.bn1 = norm_layer(norm_cfg, widths[3])
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        x = self.conv1(x)
        outs = []
        for i in range(3):
            x = getattr(self, f'block{i + 1}')(x)
            if i == 2:
                x = self.relu(self.bn1(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
