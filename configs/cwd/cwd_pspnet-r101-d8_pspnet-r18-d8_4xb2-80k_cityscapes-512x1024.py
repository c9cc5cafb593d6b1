# Channel-wise distillation (CWD, Shu et al., ICCV 2021) on Cityscapes
# PSPNet R101-D8 -> R18-D8: tau=1, loss weight 5 on the decode head's
# logits, mmrazor's setting for this very pair and recipe
# (configs/distill/mmseg/cwd/cwd_logits_pspnet_r101-d8_pspnet_r18-d8_
# 4xb2-80k_cityscapes-512x1024.py: ChannelWiseDivergence tau=1,
# loss_weight=5), anchor 75.54 mIoU (its metafile.yml).
# Published mIoU: 75.54 (mmrazor metafile.yml).
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    distill_losses=dict(
        loss_cwd=dict(type='mmrankkd.CWDLoss', temperature=1.0,
                      loss_weight=5.0)))
