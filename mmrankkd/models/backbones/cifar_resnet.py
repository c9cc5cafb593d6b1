"""The 3-stage CIFAR ResNets of the distillation benchmarks (resnet8 ...
resnet110, resnet8x4, resnet32x4).

Same layers and parameter names as the public definitions (RepDistiller
``models/resnet.py``, mdistiller ``mdistiller/models/cifar/resnet.py``),
without the classifier: a released checkpoint's key ``k`` is this
backbone's ``k`` (``backbone.k`` in an ``ImageClassifier``), and its
``fc.*`` is ``head.fc.*``.
"""
from typing import Sequence

from mmengine.model import BaseModule
from torch import nn

from mmrankkd.registry import MODELS
from .utils import KAIMING_FAN_OUT_INIT, check_out_indices, norm_layer


class CIFARBasicBlock(BaseModule):
    """Post-activation basic block with a projection ``downsample``
    (1x1 conv + norm) where the stride or the width changes.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Stride of the first 3x3 conv. Defaults to 1.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict, optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 stride: int = 1,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1,
                               bias=False)
        self.bn1 = norm_layer(norm_cfg, out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1,
                               bias=False)
        self.bn2 = norm_layer(norm_cfg, out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                norm_layer(norm_cfg, out_channels))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@MODELS.register_module()
class CIFARResNet(BaseModule):
    """CIFAR ResNet with three stages of basic blocks (He et al., 2016, the
    CIFAR variant used by CRD, DKD and the logit-distillation papers).

    A 3x3 stem (stride 1), then three stages of ``(depth - 2) / 6`` basic
    blocks with strides 1, 2, 2: on 32x32 input the maps are 32, 16 and 8
    pixels wide. Pool with ``GlobalAveragePooling`` (the original's
    ``AvgPool2d(8)`` on the 8x8 map).

    ========== ===== =========================
    name        depth channels
    ========== ===== =========================
    resnet8     8     (16, 16, 32, 64)
    resnet20    20    (16, 16, 32, 64)
    resnet56    56    (16, 16, 32, 64)
    resnet110   110   (16, 16, 32, 64)
    resnet8x4   8     (32, 64, 128, 256)
    resnet32x4  32    (32, 64, 128, 256)
    ========== ===== =========================

    Args:
        depth (int): ``6n + 2``. Defaults to 20.
        channels (Sequence[int]): Stem width, then the widths of the three
            stages. Defaults to ``(16, 16, 32, 64)``.
        out_indices (Sequence[int]): Stages (0-2) whose outputs are
            returned. Defaults to ``(2, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to the original's
            Kaiming-normal (fan-out) convs and unit norms.
    """

    def __init__(self,
                 depth: int = 20,
                 channels: Sequence[int] = (16, 16, 32, 64),
                 out_indices: Sequence[int] = (2, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=KAIMING_FAN_OUT_INIT):
        super().__init__(init_cfg=init_cfg)
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ValueError(f'CIFARResNet: depth must be 6n + 2 (8, 14, '
                             f'20, 32, 44, 56, 110, ...), got {depth}.')
        if len(channels) != 4:
            raise ValueError('CIFARResNet: channels must be (stem, stage1, '
                             f'stage2, stage3), got {tuple(channels)}.')
        num_blocks = (depth - 2) // 6
        self.out_indices = check_out_indices(out_indices, 3, 'CIFARResNet')
        self.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.bn1 = norm_layer(norm_cfg, channels[0])
        self.relu = nn.ReLU(inplace=True)
        in_channels = channels[0]
        for i, (width, stride) in enumerate(zip(channels[1:], (1, 2, 2))):
            blocks = []
            for j in range(num_blocks):
                blocks.append(
                    CIFARBasicBlock(in_channels, width, stride if j == 0
                                    else 1, norm_cfg))
                in_channels = width
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        outs = []
        for i in range(3):
            x = getattr(self, f'layer{i + 1}')(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
