"""ShuffleNetV2 (1x) for CIFAR as in the distillation benchmarks
(``ShuffleV2``: widths 116/232/464, 3/7/3 units, a 1024-channel 1x1 conv).

Same layers and parameter names as the public definitions (RepDistiller
``models/ShuffleNetv2.py``, mdistiller
``mdistiller/models/cifar/ShuffleNetv2.py``), without the classifier: a
released checkpoint's key ``k`` is this backbone's ``k``, and its
``linear.*`` is ``head.fc.*``.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from mmrankkd.registry import MODELS
from .utils import channel_shuffle, check_out_indices, norm_layer


class ShuffleV2Block(BaseModule):
    """ShuffleNetV2 basic unit (stride 1): the channels are split in half;
    the second half goes through ``conv1`` (1x1) -> norm -> ReLU ->
    ``conv2`` (3x3 depthwise) -> norm -> ``conv3`` (1x1) -> norm -> ReLU,
    is concatenated after the untouched first half, and the result is
    channel-shuffled with 2 groups.

    Args:
        channels (int): Input and output channels.
        split_ratio (float): Share of the untouched half. Defaults to 0.5.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, channels, split_ratio=0.5, norm_cfg=dict(type='BN')):
        super().__init__()
        self.split_ratio = split_ratio
        branch = int(channels * split_ratio)
        self.conv1 = nn.Conv2d(branch, branch, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, branch)
        self.conv2 = nn.Conv2d(branch, branch, 3, 1, 1, groups=branch,
                               bias=False)
        self.bn2 = norm_layer(norm_cfg, branch)
        self.conv3 = nn.Conv2d(branch, branch, 1, bias=False)
        self.bn3 = norm_layer(norm_cfg, branch)

    def forward(self, x):
        c = int(x.size(1) * self.split_ratio)
        x1, x2 = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(x2)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class ShuffleV2DownBlock(BaseModule):
    """ShuffleNetV2 down-sampling unit (stride 2), both branches on the
    whole input. Left: ``conv1`` (3x3 depthwise, stride 2) -> norm ->
    ``conv2`` (1x1) -> norm -> ReLU. Right: ``conv3`` (1x1) -> norm -> ReLU
    -> ``conv4`` (3x3 depthwise, stride 2) -> norm -> ``conv5`` (1x1) ->
    norm -> ReLU. Concatenated (left first), shuffled with 2 groups.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels (half from each branch).
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels, out_channels, norm_cfg=dict(type='BN')):
        super().__init__()
        mid = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1,
                               groups=in_channels, bias=False)
        self.bn1 = norm_layer(norm_cfg, in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn2 = norm_layer(norm_cfg, mid)
        self.conv3 = nn.Conv2d(in_channels, mid, 1, bias=False)
        self.bn3 = norm_layer(norm_cfg, mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
        self.bn4 = norm_layer(norm_cfg, mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = norm_layer(norm_cfg, mid)

    def forward(self, x):
        left = self.bn1(self.conv1(x))
        left = F.relu(self.bn2(self.conv2(left)))
        right = F.relu(self.bn3(self.conv3(x)))
        right = self.bn4(self.conv4(right))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


@MODELS.register_module()
class CIFARShuffleNetV2(BaseModule):
    """ShuffleNetV2 of the CIFAR distillation benchmarks.

    Differs from the ImageNet ShuffleNetV2 (and mmpretrain's): the stem is
    a **1x1** conv to 24 channels (stride 1, no max-pool), so the three
    stages (each a down-sampling unit then ``num_blocks`` basic units) run
    at 16, 8 and 4 pixels; then ``conv2`` (1x1) -> norm -> ReLU. Pool with
    ``GlobalAveragePooling`` (the original's ``avg_pool2d(4)``).

    Args:
        out_channels (Sequence[int]): Widths of the three stages and of
            ``conv2``. Defaults to ``(116, 232, 464, 1024)`` (net size 1).
        num_blocks (Sequence[int]): Basic units per stage after the
            down-sampling unit. Defaults to ``(3, 7, 3)``.
        out_indices (Sequence[int]): Outputs to return: 0-2 the stages, 3
            ``conv2``. Defaults to ``(3, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to None: PyTorch's
            default initialisation, as in the original.
    """

    def __init__(self,
                 out_channels: Sequence[int] = (116, 232, 464, 1024),
                 num_blocks: Sequence[int] = (3, 7, 3),
                 out_indices: Sequence[int] = (3, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        if len(out_channels) != 4 or len(num_blocks) != 3:
            raise ValueError(
                'CIFARShuffleNetV2: out_channels needs 4 widths (3 stages '
                f'and conv2), num_blocks 3 counts; got {tuple(out_channels)}'
                f', {tuple(num_blocks)}.')
        self.out_indices = check_out_indices(out_indices, 4,
                                             'CIFARShuffleNetV2')
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, 24)
        in_channels = 24
        for i, (width, n) in enumerate(zip(out_channels[:3], num_blocks)):
            units = [ShuffleV2DownBlock(in_channels, width, norm_cfg)]
            units += [ShuffleV2Block(width, norm_cfg=norm_cfg)
                      for _ in range(n)]
            self.add_module(f'layer{i + 1}', nn.Sequential(*units))
            in_channels = width
        self.conv2 = nn.Conv2d(in_channels, out_channels[3], 1, bias=False)
        self.bn2 = norm_layer(norm_cfg, out_channels[3])

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for i in range(3):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        x = F.relu(self.bn2(self.conv2(x)))
        if 3 in self.out_indices:
            outs.append(x)
        return tuple(outs)
