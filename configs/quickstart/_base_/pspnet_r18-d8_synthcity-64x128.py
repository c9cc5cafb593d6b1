# PSPNet R18-D8 on the synthetic Cityscapes-layout set, sized for the
# quick-start on a 2-core CPU: mmseg's Cityscapes recipe with small images,
# no ImageNet weights (nothing to download), plain BN, no auxiliary head,
# AdamW (fast convergence from scratch) and a few hundred iterations.
# `tools/quickstart.py` writes the data with
# `mmrankkd.datasets.make_synthetic_cityscapes(data_root, height=128,
# width=256)`. To read it from elsewhere, edit `data_root` here or, on the
# command line, set each loader's root (`--cfg-options data_root=...` alone
# changes nothing: the loaders below already hold the path):
#   --cfg-options train_dataloader.dataset.data_root=DIR \
#       val_dataloader.dataset.data_root=DIR \
#       test_dataloader.dataset.data_root=DIR
_base_ = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'

data_root = 'work_dirs/quickstart/data/synthetic_cityscapes'
crop_size = (64, 128)  # (h, w); the images are 128x256
test_scale = (192, 96)  # (w, h): the middle of the training scales
max_iters = 300
val_interval = 50
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(norm_cfg=norm_cfg),
    decode_head=dict(norm_cfg=norm_cfg),
    auxiliary_head=None)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(
        type='RandomResize',
        scale=(256, 128),
        ratio_range=(0.5, 1.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=test_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
# num_workers=0: two cores are better spent on the model than on workers.
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4,  # all validation images have the same size
    num_workers=0,
    persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999),
                   weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=20, by_epoch=False),
    dict(
        type='PolyLR',
        eta_min=1e-5,
        power=0.9,
        begin=20,
        end=max_iters,
        by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=val_interval)
default_hooks = dict(
    logger=dict(interval=10),
    # At the last iteration, with optimizer and scheduler state so --resume
    # continues the same AdamW moments and learning rate.
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
# Random generator states go into checkpoints too: a resumed run draws the
# same crops and flips as an uninterrupted one.
custom_imports = dict(imports=['mmrankkd'], allow_failed_imports=False)
# Deferred loss value checks read at every epoch end, before every
# checkpoint and at the end (no checkpoint after an unread NaN).
custom_hooks = [dict(type='mmrankkd.ExactResumeHook'),
                dict(type='mmrankkd.ValueCheckHook')]
randomness = dict(seed=0)
env_cfg = dict(cudnn_benchmark=False)
