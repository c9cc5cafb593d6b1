# CIFAR-100 `resnet8x4` of the distillation benchmarks (32x32 input, 100
# classes): the same network as RepDistiller's
# models/resnet.py,
# identical in mdistiller (mdistiller/models/cifar/).
# Keys of a released checkpoint: `fc.*` -> `head.fc.*`, every other
# `k` -> `backbone.k`.
# A released student (mdistiller, {"model": state_dict}) converts with
#   python tools/convert_crd_checkpoint.py SRC DST --arch resnet8x4
#
# data_preprocessor: the normalisation these networks are trained with,
# mean (0.5071, 0.4867, 0.4408) and std (0.2675, 0.2565, 0.2761) of [0, 1]
# RGB pixels, here times 255 for 0-255 pixels. mmpretrain's CIFAR100 data
# set already yields RGB images, so no channel swap (to_rgb=False).
custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)

model = dict(
    type='mmpretrain.ImageClassifier',
    data_preprocessor=dict(
        type='mmpretrain.ClsDataPreprocessor',
        num_classes=100,
        mean=[129.3105, 124.1085, 112.404],
        std=[68.2125, 65.4075, 70.4055],
        to_rgb=False),
    backbone=dict(
        type='mmrankkd.CIFARResNet',
        depth=8,
        channels=(32, 64, 128, 256)),
    neck=dict(type='mmpretrain.GlobalAveragePooling'),
    head=dict(
        type='mmpretrain.LinearClsHead',
        num_classes=100,
        in_channels=256,
        loss=dict(type='mmpretrain.CrossEntropyLoss', loss_weight=1.0),
        # PyTorch's default Linear initialisation, as the original.
        init_cfg=None,
    ))
