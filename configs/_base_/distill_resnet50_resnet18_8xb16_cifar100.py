# Shared base: CIFAR-100, ResNet-50 (teacher, mmpretrain's CIFAR ResNet-50,
# 79.90 top-1) -> ResNet-18 (student, CIFAR stem), mmpretrain's CIFAR-100
# recipe (8 GPUs x 16 images, 200 epochs). Each loss config sets
# `model.distill_losses`.
#
# TEACHER CHECKPOINT: mmpretrain's resnet50_b16x8_cifar100 model. The default
# is its model-zoo URL; without network download it once and set the local
# path here, or pass --cfg-options model.teacher_ckpt=/path/to/teacher.pth
_base_ = ['mmpretrain::resnet/resnet50_8xb16_cifar100.py']

custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)

teacher_ckpt = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet50_b16x8_cifar100_20210528-67b58a1b.pth'  # noqa: E501

student = dict(
    type='ImageClassifier',
    backbone=dict(
        type='ResNet_CIFAR',
        depth=18,
        num_stages=4,
        out_indices=(3, ),
        style='pytorch'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=100,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# No `data_preprocessor` key: the runner passes the config's top-level
# `data_preprocessor` (CIFAR-100 mean/std), as for mmpretrain's own models.
model = dict(
    _delete_=True,
    type='mmrankkd.LogitDistiller',
    student=student,
    teacher='mmpretrain::resnet/resnet50_8xb16_cifar100.py',
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(),  # set by each loss config
    student_task_loss=True)

# Validation: student top-1, teacher-student top-1 agreement and mean
# Kendall tau of the class scores, and the teacher's top-1 once.
val_cfg = dict(_delete_=True, type='mmrankkd.DistillValLoop',
               score_teacher=True)
test_cfg = dict(_delete_=True, type='mmrankkd.DistillTestLoop',
                score_teacher=True)
val_evaluator = [
    dict(type='Accuracy', topk=(1, )),
    dict(type='mmrankkd.TeacherStudentAgreement'),
]
test_evaluator = val_evaluator
