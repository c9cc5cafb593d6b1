# DIST baseline (inter + intra class Pearson), pixels as rows. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distill_losses=dict(
        loss_dist=dict(type='mmrankkd.DISTLoss', beta=1.0, gamma=1.0,
                       loss_weight=1.0)))
