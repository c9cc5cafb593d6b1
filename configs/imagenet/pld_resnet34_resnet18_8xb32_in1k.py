# Plackett-Luce Distillation (REFERENCE.md s.4), tau_T=1.0 (paper's ImageNet best); replaces CE. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    student_task_loss=False,
    distill_losses=dict(
        loss_pld=dict(type='mmrankkd.PlackettLuceLoss',
                      teacher_temperature=1.0, loss_weight=1.0)))
