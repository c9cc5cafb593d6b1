# The quick-start teacher: PSPNet R18-D8 at half width (base 32 channels),
# trained from scratch. Full width would cost ~4x more on 2 CPU cores.
_base_ = './_base_/pspnet_r18-d8_synthcity-64x128.py'

model = dict(
    backbone=dict(stem_channels=32, base_channels=32),
    decode_head=dict(in_channels=256, channels=64))
