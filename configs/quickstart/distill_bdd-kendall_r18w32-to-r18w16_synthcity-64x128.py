# The quick-start distillation: the half-width PSPNet R18-D8 teacher into the
# quarter-width student, with Balance Divergence (forward + reverse KL,
# pixel-wise) plus Kendall's rank loss on the class logits, on top of the
# student's own cross-entropy. Same data, schedule and iterations as the
# student trained alone (./student_...py), so the two are comparable.
#
# TEACHER CHECKPOINT: `tools/quickstart.py` trains the teacher and passes
#   --cfg-options model.teacher_ckpt=<work_dir>/teacher/iter_300.pth
_base_ = './student_pspnet_r18-d8-w16_synthcity-64x128.py'

custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)

teacher_ckpt = 'work_dirs/quickstart/teacher/iter_300.pth'
model = dict(
    _delete_=True,
    type='mmrankkd.LogitDistiller',
    student='{{fileDirname}}/student_pspnet_r18-d8-w16_synthcity-64x128.py',
    teacher='{{fileDirname}}/teacher_pspnet_r18-d8-w32_synthcity-64x128.py',
    teacher_ckpt=teacher_ckpt,
    distill_losses=dict(
        loss_bdd=dict(type='mmrankkd.BalanceDivergenceLoss', loss_weight=1.0),
        loss_rank=dict(type='mmrankkd.KendallRankLoss', loss_weight=1.0)),
    student_task_loss=True,
    resize_teacher_logits=True,
    data_preprocessor=None)

# Validation scores the student (mIoU), its agreement with the teacher
# (agreement/top1, agreement/kendall_tau) and the teacher (teacher/mIoU).
val_cfg = dict(
    _delete_=True, type='mmrankkd.DistillValLoop', score_teacher=True)
test_cfg = dict(
    _delete_=True, type='mmrankkd.DistillTestLoop', score_teacher=True)
val_evaluator = [
    dict(type='IoUMetric', iou_metrics=['mIoU']),
    dict(type='mmrankkd.TeacherStudentAgreement'),
]
test_evaluator = val_evaluator
