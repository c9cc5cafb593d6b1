# Kendall rank loss (REFERENCE.md s.2) on top of KD; the pairwise term is memory-bounded at 1000 classes. Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=1.0,
                     loss_weight=1.0),
        loss_rank=dict(type='mmrankkd.KendallRankLoss', loss_weight=1.0)))
