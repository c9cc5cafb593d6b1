# Hinton KD, T=1 (mmrazor's anchor: 71.81). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=1.0,
                     loss_weight=1.0)))
