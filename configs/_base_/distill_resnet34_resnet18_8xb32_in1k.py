# Shared base: ImageNet-1k, ResNet-34 (teacher, 73.62 top-1) -> ResNet-18
# (student, 69.90), mmpretrain's 8 GPUs x 32 images, 100-epoch recipe
# (mmrazor anchors: KD 71.81, DIST 71.61, DKD 71.37). Each loss config sets
# `model.distill_losses`.
#
# TEACHER CHECKPOINT: mmpretrain's resnet34_8xb32_in1k model. The default is
# its model-zoo URL; without network download it once and set the local path
# here, or pass --cfg-options model.teacher_ckpt=/path/to/teacher.pth
_base_ = ['mmpretrain::resnet/resnet18_8xb32_in1k.py']

custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)

teacher_ckpt = 'https://download.openmmlab.com/mmclassification/v0/resnet/resnet34_8xb32_in1k_20210831-f257d4e6.pth'  # noqa: E501

# No `data_preprocessor` key: the runner passes the config's top-level
# `data_preprocessor` (ImageNet mean/std), as for mmpretrain's own models.
model = dict(
    _delete_=True,
    type='mmrankkd.LogitDistiller',
    student='mmpretrain::resnet/resnet18_8xb32_in1k.py',
    teacher='mmpretrain::resnet/resnet34_8xb32_in1k.py',
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(),  # set by each loss config
    student_task_loss=True)

val_cfg = dict(_delete_=True, type='mmrankkd.DistillValLoop',
               score_teacher=True)
test_cfg = dict(_delete_=True, type='mmrankkd.DistillTestLoop',
                score_teacher=True)
val_evaluator = [
    dict(type='Accuracy', topk=(1, 5)),
    dict(type='mmrankkd.TeacherStudentAgreement'),
]
test_evaluator = val_evaluator

# Random generator states in every checkpoint: --resume continues exactly.
# Deferred loss value checks read at every epoch end, before every
# checkpoint and at the end (no checkpoint after an unread NaN).
custom_hooks = [dict(type='mmrankkd.ExactResumeHook'),
                dict(type='mmrankkd.ValueCheckHook')]
