# Balance Divergence Distillation (REFERENCE.md s.1). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_bdd=dict(type='mmrankkd.BalanceDivergenceLoss',
                      loss_weight=1.0)))
