# Correlation Matching KD (REFERENCE.md s.3). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet50_resnet18_8xb16_cifar100.py']

model = dict(
    distill_losses=dict(
        loss_cmkd=dict(type='mmrankkd.CorrelationMatchingLoss',
                       loss_weight=1.0)))
