# Balance Divergence Distillation (REFERENCE.md s.1): forward KL + reverse KL, pixel-wise. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distill_losses=dict(
        loss_bdd=dict(type='mmrankkd.BalanceDivergenceLoss',
                      loss_weight=1.0)))
