# Plackett-Luce distillation (PLD, Bassam et al., arXiv 2506.12542) on
# ImageNet ResNet-34 -> ResNet-18: teacher temperature tau_T=1 (the paper's
# ImageNet best in its tau ablation: 0.5 / 1.0 / 2.0), loss weight 1; the
# list-wise loss replaces CE + KD, so the student's own loss is dropped.
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    student_task_loss=False,
    distill_losses=dict(
        loss_pld=dict(type='mmrankkd.PlackettLuceLoss',
                      teacher_temperature=1.0, loss_weight=1.0)))
