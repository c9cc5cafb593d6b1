# Plackett-Luce Distillation (REFERENCE.md s.4): replaces the decode CE, so the student's own losses are dropped. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    student_task_loss=False,
    distill_losses=dict(
        loss_pld=dict(type='mmrankkd.PlackettLuceLoss',
                      teacher_temperature=1.0, loss_weight=1.0)))
