"""VGG-BN for CIFAR (vgg8, vgg11, vgg13, vgg16, vgg19).

Same layers and parameter names as the public definitions (RepDistiller
``models/vgg.py`` with batch norm, mdistiller
``mdistiller/models/cifar/vgg.py``), without the classifier: a released
checkpoint's key ``k`` is this backbone's ``k``, and its ``classifier.*``
is ``head.fc.*``.
"""
from typing import Optional, Sequence

import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import nn

from mmrankkd.registry import MODELS
from .utils import KAIMING_FAN_OUT_INIT, check_out_indices, norm_layer


@MODELS.register_module()
class CIFARVGG(BaseModule):
    """VGG with batch norm for CIFAR: five blocks of 3x3 convs (with bias)
    and norms, ReLU after each, max-pools between blocks.

    Each block ``blockI`` is a ``Sequential`` of ``conv, norm, ReLU, ...,
    conv, norm`` (the block's last ReLU is applied in ``forward``, so the
    parameter indices are the original's). Between blocks 0-1, 1-2 and 2-3
    sits a 2x2 max-pool; the one between blocks 3 and 4 is applied **only
    when the input is** ``last_maxpool_input_size`` **pixels high** (64,
    Tiny-ImageNet), as in the original: on 32x32 CIFAR images block 4 runs
    on the 4x4 map. Pool with ``GlobalAveragePooling`` (the original's
    ``AdaptiveAvgPool2d(1)``).

    ===== =====================================================
    depth  convs per block
    ===== =====================================================
    8      1, 1, 1, 1, 1
    11     1, 1, 2, 2, 2
    13     2, 2, 2, 2, 2
    16     2, 2, 3, 3, 3
    19     2, 2, 4, 4, 4
    ===== =====================================================

    Args:
        depth (int): 8, 11, 13, 16 or 19. Defaults to 13.
        last_maxpool_input_size (int, optional): Input height at which the
            max-pool before block 4 is applied; None applies it always.
            Defaults to 64 (the original's rule).
        out_indices (Sequence[int]): Blocks (0-4) whose (ReLU'd) outputs
            are returned. Defaults to ``(4, )``.
        norm_cfg (dict): Norm layer config. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): Defaults to the original's
            Kaiming-normal (fan-out) convs with zero bias and unit norms.
    """
    arch_settings = {
        8: [[64], [128], [256], [512], [512]],
        11: [[64], [128], [256, 256], [512, 512], [512, 512]],
        13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
        16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512],
             [512, 512, 512]],
        19: [[64, 64], [128, 128], [256, 256, 256, 256],
             [512, 512, 512, 512], [512, 512, 512, 512]],
    }

    def __init__(self,
                 depth: int = 13,
                 last_maxpool_input_size: Optional[int] = 64,
                 out_indices: Sequence[int] = (4, ),
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=KAIMING_FAN_OUT_INIT):
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise ValueError(f'CIFARVGG: depth must be one of '
                             f'{sorted(self.arch_settings)}, got {depth}.')
        self.last_maxpool_input_size = last_maxpool_input_size
        self.out_indices = check_out_indices(out_indices, 5, 'CIFARVGG')
        in_channels = 3
        for i, widths in enumerate(self.arch_settings[depth]):
            layers = []
            for width in widths:
                layers += [
                    nn.Conv2d(in_channels, width, 3, padding=1),
                    norm_layer(norm_cfg, width),
                    nn.ReLU(inplace=True)
                ]
                in_channels = width
            self.add_module(f'block{i}', nn.Sequential(*layers[:-1]))

    def forward(self, x):
        height = x.shape[2]
        outs = []
        for i in range(5):
            if i in (1, 2, 3) or (i == 4 and (
                    self.last_maxpool_input_size is None
                    or height == self.last_maxpool_input_size)):
                x = F.max_pool2d(x, kernel_size=2, stride=2)
            x = F.relu(getattr(self, f'block{i}')(x))
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
