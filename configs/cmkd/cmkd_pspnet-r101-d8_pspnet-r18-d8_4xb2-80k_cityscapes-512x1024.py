# Correlation matching (CMKD, Niu et al., arXiv 2410.06561) per pixel on
# Cityscapes PSPNet R101-D8 -> R18-D8: Pearson + Spearman terms weighted per
# pixel by the teacher's entropy. The paper is classification-only and its
# weights are not public; our choice: T=1 and loss weight 1, as DIST's
# segmentation setting (DIST_KD segmentation/train_kd.py, --lambda-kd 1),
# which CMKD extends.
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    distill_losses=dict(
        loss_cmkd=dict(type='mmrankkd.CorrelationMatchingLoss',
                       temperature=1.0, loss_weight=1.0)))
