# DIST baseline. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet50_resnet18_8xb16_cifar100.py']

model = dict(
    distill_losses=dict(
        loss_dist=dict(type='mmrankkd.DISTLoss', beta=1.0, gamma=1.0,
                       temperature=4.0, loss_weight=1.0)))
