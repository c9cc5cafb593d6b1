# The quick-start student trained alone (the baseline): PSPNet R18-D8 at a
# quarter width (base 16 channels, ~0.8M parameters), same schedule as the
# teacher (cheap: ~4x fewer parameters and FLOPs).
_base_ = './_base_/pspnet_r18-d8_synthcity-64x128.py'

max_iters = 300
model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    decode_head=dict(in_channels=128, channels=32))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=20, by_epoch=False),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=20, end=max_iters,
         by_epoch=False)
]
train_cfg = dict(max_iters=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters))
