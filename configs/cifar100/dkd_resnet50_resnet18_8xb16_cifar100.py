# DKD baseline (alpha=1, beta=8, T=4). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet50_resnet18_8xb16_cifar100.py']

model = dict(
    distill_losses=dict(
        loss_dkd=dict(type='mmrankkd.DKDLoss', alpha=1.0, beta=8.0,
                      temperature=4.0, loss_weight=1.0)))
