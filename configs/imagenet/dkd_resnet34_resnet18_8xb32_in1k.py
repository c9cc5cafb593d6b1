# DKD baseline (mmrazor anchor 71.37). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_dkd=dict(type='mmrankkd.DKDLoss', alpha=1.0, beta=0.5,
                      temperature=1.0, loss_weight=1.0)))
