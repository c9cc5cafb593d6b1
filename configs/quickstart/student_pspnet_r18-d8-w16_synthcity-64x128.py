# The quick-start student trained alone (the baseline): PSPNet R18-D8 at a
# quarter width (base 16 channels, ~0.8M parameters), same schedule as the
# teacher (cheap: ~4x fewer parameters and FLOPs).
_base_ = './_base_/pspnet_r18-d8_synthcity-64x128.py'

model = dict(
    backbone=dict(stem_channels=16, base_channels=16),
    decode_head=dict(in_channels=128, channels=32))
