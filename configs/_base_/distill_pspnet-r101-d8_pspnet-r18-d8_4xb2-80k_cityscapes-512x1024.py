# Shared base: Cityscapes, PSPNet R101-D8 (teacher) -> PSPNet R18-D8 (student),
# 512x1024 crops, 80k iterations, 4 GPUs x 2 images (mmrazor's CWD anchor:
# teacher 79.76 mIoU, student 74.87, CWD 75.54).
#
# Dataset, schedule and runtime come from the student's own mmseg config;
# each loss config below only sets `model.distill_losses`.
#
# TEACHER CHECKPOINT: mmseg's PSPNet R101-D8 512x1024 80k Cityscapes model.
# The default is its model-zoo URL (downloaded on first use). Without network,
# download it once and set the local path here (`teacher_ckpt`), or pass
#   --cfg-options model.teacher_ckpt=/path/to/pspnet_r101-d8_...e1e1100f.pth
_base_ = ['mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py']

custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)

teacher_ckpt = 'https://download.openmmlab.com/mmsegmentation/v0.5/pspnet/pspnet_r101-d8_512x1024_80k_cityscapes/pspnet_r101-d8_512x1024_80k_cityscapes_20200606_112211-e1e1100f.pth'  # noqa: E501

model = dict(
    _delete_=True,
    type='mmrankkd.LogitDistiller',
    student='mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher='mmseg::pspnet/pspnet_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(),  # set by each loss config
    student_task_loss=True,
    resize_teacher_logits=True,
    data_preprocessor=None)

# Validation scores the student (mIoU), its agreement with the teacher
# (pixel agreement, mean Kendall tau of the class logits), and the teacher
# once (teacher/mIoU).
val_cfg = dict(_delete_=True, type='mmrankkd.DistillValLoop',
               score_teacher=True)
test_cfg = dict(_delete_=True, type='mmrankkd.DistillTestLoop',
                score_teacher=True)
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmrankkd.TeacherStudentAgreement'),
]
test_evaluator = val_evaluator

# Random generator states in every checkpoint: --resume continues exactly.
# Deferred loss value checks read at every epoch end, before every
# checkpoint and at the end (no checkpoint after an unread NaN).
custom_hooks = [dict(type='mmrankkd.ExactResumeHook'),
                dict(type='mmrankkd.ValueCheckHook')]
