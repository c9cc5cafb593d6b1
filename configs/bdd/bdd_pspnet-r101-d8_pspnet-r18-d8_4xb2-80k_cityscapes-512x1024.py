# Balance divergence (BDD, Qi et al., arXiv 2501.07804) on Cityscapes PSPNet
# R101-D8 -> R18-D8: forward KL + reverse KL per pixel. The paper reports
# +4.55 mIoU for PSPNet-R18 but its segmentation setting (weights,
# temperatures, dense form) is not public; our adopted form: T_f = T_r = 1,
# w_f = w_r = 1, loss weight 1, pixel-wise (mode='pixel').
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    distill_losses=dict(
        loss_bdd=dict(type='mmrankkd.BalanceDivergenceLoss',
                      loss_weight=1.0)))
