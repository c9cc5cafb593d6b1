# Kendall rank loss (RKKD, Guan et al., arXiv 2409.17823) on top of KD, per
# pixel, on Cityscapes PSPNet R101-D8 -> R18-D8: the KD config
# (../kd/kd_pspnet-...: T=1, weight 1) plus 1 - tau with the tanh surrogate
# at steepness k=100 (the paper's best in its k ablation, on
# classification) and the rank weight equal to the KD weight, as the paper
# uses throughout. The paper has no segmentation setting; pixel-wise
# application is ours.
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=1.0,
                     loss_weight=1.0),
        loss_rank=dict(type='mmrankkd.KendallRankLoss', surrogate='tanh',
                       steepness=100.0, loss_weight=1.0)))
