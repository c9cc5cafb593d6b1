"""Small synthetic data sets in real layouts, for the quick-start and tests."""
from .synthetic_cifar import (SyntheticCIFAR100, disable_cifar100_md5_check,
                              make_synthetic_cifar100)
from .transforms import MLKDRandAugment
from .synthetic_cityscapes import (draw_synthetic_cityscapes_scene,
                                   make_synthetic_cityscapes)

__all__ = [
    'make_synthetic_cityscapes', 'draw_synthetic_cityscapes_scene',
    'make_synthetic_cifar100', 'disable_cifar100_md5_check',
    'MLKDRandAugment', 'SyntheticCIFAR100'
]
