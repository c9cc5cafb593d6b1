"""MobileNetV2 for CIFAR as in the distillation benchmarks (``MobileNetV2``
= RepDistiller's ``mobile_half``: expansion 6, width 0.5).

Same layers and parameter names as the public definitions (RepDistiller
``models/mobilenetv2.py``, mdistiller
``mdistiller/models/cifar/mobilenetv2.py``), without the classifier: a
released checkpoint's key ``k`` is this backbone's ``k``, and its
``classifier.0.*`` is ``head.fc.*``.
"""
from typing import Sequence

from mmengine.model import BaseModule
from torch import nn

from mmrankkd.registry import MODELS
from .utils import KAIMING_FAN_OUT_INIT, check_out_indices, norm_layer


def _conv_norm_relu(in_channels, out_channels, kernel_size, stride,
                    norm_cfg):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                  kernel_size // 2, bias=False),
        norm_layer(norm_cfg, out_channels), nn.ReLU(inplace=True))


class CIFARInvertedResidual(BaseModule):
    """Inverted residual block, all layers in one ``conv`` Sequential:
    1x1 expand (present even for expansion 1), 3x3 depthwise (strided),
    1x1 linear projection, each followed by a norm, ReLU after the first
    two. Residual when the stride is 1 and the width is unchanged.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        stride (int): Depthwise stride, 1 or 2.
        expand_ratio (int): Hidden width over ``in_channels``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
    """

    def __init__(self, in_channels, out_channels, stride, expand_ratio,
                 norm_cfg=dict(type='BN')):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'stride must be 1 or 2, got {stride}.')
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            norm_layer(norm_cfg, hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden,
                      bias=False),
            norm_layer(norm_cfg, hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            norm_layer(norm_cfg, out_channels),
        )

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_res_connect else out


@MODELS.register_module()
class CIFARMobileNetV2(BaseModule):
    """MobileNetV2 of the CIFAR distillation benchmarks.

    Differs from the ImageNet MobileNetV2 (and mmpretrain's): the 3x3 stem
    ``conv1`` has **stride 2** on 32x32 input (maps 16, 16, 16, 8, 4, 4, 2,
    2 pixels wide through the stages), every block has a 1x1 expansion conv
    (also at expansion 1), the expansion of stages 1-6 is
    ``expand_ratio`` (6), and the last 1x1 conv ``conv2`` has **1280
    channels unscaled** unless ``widen_factor > 1``. Pool with
    ``GlobalAveragePooling`` (the original's ``AvgPool2d(2, ceil_mode=True)``
    on the 2x2 map).

    Stage settings ``(expansion, channels, blocks, stride)``: (1, 16, 1, 1),
    (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1),
    (t, 160, 3, 2), (t, 320, 1, 1), channels times ``widen_factor``.

    Args:
        widen_factor (float): Width multiplier. Defaults to 0.5 (the
            benchmarks' ``MobileNetV2``).
        expand_ratio (int): t. Defaults to 6.
        out_indices (Sequence[int]): Outputs to return: 0-6 the stages
            ``blocks[i]``, 7 the last conv ``conv2``. Defaults to ``(7, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to the original's
            Kaiming-normal (fan-out) convs and unit norms.
    """
    arch_settings = [[1, 16, 1, 1], [None, 24, 2, 1], [None, 32, 3, 2],
                     [None, 64, 4, 2], [None, 96, 3, 1], [None, 160, 3, 2],
                     [None, 320, 1, 1]]

    def __init__(self,
                 widen_factor: float = 0.5,
                 expand_ratio: int = 6,
                 out_indices: Sequence[int] = (7, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=KAIMING_FAN_OUT_INIT):
        super().__init__(init_cfg=init_cfg)
        self.out_indices = check_out_indices(out_indices, 8,
                                             'CIFARMobileNetV2')
        in_channels = int(32 * widen_factor)
        self.conv1 = _conv_norm_relu(3, in_channels, 3, 2, norm_cfg)
        self.blocks = nn.ModuleList()
        for t, c, n, s in self.arch_settings:
            out_channels = int(c * widen_factor)
            layers = []
            for i in range(n):
                layers.append(
                    CIFARInvertedResidual(in_channels, out_channels,
                                          s if i == 0 else 1,
                                          expand_ratio if t is None else t,
                                          norm_cfg))
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*layers))
        self.last_channels = int(
            1280 * widen_factor) if widen_factor > 1.0 else 1280
        self.conv2 = _conv_norm_relu(in_channels, self.last_channels, 1, 1,
                                     norm_cfg)

    def forward(self, x):
        x = self.conv1(x)
        outs = []
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in self.out_indices:
                outs.append(x)
        x = self.conv2(x)
        if 7 in self.out_indices:
            outs.append(x)
        return tuple(outs)
