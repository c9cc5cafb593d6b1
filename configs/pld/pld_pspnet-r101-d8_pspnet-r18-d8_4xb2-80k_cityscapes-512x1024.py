# Plackett-Luce distillation (PLD, Bassam et al., arXiv 2506.12542) per
# pixel on Cityscapes PSPNet R101-D8 -> R18-D8: each pixel's list-wise loss
# with its label, teacher temperature tau_T=1 (the paper's ImageNet best;
# the paper has no segmentation setting, the pixel-wise use is ours). It
# replaces the decode CE, so the student's own losses are dropped
# (student_task_loss=False; the auxiliary head is then frozen).
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py']  # noqa: E501

model = dict(
    student_task_loss=False,
    distill_losses=dict(
        loss_pld=dict(type='mmrankkd.PlackettLuceLoss',
                      teacher_temperature=1.0, loss_weight=1.0)))
