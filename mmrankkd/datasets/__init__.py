"""Small synthetic data sets in real layouts (quick-start, tests), and the
replay wrapper that makes each (epoch, sample) view reproducible."""
from .synthetic_cifar import (SyntheticCIFAR100, disable_cifar100_md5_check,
                              make_synthetic_cifar100)
from .replay import (REPLAY_KEY, ReplayDataset, ReplaySampler,
                     replay_seed, seeded_generators)
from .transforms import MLKDRandAugment
from .synthetic_cityscapes import (draw_synthetic_cityscapes_scene,
                                   make_synthetic_cityscapes)

__all__ = [
    'make_synthetic_cityscapes', 'draw_synthetic_cityscapes_scene',
    'make_synthetic_cifar100', 'disable_cifar100_md5_check',
    'MLKDRandAugment', 'SyntheticCIFAR100', 'REPLAY_KEY', 'ReplayDataset',
    'ReplaySampler', 'replay_seed', 'seeded_generators'
]
