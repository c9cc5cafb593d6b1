"""The CIFAR-100 model zoo of the distillation benchmarks as mmpretrain
backbones (``type='mmrankkd.<Name>'``), and the key mapping of the
released checkpoints (:mod:`.zoo`)."""
from .cifar_mobilenet_v2 import CIFARMobileNetV2
from .cifar_resnet import CIFARResNet
from .cifar_resnet_4stage import CIFARResNet4Stage
from .cifar_shufflenet_v1 import CIFARShuffleNetV1
from .cifar_shufflenet_v2 import CIFARShuffleNetV2
from .cifar_vgg import CIFARVGG
from .cifar_wrn import CIFARWideResNet
from .zoo import (CIFAR_ZOO_ARCHS, ORIGINAL_HEAD_PREFIX, RELEASED_TEACHERS,
                  fill_num_batches_tracked, original_to_zoo_state_dict,
                  zoo_to_original_state_dict)

__all__ = [
    'CIFARResNet', 'CIFARResNet4Stage', 'CIFARWideResNet', 'CIFARVGG',
    'CIFARMobileNetV2', 'CIFARShuffleNetV1', 'CIFARShuffleNetV2',
    'CIFAR_ZOO_ARCHS', 'ORIGINAL_HEAD_PREFIX', 'RELEASED_TEACHERS',
    'original_to_zoo_state_dict', 'zoo_to_original_state_dict',
    'fill_num_batches_tracked'
]
