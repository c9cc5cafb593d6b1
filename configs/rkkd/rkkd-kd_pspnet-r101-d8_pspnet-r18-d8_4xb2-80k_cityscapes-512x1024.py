# Kendall rank loss (REFERENCE.md s.2) on top of KD, pixel-wise. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=1.0,
                     loss_weight=1.0),
        loss_rank=dict(type='mmrankkd.KendallRankLoss', loss_weight=1.0)))
