"""The CIFAR-100 model zoo (``configs/cifar100/_base_/models/<arch>.py``):
the same networks as the public CRD/RepDistiller definitions (identical in
mdistiller).

The originals are not vendored. Instead this file lists their state dicts
(key names and shapes, :func:`original_keys`) and re-computes their forward
passes functionally (:func:`original_forward`), both written from reading
the definitions in RepDistiller's ``models/`` (resnet.py, resnetv2.py,
wrn.py, vgg.py, mobilenetv2.py, ShuffleNetv1.py, ShuffleNetv2.py). Our
models must have exactly the converted key set, the parameter counts, and
the logits of the original for the same weights.
"""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mmrankkd  # noqa: F401  (registers the backbones)
from mmrankkd.models.backbones import (CIFAR_ZOO_ARCHS, ORIGINAL_HEAD_PREFIX,
                                       original_to_zoo_state_dict)

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / 'configs' / 'cifar100' / '_base_' / 'models'
NUM_CLASSES = 100

# Parameter counts in millions with 100 classes, as published with the
# benchmarks (CRD / DKD papers' tables).
PUBLISHED_PARAMS_M = {
    'resnet8x4': 1.23, 'resnet32x4': 7.43, 'wrn_40_2': 2.26,
    'wrn_16_2': 0.70, 'vgg13': 9.46, 'vgg8': 3.97, 'resnet56': 0.86,
    'resnet20': 0.28, 'MobileNetV2': 0.81, 'ShuffleV1': 0.95,
    'ShuffleV2': 1.36,
}

# Exact trainable parameter counts with 100 classes, obtained by summing
# the parameter shapes of the public definitions as listed by
# `original_keys` below (weights and biases of every conv, norm and linear
# layer; running statistics excluded).
ORIGINAL_PARAMS = {
    'resnet8': 83_892,
    'resnet14': 181_108,
    'resnet20': 278_324,
    'resnet32': 472_756,
    'resnet44': 667_188,
    'resnet56': 861_620,
    'resnet110': 1_736_564,
    'resnet8x4': 1_233_540,
    'resnet32x4': 7_433_860,
    'wrn_16_1': 180_916,
    'wrn_16_2': 703_284,
    'wrn_40_1': 569_780,
    'wrn_40_2': 2_255_156,
    'vgg8': 3_965_028,
    'vgg11': 9_277_284,
    'vgg13': 9_462_180,
    'vgg16': 14_774_436,
    'vgg19': 20_086_692,
    'MobileNetV2': 812_836,
    'ShuffleV1': 949_258,
    'ShuffleV2': 1_355_528,
    'ResNet50': 23_705_252,
}

# The normalisation the released teachers were trained with (torchvision
# Normalize on [0, 1] RGB pixels).
CIFAR_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR_STD = (0.2675, 0.2565, 0.2761)


# ---------------------------------------------------------------------------
# The original state dicts: key -> shape, in definition order.
def _conv(keys, name, cout, cin_per_group, k, bias=False):
    keys[f'{name}.weight'] = (cout, cin_per_group, k, k)
    if bias:
        keys[f'{name}.bias'] = (cout, )


def _bn(keys, name, c):
    for stat in ('weight', 'bias', 'running_mean', 'running_var'):
        keys[f'{name}.{stat}'] = (c, )
    keys[f'{name}.num_batches_tracked'] = ()


def _linear(keys, name, cout, cin):
    keys[f'{name}.weight'] = (cout, cin)
    keys[f'{name}.bias'] = (cout, )


def _resnet_keys(depth, filters):
    """models/resnet.py: ResNet(depth, num_filters, 'basicblock')."""
    keys = {}
    n = (depth - 2) // 6
    _conv(keys, 'conv1', filters[0], 3, 3)
    _bn(keys, 'bn1', filters[0])
    inplanes = filters[0]
    for i, (planes, stride) in enumerate(zip(filters[1:], (1, 2, 2))):
        for b in range(n):
            p = f'layer{i + 1}.{b}.'
            _conv(keys, p + 'conv1', planes, inplanes, 3)
            _bn(keys, p + 'bn1', planes)
            _conv(keys, p + 'conv2', planes, planes, 3)
            _bn(keys, p + 'bn2', planes)
            if b == 0 and (stride != 1 or inplanes != planes):
                _conv(keys, p + 'downsample.0', planes, inplanes, 1)
                _bn(keys, p + 'downsample.1', planes)
            inplanes = planes
    _linear(keys, 'fc', NUM_CLASSES, filters[3])
    return keys


def _resnet50_keys():
    """models/resnetv2.py: ResNet(Bottleneck, [3, 4, 6, 3])."""
    keys = {}
    _conv(keys, 'conv1', 64, 3, 3)
    _bn(keys, 'bn1', 64)
    inp = 64
    for i, (n, planes, stride) in enumerate(
            zip((3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2))):
        for b in range(n):
            s = stride if b == 0 else 1
            p = f'layer{i + 1}.{b}.'
            _conv(keys, p + 'conv1', planes, inp, 1)
            _bn(keys, p + 'bn1', planes)
            _conv(keys, p + 'conv2', planes, planes, 3)
            _bn(keys, p + 'bn2', planes)
            _conv(keys, p + 'conv3', 4 * planes, planes, 1)
            _bn(keys, p + 'bn3', 4 * planes)
            if s != 1 or inp != 4 * planes:
                _conv(keys, p + 'shortcut.0', 4 * planes, inp, 1)
                _bn(keys, p + 'shortcut.1', 4 * planes)
            inp = 4 * planes
    _linear(keys, 'linear', NUM_CLASSES, 2048)
    return keys


def _wrn_keys(depth, k):
    """models/wrn.py: WideResNet(depth, num_classes, widen_factor=k)."""
    keys = {}
    n = (depth - 4) // 6
    ch = [16, 16 * k, 32 * k, 64 * k]
    _conv(keys, 'conv1', 16, 3, 3)
    for i in range(3):
        for b in range(n):
            cin = ch[i] if b == 0 else ch[i + 1]
            cout = ch[i + 1]
            p = f'block{i + 1}.layer.{b}.'
            _bn(keys, p + 'bn1', cin)
            _conv(keys, p + 'conv1', cout, cin, 3)
            _bn(keys, p + 'bn2', cout)
            _conv(keys, p + 'conv2', cout, cout, 3)
            if cin != cout:
                _conv(keys, p + 'convShortcut', cout, cin, 1)
    _bn(keys, 'bn1', ch[3])
    _linear(keys, 'fc', NUM_CLASSES, ch[3])
    return keys


_VGG_CFG = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512],
         [512, 512, 512]],
    19: [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512],
         [512, 512, 512, 512]],
}


def _vgg_keys(depth):
    """models/vgg.py: VGG(cfg, batch_norm=True); each block is
    [conv, bn, relu] * n without its last relu."""
    keys = {}
    cin = 3
    for i, widths in enumerate(_VGG_CFG[depth]):
        for j, w in enumerate(widths):
            _conv(keys, f'block{i}.{3 * j}', w, cin, 3, bias=True)
            _bn(keys, f'block{i}.{3 * j + 1}', w)
            cin = w
    _linear(keys, 'classifier', NUM_CLASSES, 512)
    return keys


_MBV2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def _mobilenetv2_keys():
    """models/mobilenetv2.py: mobile_half = MobileNetV2(T=6, width 0.5)."""
    keys = {}
    inp = 16
    _conv(keys, 'conv1.0', inp, 3, 3)
    _bn(keys, 'conv1.1', inp)
    for s, (t, c, n, _) in enumerate(_MBV2_SETTING):
        out = int(c * 0.5)
        for b in range(n):
            p = f'blocks.{s}.{b}.conv.'
            hid = inp * t
            _conv(keys, p + '0', hid, inp, 1)
            _bn(keys, p + '1', hid)
            _conv(keys, p + '3', hid, 1, 3)
            _bn(keys, p + '4', hid)
            _conv(keys, p + '6', out, hid, 1)
            _bn(keys, p + '7', out)
            inp = out
    _conv(keys, 'conv2.0', 1280, inp, 1)
    _bn(keys, 'conv2.1', 1280)
    _linear(keys, 'classifier.0', NUM_CLASSES, 1280)
    return keys


def _shufflev1_keys():
    """models/ShuffleNetv1.py: ShuffleV1 (out_planes 240/480/960, blocks
    4/8/4, groups 3)."""
    keys = {}
    _conv(keys, 'conv1', 24, 3, 1)
    _bn(keys, 'bn1', 24)
    inp = 24
    for i, (planes, n) in enumerate(zip((240, 480, 960), (4, 8, 4))):
        for b in range(n):
            out = planes - (inp if b == 0 else 0)
            mid = int(out / 4)
            g = 1 if inp == 24 else 3
            p = f'layer{i + 1}.{b}.'
            _conv(keys, p + 'conv1', mid, inp // g, 1)
            _bn(keys, p + 'bn1', mid)
            _conv(keys, p + 'conv2', mid, 1, 3)
            _bn(keys, p + 'bn2', mid)
            _conv(keys, p + 'conv3', out, mid // 3, 1)
            _bn(keys, p + 'bn3', out)
            inp = planes
    _linear(keys, 'linear', NUM_CLASSES, 960)
    return keys


def _shufflev2_keys():
    """models/ShuffleNetv2.py: ShuffleV2 (net_size 1: 116/232/464/1024,
    3/7/3 basic blocks after each DownBlock)."""
    keys = {}
    _conv(keys, 'conv1', 24, 3, 1)
    _bn(keys, 'bn1', 24)
    inp = 24
    for i, (out, n) in enumerate(zip((116, 232, 464), (3, 7, 3))):
        mid = out // 2
        p = f'layer{i + 1}.0.'
        _conv(keys, p + 'conv1', inp, 1, 3)
        _bn(keys, p + 'bn1', inp)
        _conv(keys, p + 'conv2', mid, inp, 1)
        _bn(keys, p + 'bn2', mid)
        _conv(keys, p + 'conv3', mid, inp, 1)
        _bn(keys, p + 'bn3', mid)
        _conv(keys, p + 'conv4', mid, 1, 3)
        _bn(keys, p + 'bn4', mid)
        _conv(keys, p + 'conv5', mid, mid, 1)
        _bn(keys, p + 'bn5', mid)
        for b in range(1, n + 1):
            p = f'layer{i + 1}.{b}.'
            c = out // 2
            _conv(keys, p + 'conv1', c, c, 1)
            _bn(keys, p + 'bn1', c)
            _conv(keys, p + 'conv2', c, 1, 3)
            _bn(keys, p + 'bn2', c)
            _conv(keys, p + 'conv3', c, c, 1)
            _bn(keys, p + 'bn3', c)
        inp = out
    _conv(keys, 'conv2', 1024, 464, 1)
    _bn(keys, 'bn2', 1024)
    _linear(keys, 'linear', NUM_CLASSES, 1024)
    return keys


def original_keys(arch):
    """The original model's state dict for ``arch``: {key: shape}."""
    small = (16, 16, 32, 64)
    wide = (32, 64, 128, 256)
    table = {
        'resnet8': lambda: _resnet_keys(8, small),
        'resnet14': lambda: _resnet_keys(14, small),
        'resnet20': lambda: _resnet_keys(20, small),
        'resnet32': lambda: _resnet_keys(32, small),
        'resnet44': lambda: _resnet_keys(44, small),
        'resnet56': lambda: _resnet_keys(56, small),
        'resnet110': lambda: _resnet_keys(110, small),
        'resnet8x4': lambda: _resnet_keys(8, wide),
        'resnet32x4': lambda: _resnet_keys(32, wide),
        'wrn_16_1': lambda: _wrn_keys(16, 1),
        'wrn_16_2': lambda: _wrn_keys(16, 2),
        'wrn_40_1': lambda: _wrn_keys(40, 1),
        'wrn_40_2': lambda: _wrn_keys(40, 2),
        'vgg8': lambda: _vgg_keys(8),
        'vgg11': lambda: _vgg_keys(11),
        'vgg13': lambda: _vgg_keys(13),
        'vgg16': lambda: _vgg_keys(16),
        'vgg19': lambda: _vgg_keys(19),
        'MobileNetV2': _mobilenetv2_keys,
        'ShuffleV1': _shufflev1_keys,
        'ShuffleV2': _shufflev2_keys,
        'ResNet50': _resnet50_keys,
    }
    return table[arch]()


def count_params(keys):
    """Trainable parameters in a {key: shape} listing."""
    return sum(
        math.prod(shape) for key, shape in keys.items()
        if not key.endswith(('running_mean', 'running_var',
                             'num_batches_tracked')))


def random_original_state_dict(arch, seed=0):
    """Random weights under the original keys, with non-trivial norm
    statistics (so that a mix-up of norm parameters would show)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in original_keys(arch).items():
        if key.endswith('num_batches_tracked'):
            sd[key] = torch.tensor(7)
        elif key.endswith('running_var'):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith('running_mean'):
            sd[key] = 0.1 * torch.randn(shape, generator=g)
        elif '.weight' in key and len(shape) == 1:  # norm scale
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # biases
            sd[key] = 0.1 * torch.randn(shape, generator=g)
        else:  # conv / linear weights, variance-preserving
            fan_in = math.prod(shape[1:])
            sd[key] = torch.randn(shape, generator=g) * math.sqrt(2 / fan_in)
    return sd


# ---------------------------------------------------------------------------
# The original forward passes, re-computed with torch.nn.functional on the
# original state dicts (eval mode).
def _c(x, sd, name, stride=1):
    w = sd[name + '.weight']
    return F.conv2d(x, w, sd.get(name + '.bias'), stride, w.shape[-1] // 2,
                    groups=x.shape[1] // w.shape[1])


def _n(x, sd, name):
    return F.batch_norm(x, sd[name + '.running_mean'],
                        sd[name + '.running_var'], sd[name + '.weight'],
                        sd[name + '.bias'], False, 0.0, 1e-5)


def _fc(x, sd, name):
    return F.linear(x.flatten(1), sd[name + '.weight'], sd[name + '.bias'])


def _blocks(sd, prefix):
    """Indices of the blocks under ``prefix`` (e.g. 'layer1.')."""
    return sorted({int(k[len(prefix):].split('.')[0])
                   for k in sd if k.startswith(prefix)})


def _shuffle(x, g):
    n, c, h, w = x.shape
    return x.view(n, g, c // g, h, w).permute(0, 2, 1, 3, 4).reshape(
        n, c, h, w)


def _resnet_forward(sd, x):
    x = F.relu(_n(_c(x, sd, 'conv1'), sd, 'bn1'))
    for i in range(3):
        for b in _blocks(sd, f'layer{i + 1}.'):
            p = f'layer{i + 1}.{b}.'
            s = 2 if (i > 0 and b == 0) else 1
            out = F.relu(_n(_c(x, sd, p + 'conv1', s), sd, p + 'bn1'))
            out = _n(_c(out, sd, p + 'conv2'), sd, p + 'bn2')
            res = x
            if p + 'downsample.0.weight' in sd:
                res = _n(_c(x, sd, p + 'downsample.0', s), sd,
                         p + 'downsample.1')
            x = F.relu(out + res)
    return _fc(F.avg_pool2d(x, 8), sd, 'fc')


def _resnet50_forward(sd, x):
    x = F.relu(_n(_c(x, sd, 'conv1'), sd, 'bn1'))
    for i in range(4):
        for b in _blocks(sd, f'layer{i + 1}.'):
            p = f'layer{i + 1}.{b}.'
            s = 2 if (i > 0 and b == 0) else 1
            out = F.relu(_n(_c(x, sd, p + 'conv1'), sd, p + 'bn1'))
            out = F.relu(_n(_c(out, sd, p + 'conv2', s), sd, p + 'bn2'))
            out = _n(_c(out, sd, p + 'conv3'), sd, p + 'bn3')
            res = x
            if p + 'shortcut.0.weight' in sd:
                res = _n(_c(x, sd, p + 'shortcut.0', s), sd, p + 'shortcut.1')
            x = F.relu(out + res)
    return _fc(F.adaptive_avg_pool2d(x, 1), sd, 'linear')


def _wrn_forward(sd, x):
    x = _c(x, sd, 'conv1')
    for i in range(3):
        for b in _blocks(sd, f'block{i + 1}.layer.'):
            p = f'block{i + 1}.layer.{b}.'
            s = 2 if (i > 0 and b == 0) else 1
            act = F.relu(_n(x, sd, p + 'bn1'))
            out = F.relu(_n(_c(act, sd, p + 'conv1', s), sd, p + 'bn2'))
            out = _c(out, sd, p + 'conv2')
            if p + 'convShortcut.weight' in sd:
                x = _c(act, sd, p + 'convShortcut', s) + out
            else:
                x = x + out
    x = F.relu(_n(x, sd, 'bn1'))
    return _fc(F.avg_pool2d(x, 8), sd, 'fc')


def _vgg_forward(sd, x):
    h = x.shape[2]
    for i in range(5):
        if i in (1, 2, 3) or (i == 4 and h == 64):
            x = F.max_pool2d(x, 2, 2)
        for j in range(len(_blocks(sd, f'block{i}.')) // 2):
            conv, norm = f'block{i}.{3 * j}', f'block{i}.{3 * j + 1}'
            x = F.relu(_n(_c(x, sd, conv), sd, norm))
    return _fc(F.adaptive_avg_pool2d(x, 1), sd, 'classifier')


def _mobilenetv2_forward(sd, x):
    x = F.relu(_n(_c(x, sd, 'conv1.0', 2), sd, 'conv1.1'))
    for s, (_, _, _, stride) in enumerate(_MBV2_SETTING):
        for b in _blocks(sd, f'blocks.{s}.'):
            p = f'blocks.{s}.{b}.conv.'
            st = stride if b == 0 else 1
            out = F.relu(_n(_c(x, sd, p + '0'), sd, p + '1'))
            out = F.relu(_n(_c(out, sd, p + '3', st), sd, p + '4'))
            out = _n(_c(out, sd, p + '6'), sd, p + '7')
            x = x + out if (st == 1 and x.shape == out.shape) else out
    x = F.relu(_n(_c(x, sd, 'conv2.0'), sd, 'conv2.1'))
    return _fc(F.avg_pool2d(x, 2, ceil_mode=True), sd, 'classifier.0')


def _shufflev1_forward(sd, x):
    x = F.relu(_n(_c(x, sd, 'conv1'), sd, 'bn1'))
    for i in range(3):
        for b in _blocks(sd, f'layer{i + 1}.'):
            p = f'layer{i + 1}.{b}.'
            s = 2 if b == 0 else 1
            g = x.shape[1] // sd[p + 'conv1.weight'].shape[1]
            out = F.relu(_n(_c(x, sd, p + 'conv1'), sd, p + 'bn1'))
            out = _shuffle(out, g)
            out = F.relu(_n(_c(out, sd, p + 'conv2', s), sd, p + 'bn2'))
            out = _n(_c(out, sd, p + 'conv3'), sd, p + 'bn3')
            if s == 2:
                x = F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
            else:
                x = F.relu(out + x)
    return _fc(F.avg_pool2d(x, 4), sd, 'linear')


def _shufflev2_forward(sd, x):
    x = F.relu(_n(_c(x, sd, 'conv1'), sd, 'bn1'))
    for i in range(3):
        for b in _blocks(sd, f'layer{i + 1}.'):
            p = f'layer{i + 1}.{b}.'
            if b == 0:
                left = _n(_c(x, sd, p + 'conv1', 2), sd, p + 'bn1')
                left = F.relu(_n(_c(left, sd, p + 'conv2'), sd, p + 'bn2'))
                right = F.relu(_n(_c(x, sd, p + 'conv3'), sd, p + 'bn3'))
                right = _n(_c(right, sd, p + 'conv4', 2), sd, p + 'bn4')
                right = F.relu(_n(_c(right, sd, p + 'conv5'), sd, p + 'bn5'))
                x = _shuffle(torch.cat([left, right], 1), 2)
            else:
                c = x.shape[1] // 2
                x1, x2 = x[:, :c], x[:, c:]
                out = F.relu(_n(_c(x2, sd, p + 'conv1'), sd, p + 'bn1'))
                out = _n(_c(out, sd, p + 'conv2'), sd, p + 'bn2')
                out = F.relu(_n(_c(out, sd, p + 'conv3'), sd, p + 'bn3'))
                x = _shuffle(torch.cat([x1, out], 1), 2)
    x = F.relu(_n(_c(x, sd, 'conv2'), sd, 'bn2'))
    return _fc(F.avg_pool2d(x, 4), sd, 'linear')


def original_forward(arch, sd, x):
    """The original model's logits for weights ``sd`` (original keys)."""
    if arch.startswith('resnet'):
        return _resnet_forward(sd, x)
    if arch.startswith('wrn'):
        return _wrn_forward(sd, x)
    if arch.startswith('vgg'):
        return _vgg_forward(sd, x)
    return {
        'MobileNetV2': _mobilenetv2_forward,
        'ShuffleV1': _shufflev1_forward,
        'ShuffleV2': _shufflev2_forward,
        'ResNet50': _resnet50_forward,
    }[arch](sd, x)


# ---------------------------------------------------------------------------
def build_zoo_model(arch):
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(MODEL_DIR / f'{arch}.py'))
    return MODELS.build(cfg.model)


def trainable_params(model):
    return sum(p.numel() for p in model.parameters())


def test_zoo_has_exactly_the_benchmark_architectures():
    expected = {
        'resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44',
        'resnet56', 'resnet110', 'resnet8x4', 'resnet32x4', 'wrn_16_1',
        'wrn_16_2', 'wrn_40_1', 'wrn_40_2', 'vgg8', 'vgg11', 'vgg13',
        'vgg16', 'vgg19', 'MobileNetV2', 'ShuffleV1', 'ShuffleV2',
        'ResNet50'
    }
    assert set(CIFAR_ZOO_ARCHS) == expected
    assert {p.stem for p in MODEL_DIR.glob('*.py')} == expected
    assert set(ORIGINAL_PARAMS) == expected


@pytest.mark.parametrize('arch', sorted(PUBLISHED_PARAMS_M))
def test_param_count_matches_published_table(arch):
    model = build_zoo_model(arch)
    assert round(trainable_params(model) / 1e6, 2) == \
        PUBLISHED_PARAMS_M[arch]


@pytest.mark.parametrize('arch', CIFAR_ZOO_ARCHS)
def test_param_count_matches_original_definition(arch):
    assert count_params(original_keys(arch)) == ORIGINAL_PARAMS[arch]
    assert trainable_params(build_zoo_model(arch)) == ORIGINAL_PARAMS[arch]


@pytest.mark.parametrize('arch', CIFAR_ZOO_ARCHS)
def test_converted_original_keys_are_our_keys(arch):
    """The original key set, converted by the documented mapping, is our
    model's key set, shape by shape (the released checkpoints load
    strictly)."""
    original = original_keys(arch)
    converted = original_to_zoo_state_dict(original, arch)
    ours = {k: tuple(v.shape)
            for k, v in build_zoo_model(arch).state_dict().items()}
    assert set(converted) == set(ours)
    assert {k: tuple(v) for k, v in converted.items()} == ours
    head = ORIGINAL_HEAD_PREFIX[arch]
    assert converted['head.fc.weight'] == original[head + 'weight']


@pytest.mark.parametrize('arch', [
    'resnet8x4', 'wrn_16_2', 'vgg8', 'MobileNetV2', 'ShuffleV1', 'ShuffleV2',
    'resnet20', 'wrn_40_1', 'ResNet50'
])
def test_same_logits_as_original(arch):
    sd = random_original_state_dict(arch)
    model = build_zoo_model(arch).eval()
    model.load_state_dict(original_to_zoo_state_dict(sd, arch), strict=True)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = model(x, mode='tensor')
        expected = original_forward(arch, sd, x)
    assert ours.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('arch', CIFAR_ZOO_ARCHS)
def test_forward_shapes(arch):
    model = build_zoo_model(arch).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32), mode='tensor')
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_vgg_skips_last_maxpool_on_32x32_only():
    from mmrankkd.models.backbones import CIFARVGG
    vgg = CIFARVGG(depth=8, out_indices=(3, 4)).eval()
    with torch.no_grad():
        f3, f4 = vgg(torch.randn(1, 3, 32, 32))
        assert f3.shape[-2:] == f4.shape[-2:] == (4, 4)
        f3, f4 = vgg(torch.randn(1, 3, 64, 64))
        assert f3.shape[-2:] == (8, 8) and f4.shape[-2:] == (4, 4)


def test_mobilenetv2_stride2_stem_and_unscaled_last_conv():
    from mmrankkd.models.backbones import CIFARMobileNetV2
    net = CIFARMobileNetV2(out_indices=range(8)).eval()
    with torch.no_grad():
        outs = net(torch.randn(1, 3, 32, 32))
    assert [o.shape[-1] for o in outs] == [16, 16, 8, 4, 4, 2, 2, 2]
    assert [o.shape[1] for o in outs] == [8, 12, 16, 32, 48, 80, 160, 1280]


def test_shufflenets_have_1x1_stems():
    for arch in ('ShuffleV1', 'ShuffleV2'):
        sd = build_zoo_model(arch).state_dict()
        assert sd['backbone.conv1.weight'].shape == (24, 3, 1, 1)


def test_zoo_init_follows_the_originals():
    """Kaiming-normal (fan-out) convs and unit norms for the ResNet, WRN,
    VGG and MobileNetV2 families; PyTorch defaults for ShuffleNets."""
    torch.manual_seed(0)
    model = build_zoo_model('resnet8x4')
    model.init_weights()
    w = model.backbone.layer3[0].conv1.weight
    std_expected = math.sqrt(2 / (w.shape[0] * 9))
    assert abs(w.std().item() / std_expected - 1) < 0.05
    assert (model.backbone.bn1.weight == 1).all()
    vgg = build_zoo_model('vgg8')
    vgg.init_weights()
    assert (vgg.backbone.block0[0].bias == 0).all()


@pytest.mark.parametrize('path', sorted(MODEL_DIR.glob('*.py')),
                         ids=lambda p: p.stem)
def test_model_config_builds_with_cifar_normalisation(path):
    """Every model config builds through mmpretrain's MODELS after
    `import mmrankkd` and normalises as the released teachers were
    trained: (x / 255 - mean) / std on RGB pixels."""
    from mmengine.config import Config
    from mmpretrain.models import ImageClassifier
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(str(path))
    assert cfg.model.head.num_classes == NUM_CLASSES
    pre = cfg.model.data_preprocessor
    assert pre.to_rgb is False  # mmpretrain's CIFAR100 yields RGB already
    for got, want in zip(pre.mean, CIFAR_MEAN):
        assert got == pytest.approx(want * 255, abs=1e-9)
    for got, want in zip(pre.std, CIFAR_STD):
        assert got == pytest.approx(want * 255, abs=1e-9)
    model = MODELS.build(cfg.model)
    assert isinstance(model, ImageClassifier)
    assert type(model.backbone).__module__.startswith(
        'mmrankkd.models.backbones')
