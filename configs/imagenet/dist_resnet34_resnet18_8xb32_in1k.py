# DIST baseline (mmrazor anchor 71.61). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_dist=dict(type='mmrankkd.DISTLoss', beta=1.0, gamma=1.0,
                       temperature=1.0, loss_weight=1.0)))
