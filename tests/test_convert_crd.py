"""tools/convert_crd_checkpoint.py on files in the layout of the released
CRD/RepDistiller CIFAR-100 teachers.

The released ``<arch>_vanilla/ckpt_epoch_240.pth`` hold
``{'epoch': 240, 'model': state_dict, 'accuracy': 0-dim CUDA tensor,
'optimizer': SGD state with a numpy.float64 lr}``, written by an old torch
in the legacy (pre-zip) format, maybe without ``num_batches_tracked``.
:func:`write_released` writes such files without a GPU: legacy
serialization, CUDA location tags and storage types, numpy-1.x global
names, pickle protocol 2.
"""
import importlib.util
import os
import pickle
import sys
import types
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import PY, REPO, run_tool
from test_cifar_zoo import MODEL_DIR, original_forward

import mmrankkd  # noqa: F401
from mmrankkd.engine.safe_load import UnsafeCheckpointError
from mmrankkd.models.backbones import zoo_to_original_state_dict

TOOL = REPO / 'tools' / 'convert_crd_checkpoint.py'
MEAN = torch.tensor([0.5071, 0.4867, 0.4408]).view(1, 3, 1, 1)
STD = torch.tensor([0.2675, 0.2565, 0.2761]).view(1, 3, 1, 1)


def _load_tool():
    spec = importlib.util.spec_from_file_location('convert_crd_checkpoint',
                                                  TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()

try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray


class _LegacyPickler(pickle._Pickler):
    """Writes globals under the names a 2019 torch/numpy-1 pickle has:
    ``numpy.core.multiarray.scalar`` and ``torch.cuda.<X>Storage``."""

    def save_global(self, obj, name=None):
        renames = {id(_multiarray.scalar): ('numpy.core.multiarray',
                                            'scalar')}
        for storage in (torch.FloatStorage, torch.LongStorage):
            renames[id(storage)] = ('torch.cuda', storage.__name__)
        if id(obj) not in renames:
            return super().save_global(obj, name)
        module, qualname = renames[id(obj)]
        self.write(pickle.GLOBAL + f'{module}\n{qualname}\n'.encode())
        self.memoize(obj)


_LEGACY_PICKLE = types.SimpleNamespace(
    Pickler=_LegacyPickler, dump=pickle.dump, __name__='legacy_pickle')


def write_released(path, original_sd, counters=True):
    """Write ``original_sd`` as a released CRD teacher file."""
    if not counters:
        original_sd = {k: v for k, v in original_sd.items()
                       if not k.endswith('num_batches_tracked')}
    params = [k for k in original_sd if 'running' not in k
              and 'num_batches' not in k]
    lr = 0.05 * 0.1**np.sum(240 > np.asarray([150, 180, 210]))
    assert isinstance(lr, np.float64)
    checkpoint = {
        'epoch': 240,
        'model': original_sd,
        'accuracy': torch.tensor(75.61),
        'optimizer': {
            'state': {0: {'momentum_buffer':
                          torch.zeros_like(original_sd[params[0]])}},
            'param_groups': [{
                'lr': lr, 'momentum': 0.9, 'dampening': 0,
                'weight_decay': 5e-4, 'nesterov': False,
                'params': list(range(len(params)))
            }],
        },
    }
    with mock.patch('torch.serialization.location_tag',
                    lambda storage: 'cuda:0'):
        torch.save(checkpoint, str(path), pickle_module=_LEGACY_PICKLE,
                   pickle_protocol=2, _use_new_zipfile_serialization=False)
    return str(path)


def build(arch):
    return tool.build_zoo_model(arch, str(MODEL_DIR / f'{arch}.py'))


def random_weights(model, seed=0):
    """Random parameters and norm statistics (running_var > 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.dtype != torch.float32:
                continue
            if name.endswith('running_var'):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.dim() == 1:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1 +
                        (1.0 if name.endswith('weight') else 0.0))
            elif t.dim() > 1:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) *
                        (2.0 / fan_in)**0.5)
    return model


def original_state_dict(arch, seed=0):
    """A model of ``arch`` with random weights, under the original keys."""
    model = random_weights(build(arch), seed)
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith('data_preprocessor.')}
    return zoo_to_original_state_dict(state, arch)


def raw_images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), generator=g,
                         dtype=torch.uint8)


def test_tool_converts_what_torch_load_refuses(tmp_path):
    """A released file (legacy format, CUDA storages, a numpy-1.x scalar in
    the optimizer state) does not load with torch.load(weights_only=True)
    on a CPU machine; the tool turns it into a zip-format file that does,
    with CPU tensors equal, bit for bit, to the released weights."""
    original = original_state_dict('resnet8')
    src = write_released(tmp_path / 'ckpt_epoch_240.pth', original, False)
    with pytest.raises(Exception):
        torch.load(src, weights_only=True)
    dst = tmp_path / 'out.pth'
    tool.convert(src, str(dst), 'resnet8')
    assert dst.read_bytes()[:2] == b'PK'
    state = torch.load(str(dst), weights_only=True)['state_dict']
    assert {t.device.type for t in state.values()} == {'cpu'}
    back = zoo_to_original_state_dict(
        {k: v for k, v in state.items()
         if not k.startswith('data_preprocessor.')}, 'resnet8')
    assert set(original) <= set(back)
    for key, value in original.items():
        assert torch.equal(back[key], value), key


@pytest.mark.parametrize('arch,counters', [('resnet56', True),
                                           ('wrn_40_2', False),
                                           ('vgg13', False)])
def test_converted_teacher_gives_original_logits(tmp_path, arch, counters):
    """Released teacher -> convert -> fresh model loaded strictly: with its
    config's data_preprocessor on raw uint8 images, the logits of the
    original network on (x / 255 - mean) / std."""
    from mmengine.runner import load_checkpoint
    original = original_state_dict(arch)
    folder = tmp_path / f'{arch}_vanilla'
    folder.mkdir()
    src = write_released(folder / 'ckpt_epoch_240.pth', original, counters)
    dst = str(tmp_path / 'converted.pth')
    res = tool.convert(src, dst, arch)
    num_norms = sum(k.endswith('running_var') for k in original)
    assert res['filled_counters'] == (0 if counters else num_norms)
    assert res['epoch'] == 240
    assert res['accuracy'] == pytest.approx(75.61)
    assert res['source'] == f'{arch}_vanilla/ckpt_epoch_240.pth'

    converted = torch.load(dst, map_location='cpu', weights_only=True)
    assert set(converted) == {'state_dict', 'meta'}
    assert converted['meta']['arch'] == arch
    model = build(arch).eval()
    load_checkpoint(model, dst, map_location='cpu', strict=True)

    raw = raw_images()
    with torch.no_grad():
        data = model.data_preprocessor({'inputs': raw, 'data_samples': None})
        ours = model(data['inputs'], mode='tensor')
        manual = (raw.float() / 255 - MEAN) / STD
        expected = original_forward(arch, original, manual)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def _teacher_loader():
    """The function behind the distiller's `teacher_ckpt` (strict load with
    key-listing errors)."""
    try:
        from mmrankkd.models.distillers.checkpoint import load_teacher_checkpoint
    except ImportError:
        from mmrankkd.models.distillers.logit_distiller import \
            load_teacher_checkpoint
    return load_teacher_checkpoint


def test_distiller_teacher_loader_accepts_the_converted_teacher(tmp_path):
    """The converted file is a valid `teacher_ckpt` for its config."""
    original = original_state_dict('resnet56')
    src = write_released(tmp_path / 'ckpt_epoch_240.pth', original,
                         counters=False)
    dst = str(tmp_path / 'resnet56.pth')
    tool.convert(src, dst, 'resnet56')
    teacher = build('resnet56').eval()
    meta = _teacher_loader()(teacher, dst)
    assert meta['arch'] == 'resnet56'
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            teacher(x, mode='tensor'),
            original_forward('resnet56', original, x), rtol=1e-4, atol=1e-4)


def test_accepts_mdistiller_students_and_bare_state_dicts(tmp_path):
    original = original_state_dict('ShuffleV1')
    layouts = {
        'mdistiller': {'model': original},
        'bare': original,
        'dataparallel': {'model': {'module.' + k: v
                                   for k, v in original.items()}},
    }
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = original_forward('ShuffleV1', original, x)
    for name, checkpoint in layouts.items():
        src = str(tmp_path / f'{name}.pth')
        torch.save(checkpoint, src)
        dst = str(tmp_path / f'{name}_converted.pth')
        tool.convert(src, dst, 'ShuffleV1')
        model = build('ShuffleV1').eval()
        model.load_state_dict(
            torch.load(dst, weights_only=True)['state_dict'], strict=True)
        with torch.no_grad():
            torch.testing.assert_close(model(x, mode='tensor'), expected,
                                       rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('actual,claimed,expect', [
    ('resnet56', 'resnet20', ['unexpected keys', 'layer1.3.']),
    ('resnet32x4', 'resnet32', ['shape mismatches', 'conv1.weight']),
    ('wrn_16_2', 'vgg8', ['missing keys', 'block0.0.weight',
                          'unexpected keys', 'block1.layer.0.bn1.weight']),
])
def test_wrong_arch_names_the_keys_and_the_fix(tmp_path, actual, claimed,
                                               expect):
    src = write_released(tmp_path / 'ckpt_epoch_240.pth',
                         original_state_dict(actual), counters=False)
    with pytest.raises(tool.ArchMismatchError) as e:
        tool.convert(src, str(tmp_path / 'out.pth'), claimed)
    msg = str(e.value)
    assert f'is not a {claimed} checkpoint' in msg
    for text in expect:
        assert text in msg
    assert f'Fix: pass --arch {actual}' in msg
    assert not (tmp_path / 'out.pth').exists()


class _RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


@pytest.mark.parametrize('legacy', [False, True])
def test_pickle_that_runs_code_is_refused(tmp_path, legacy):
    marker = tmp_path / 'pwned'
    src = str(tmp_path / 'evil.pth')
    torch.save({'model': original_state_dict('resnet8'),
                'extra': _RunsCode(marker)}, src,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeCheckpointError, match='system'):
        tool.convert(src, str(tmp_path / 'out.pth'), 'resnet8')
    assert not marker.exists()
    assert not (tmp_path / 'out.pth').exists()


def test_cli(tmp_path, capsys):
    src = write_released(tmp_path / 'ckpt_epoch_240.pth',
                         original_state_dict('resnet8'), counters=False)
    dst = tmp_path / 'out' / 'resnet8.pth'
    proc = run_tool([PY, str(TOOL), src, str(dst), '--arch', 'resnet8'])
    assert 'resnet8:' in proc.stdout and 'epoch 240' in proc.stdout
    assert 'configs/cifar100/_base_/models/resnet8.py' in proc.stdout
    state = torch.load(str(dst), weights_only=True)['state_dict']
    build('resnet8').load_state_dict(state, strict=True)

    # A wrong --arch: exit status 1 and the message, no traceback.
    assert tool.main([src, str(tmp_path / 'x.pth'), '--arch',
                      'resnet14']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'Fix: pass --arch resnet8' in err
    assert not (tmp_path / 'x.pth').exists()


if __name__ == '__main__':
    sys.exit(pytest.main([__file__, '-q']))
