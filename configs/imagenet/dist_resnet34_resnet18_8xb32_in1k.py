# DIST (Huang et al., NeurIPS 2022) on ImageNet ResNet-34 -> ResNet-18:
# T=1, beta=gamma=1, DIST weight 2, student CE weight 1, SGD with Nesterov
# momentum. Source: DIST_KD (hunto/image_classification_sota)
# configs/strategies/distill/resnet_dist.yaml (kd: dist = DIST(beta=1,
# gamma=1, tau=1) in lib/models/losses/kd_loss.py; ori_loss_weight 1,
# kd_loss_weight 2; SGD without sgd_no_nesterov, i.e. Nesterov, batch
# 8 x 32, lr 0.1, 100 epochs, x0.1 every 30, as mmpretrain's recipe);
# mmrazor's configs/distill/mmcls/dist/dist_logits_resnet34_resnet18_
# 8xb32_in1k.py is the same (DISTLoss tau=1, loss_weight=2,
# nesterov=True). DIST_KD also leaves biases and BN out of weight decay;
# mmrazor's config and this one do not. Anchors: 71.61 top-1 (mmrazor),
# 72.07 (DIST_KD README, torchvision teacher 73.31).
# Teacher checkpoint: see the base config (model.teacher_ckpt).
_base_ = ['../_base_/distill_resnet34_resnet18_8xb32_in1k.py']

model = dict(
    distill_losses=dict(
        loss_dist=dict(type='mmrankkd.DISTLoss', beta=1.0, gamma=1.0,
                       temperature=1.0, loss_weight=2.0)))

optim_wrapper = dict(optimizer=dict(nesterov=True))
