# Channel-wise distillation baseline (mmrazor's setting: tau=1, loss_weight=5 on PSPNet logits; anchor 75.54 mIoU). Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']

model = dict(
    distill_losses=dict(
        loss_cwd=dict(type='mmrankkd.CWDLoss', loss_weight=5.0)))
