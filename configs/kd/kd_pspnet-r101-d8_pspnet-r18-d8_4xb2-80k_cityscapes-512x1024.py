# Hinton KD per pixel on Cityscapes PSPNet R101-D8 -> R18-D8: T=1, weight 1,
# student losses unchanged. Our baseline: no published KD setting exists
# for this pair and recipe (mmrazor ships only CWD for it; the CWD paper's
# and DIST's segmentation baselines use other teachers and schedules).
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=1.0,
                     loss_weight=1.0)))
