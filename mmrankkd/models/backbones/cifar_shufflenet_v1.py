"""ShuffleNetV1 for CIFAR as in the distillation benchmarks (``ShuffleV1``:
groups 3, widths 240/480/960, 4/8/4 blocks).

Same layers and parameter names as the public definitions (RepDistiller
``models/ShuffleNetv1.py``, mdistiller
``mdistiller/models/cifar/ShuffleNetv1.py``), without the classifier: a
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


class ShuffleV1Block(BaseModule):
    """ShuffleNetV1 unit.

    ``conv1`` (grouped 1x1 to ``out_channels / 4``) -> norm -> ReLU ->
    channel shuffle -> ``conv2`` (3x3 depthwise, strided) -> norm -> ReLU
    -> ``conv3`` (grouped 1x1) -> norm; then ReLU of the sum with the input
    (stride 1) or of the concatenation with a 3x3 average pool of the input
    (stride 2). The unit fed by the 24-channel stem uses 1 group in
    ``conv1`` (and so no shuffle), as in the original.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Channels of the residual branch (at stride 2
            the unit outputs ``out_channels + in_channels``).
        stride (int): 1 or 2.
        groups (int): Groups of the 1x1 convs.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels, out_channels, stride, groups,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        self.stride = stride
        mid_channels = int(out_channels / 4)
        self.first_groups = 1 if in_channels == 24 else groups
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1,
                               groups=self.first_groups, bias=False)
        self.bn1 = norm_layer(norm_cfg, mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, stride, 1,
                               groups=mid_channels, bias=False)
        self.bn2 = norm_layer(norm_cfg, mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, groups=groups,
                               bias=False)
        self.bn3 = norm_layer(norm_cfg, out_channels)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(
                torch.cat(
                    [out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


@MODELS.register_module()
class CIFARShuffleNetV1(BaseModule):
    """ShuffleNetV1 of the CIFAR distillation benchmarks.

    Differs from the ImageNet ShuffleNetV1 (and mmpretrain's): the stem is
    a **1x1** conv to 24 channels (stride 1, no max-pool), and the first
    unit of each stage (stride 2) halves the 32x32 map, so the last map is
    4x4. Pool with ``GlobalAveragePooling`` (the original's
    ``avg_pool2d(4)``).

    Args:
        out_channels (Sequence[int]): Stage widths. Defaults to
            ``(240, 480, 960)``.
        num_blocks (Sequence[int]): Units per stage. Defaults to
            ``(4, 8, 4)``.
        groups (int): Groups of the 1x1 convs. Defaults to 3.
        out_indices (Sequence[int]): Stages (0-2) whose outputs are
            returned. Defaults to ``(2, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to None: PyTorch's
            default initialisation, as in the original.
    """

    def __init__(self,
                 out_channels: Sequence[int] = (240, 480, 960),
                 num_blocks: Sequence[int] = (4, 8, 4),
                 groups: int = 3,
                 out_indices: Sequence[int] = (2, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.out_indices = check_out_indices(out_indices, len(out_channels),
                                             'CIFARShuffleNetV1')
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, 24)
        in_channels = 24
        for i, (width, n) in enumerate(zip(out_channels, num_blocks)):
            units = []
            for j in range(n):
                # The stride-2 unit concatenates its input: its branch
                # makes the difference to the stage width.
                units.append(
                    ShuffleV1Block(in_channels,
                                   width - (in_channels if j == 0 else 0),
                                   2 if j == 0 else 1, groups, norm_cfg))
                in_channels = width
            self.add_module(f'layer{i + 1}', nn.Sequential(*units))
        self.num_stages = len(out_channels)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        outs = []
        for i in range(self.num_stages):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
