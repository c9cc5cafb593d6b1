# Correlation Matching KD (REFERENCE.md s.3), pixel-wise. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distill_losses=dict(
        loss_cmkd=dict(type='mmrankkd.CorrelationMatchingLoss',
                       loss_weight=1.0)))
