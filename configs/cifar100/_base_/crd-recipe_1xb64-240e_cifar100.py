# The CIFAR-100 distillation recipe of CRD (Tian et al., ICLR 2020), shared
# by every paper and toolbox that reports these teacher -> student pairs:
# RepDistiller train_student.py (its defaults), mdistiller
# configs/cifar100/*.yaml (SOLVER), DIST_KD
# configs/strategies/distill/dist_cifar.yaml:
#   240 epochs, 1 GPU x 64 images, SGD momentum 0.9, weight decay 5e-4,
#   lr 0.05 (0.01 for MobileNetV2 / ShuffleNet students: set in the pair
#   bases), x0.1 after epochs 150, 180 and 210; random 32x32 crop of the
#   4-pixel zero-padded image + horizontal flip; no test-time augmentation.
# The CRD normalisation, mean (0.5071, 0.4867, 0.4408) std (0.2675, 0.2565,
# 0.2761), is in each model config's data_preprocessor
# (configs/cifar100/_base_/models/<arch>.py), so there is no top-level
# `data_preprocessor` here: the distiller uses the student's.
#
# Their scripts report the best test top-1 over the 240 epochs; the
# checkpoint hook keeps that best checkpoint (best_accuracy_top1_*.pth)
# besides the last ones.
#
# Used by the pair bases distill_<teacher>_<student>_1xb64_cifar100.py; the
# model, teacher checkpoint and losses are set there and in the loss configs.
_base_ = ['mmpretrain::_base_/default_runtime.py']

dataset_type = 'CIFAR100'
data_root = 'data/cifar100'

# mmrankkd's ViewRandomCrop / ViewRandomFlip are mmpretrain's RandomCrop and
# mmcv's RandomFlip (the same random draws, the same pixels) that also record
# which of the 81 x 2 views they made (`teacher_view`), so a teacher-logit
# store (tools/build_teacher_store.py, model.teacher_store=DIR) serves every
# config of a teacher without a pipeline override.
train_pipeline = [
    dict(type='mmrankkd.ViewRandomCrop', crop_size=32, padding=4),
    dict(type='mmrankkd.ViewRandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs',
         meta_keys=('sample_idx', 'img_path', 'ori_shape', 'img_shape',
                    'scale_factor', 'flip', 'flip_direction',
                    'teacher_view')),
]
test_pipeline = [dict(type='PackInputs')]

train_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=64,
    num_workers=4,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=5e-4))
# mmengine counts epochs from 0: milestone 150 is the authors' epoch 151,
# the first one their `epoch > 150` rule decays.
param_scheduler = dict(
    type='MultiStepLR', by_epoch=True, milestones=[150, 180, 210], gamma=0.1)
train_cfg = dict(by_epoch=True, max_epochs=240, val_interval=1)
# `--auto-scale-lr` scales lr linearly from this batch (e.g. 4 GPUs x 64).
auto_scale_lr = dict(base_batch_size=64)

# Validation: student top-1, teacher-student top-1 agreement and mean
# Kendall tau of the class scores, and the teacher's top-1 once.
val_cfg = dict(type='mmrankkd.DistillValLoop', score_teacher=True)
test_cfg = dict(type='mmrankkd.DistillTestLoop', score_teacher=True)
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='mmrankkd.TeacherStudentAgreement'),
]
test_evaluator = val_evaluator

default_hooks = dict(
    checkpoint=dict(
        type='CheckpointHook',
        interval=10,
        max_keep_ckpts=2,
        save_best='accuracy/top1',
        rule='greater'))

# Random generator states in every checkpoint: --resume continues exactly.
# Deferred loss value checks read at every epoch end, before every
# checkpoint and at the end (no checkpoint after an unread NaN).
custom_hooks = [dict(type='mmrankkd.ExactResumeHook'),
                dict(type='mmrankkd.ValueCheckHook')]
