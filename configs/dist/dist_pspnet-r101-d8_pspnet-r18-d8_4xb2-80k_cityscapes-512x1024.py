# DIST (Huang et al., NeurIPS 2022) per pixel on Cityscapes PSPNet R101-D8
# -> R18-D8: beta=gamma=1, T=1 (no temperature), weight 1, the valid pixels
# of the batch as rows; DIST_KD's segmentation setting
# (segmentation/losses/dist_kd.py DIST(), train_kd.py --lambda-kd 1). Its
# extra 0.4 x DIST on the auxiliary head's logits is not applied (distill
# losses act on the decode head's logits). Its anchor, 76.31 mIoU, is
# DeepLabV3-R101 -> PSPNet-R18 under another recipe, not this pair.
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    distill_losses=dict(
        loss_dist=dict(type='mmrankkd.DISTLoss', beta=1.0, gamma=1.0,
                       temperature=1.0, loss_weight=1.0)))
