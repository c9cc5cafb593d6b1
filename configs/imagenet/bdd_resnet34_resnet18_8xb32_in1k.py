# Balance divergence (BDD, Qi et al., arXiv 2501.07804) on ImageNet
# ResNet-34 -> ResNet-18: forward KL + reverse KL. The paper's weights and
# temperatures are not public; our documented choice, as on CIFAR-100: the
# KD config (./kd_resnet34_resnet18_8xb32_in1k.py: T=1, weight 3, CE 1;
# mmrazor) with the reverse term added at the same temperature and weight
# (T_f = T_r = 1, w_f = w_r = 1), so BDD - KD is the reverse term alone.
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_bdd=dict(
            type='mmrankkd.BalanceDivergenceLoss',
            forward_temperature=1.0,
            reverse_temperature=1.0,
            forward_weight=1.0,
            reverse_weight=1.0,
            loss_weight=3.0)))
