# Plackett-Luce Distillation (REFERENCE.md s.4), tau_T=4 (CIFAR-100); replaces CE. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet50_resnet18_8xb16_cifar100.py']

model = dict(
    student_task_loss=False,
    distill_losses=dict(
        loss_pld=dict(type='mmrankkd.PlackettLuceLoss',
                      teacher_temperature=4.0, loss_weight=1.0)))
