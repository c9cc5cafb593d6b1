# Kendall rank loss (RKKD, Guan et al., arXiv 2409.17823) on top of KD, on
# ImageNet ResNet-34 -> ResNet-18: the KD config
# (./kd_resnet34_resnet18_8xb32_in1k.py: T=1, weight 3, CE 1; mmrazor) plus
# 1 - tau with the tanh surrogate at steepness k=100 (the paper's best in
# its k ablation) and the rank weight equal to the KD weight, as the paper
# uses throughout. The pairwise term is memory-bounded at 1000 classes.
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=1.0,
                     loss_weight=3.0),
        loss_rank=dict(type='mmrankkd.KendallRankLoss', surrogate='tanh',
                       steepness=100.0, loss_weight=3.0)))
