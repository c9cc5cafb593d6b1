# KD on ImageNet ResNet-34 -> ResNet-18 (the kd_ config's settings) with
# the training views replayed from a seed, so that the teacher's logits can
# come from a store built once (docs/teacher_store.md, replay mode):
#
#   python tools/build_teacher_store.py \
#       configs/imagenet/kd-replay_resnet34_resnet18_8xb32_in1k.py \
#       --out stores/resnet34_in1k_replay_top10 --topk 10 --num-workers 16
#   bash tools/dist_train.sh \
#       configs/imagenet/kd-replay_resnet34_resnet18_8xb32_in1k.py 8 \
#       --cfg-options model.teacher_store=stores/resnet34_in1k_replay_top10
#
# The store holds one view per image and epoch (1,281,167 x 100): top-10
# (float32 values, int16 classes, the rest's log-sum-exp) is 64 B a view,
# 8.2 GB; all 1000 float32 logits would be 512 GB (drop --topk). KD takes
# the top-10 store as an approximation (the other classes share the rest
# of the teacher's softmax mass evenly), logged at start-up; losses that
# need every logit are refused with a top-k store. Without
# model.teacher_store the config trains with the live teacher on the same
# replayed views.
_base_ = ['./kd_resnet34_resnet18_8xb32_in1k.py']

train_dataloader = dict(
    sampler=dict(type='mmrankkd.ReplaySampler',
                 sampler=dict(type='DefaultSampler', shuffle=True)),
    dataset=dict(_delete_=True, type='mmrankkd.ReplayDataset', seed=0,
                 dataset=_base_.train_dataloader.dataset))
