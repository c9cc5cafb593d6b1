"""tools/fetch_cifar_teachers.py on a local archive in the released layout
(mdistiller's cifar_teachers.tar: cifar_teachers/<arch>_vanilla/
ckpt_epoch_240.pth, each file as tests/test_convert_crd.py writes the
released teachers): conversion to the configs' paths, the sha256 checks
(--sha256, the manifest of the first fetch), the offline error and its
manual steps."""
import hashlib
import importlib.util
import json
import tarfile

import pytest
import torch

from conftest import REPO
from test_convert_crd import original_state_dict, write_released

_spec = importlib.util.spec_from_file_location(
    'fetch_cifar_teachers', REPO / 'tools' / 'fetch_cifar_teachers.py')
fetch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fetch)
convert = fetch._converter()


def make_archive(path, archs, seed=0, extra=()):
    """A tar in the released layout holding ``archs`` with random weights
    (``extra``: (name, bytes) members added as they are)."""
    folder = path.parent / f'{path.stem}_src'
    with tarfile.open(path, 'w') as tar:
        for arch in archs:
            d = folder / 'cifar_teachers' / f'{arch}_vanilla'
            d.mkdir(parents=True, exist_ok=True)
            write_released(d / 'ckpt_epoch_240.pth',
                           original_state_dict(arch, seed), counters=False)
            tar.add(d / 'ckpt_epoch_240.pth',
                    f'cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth')
        for name, data in extra:
            f = folder / 'extra'
            f.write_bytes(data)
            tar.add(f, name)
    return str(path)


def _sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.fixture(scope='module')
def archive(tmp_path_factory):
    d = tmp_path_factory.mktemp('release')
    return make_archive(d / 'cifar_teachers.tar', ['resnet56', 'wrn_40_2'],
                        extra=[('cifar_teachers/README', b'x')])


def test_local_archive_gives_the_configs_teachers(tmp_path, archive):
    out = tmp_path / 'checkpoints' / 'crd'
    manifest = fetch.fetch(str(out), archive, archs=['resnet56',
                                                     'wrn_40_2'])
    assert manifest['archive_sha256'] == _sha(archive)
    with tarfile.open(archive) as tar:
        for arch in ('resnet56', 'wrn_40_2'):
            dst = out / f'{arch}_vanilla.pth'
            # = converting the released file itself with the converter.
            member = f'cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth'
            src = tmp_path / arch / f'{arch}_vanilla' / 'ckpt_epoch_240.pth'
            src.parent.mkdir(parents=True)
            src.write_bytes(tar.extractfile(member).read())
            convert.convert(str(src), str(tmp_path / f'{arch}.pth'), arch)
            ours = torch.load(dst, weights_only=True)
            ref = torch.load(tmp_path / f'{arch}.pth', weights_only=True)
            assert ours['state_dict'].keys() == ref['state_dict'].keys()
            for k, v in ref['state_dict'].items():
                assert torch.equal(ours['state_dict'][k], v), k
            assert ours['meta']['source'] == (f'{arch}_vanilla/'
                                              'ckpt_epoch_240.pth')
            entry = manifest['teachers'][arch]
            assert entry['member'] == member
            assert entry['released_sha256'] == _sha(src)
            assert entry['converted_sha256'] == _sha(dst)
    on_disk = json.loads((out / fetch.MANIFEST).read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    # The config's path: a resnet56 pair's base expects exactly this file.
    base = (REPO / 'configs' / 'cifar100' / '_base_' /
            'distill_resnet56_resnet20_1xb64_cifar100.py').read_text()
    assert "teacher_ckpt='checkpoints/crd/resnet56_vanilla.pth'" in base

    # Present and as recorded: nothing to do; --verify passes; a changed
    # file fails --verify with both hashes.
    logged = []
    fetch.fetch(str(out), archs=['resnet56', 'wrn_40_2'], log=logged.append)
    assert 'nothing to do' in logged[-1]
    assert fetch.main(['--verify', '--out', str(out), '--archs',
                       'resnet56', 'wrn_40_2']) == 0
    with open(out / 'resnet56_vanilla.pth', 'ab') as f:
        f.write(b'\0')
    with pytest.raises(fetch.FetchError, match='not the recorded'):
        fetch.verify(str(out), ['resnet56'])


def test_sha256_checks(tmp_path, archive):
    out = tmp_path / 'crd'
    wrong = '0' * 64
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch(str(out), archive, sha256=wrong, archs=['resnet56'])
    assert _sha(archive) in str(e.value) and wrong in str(e.value)
    assert not (out / 'resnet56_vanilla.pth').exists()
    fetch.fetch(str(out), archive, sha256=_sha(archive).upper(),
                archs=['resnet56'])
    # A different archive later (another release, a tampered copy): the
    # hash recorded by the first fetch stops it.
    other = make_archive(tmp_path / 'other.tar', ['resnet56'], seed=1)
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch(str(out), other, archs=['resnet56'], force=True)
    assert 'recorded' in str(e.value) and _sha(archive) in str(e.value)


def test_missing_teacher_names_what_the_archive_has(tmp_path, archive):
    with pytest.raises(fetch.FetchError) as e:
        fetch.fetch(str(tmp_path / 'crd'), archive, archs=['resnet56',
                                                           'vgg13'])
    msg = str(e.value)
    assert 'vgg13_vanilla/ckpt_epoch_240.pth' in msg
    assert 'it has: resnet56, wrn_40_2' in msg
    bad = tmp_path / 'bad.tar'
    bad.write_bytes(b'not a tar')
    with pytest.raises(fetch.FetchError, match='not a readable tar'):
        fetch.fetch(str(tmp_path / 'crd'), str(bad), archs=['resnet56'])


def test_offline_error_gives_the_manual_steps(tmp_path, capsys):
    """No route to the release (a closed local port here): exit 1, the
    address and the --archive steps, nothing written."""
    out = tmp_path / 'crd'
    assert fetch.main(['--out', str(out), '--url',
                       'http://127.0.0.1:9/cifar_teachers.tar']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: cannot download '
                          'http://127.0.0.1:9/cifar_teachers.tar')
    assert fetch.URL in err and '--archive /path/to/cifar_teachers.tar' in err
    assert not list(out.glob('*.pth'))
    assert not list(out.glob('download/*'))  # no partial download left
    assert fetch.URL == ('https://github.com/megvii-research/mdistiller/'
                         'releases/download/checkpoints/cifar_teachers.tar')
