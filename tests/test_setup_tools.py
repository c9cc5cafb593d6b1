"""The set-up's own tools: the PCH compiler wrapper and the failure path."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / 'tools' / 'mmcv_build' / 'pch_cxx.sh'


@pytest.mark.skipif(shutil.which('g++') is None, reason='needs g++')
def test_pch_wrapper_builds_and_uses_the_precompiled_header(tmp_path):
    header = tmp_path / 'pytorch_cpp_helper.hpp'
    header.write_text('#ifndef H\n#define H\n#include <vector>\n'
                      'inline int helper() { return 41; }\n#endif\n')
    # A unit that does not include the header first still gets it.
    src = tmp_path / 'unit.cpp'
    src.write_text('#include <cstdio>\n#include "pytorch_cpp_helper.hpp"\n'
                   'int main() { std::printf("%d", helper() + 1); }\n')
    env = dict(os.environ, MMCV_PCH_HEADER=str(header))
    obj = tmp_path / 'unit.o'
    subprocess.run([str(WRAPPER), '-MMD', '-MF', str(obj) + '.d', '-O1',
                    f'-I{tmp_path}', '-c', str(src), '-o', str(obj),
                    '-std=c++17'], env=env, check=True, capture_output=True)
    gch = tmp_path / 'pytorch_cpp_helper.hpp.gch'
    assert gch.stat().st_size > 0
    # The next unit loads it: gcc's -H marks a used PCH with '!'.
    again = subprocess.run([str(WRAPPER), '-H', '-O1', f'-I{tmp_path}', '-c',
                            str(src), '-o', str(obj), '-std=c++17'],
                           env=env, check=True, capture_output=True,
                           text=True)
    assert f'! {gch}' in again.stderr.splitlines()
    # Links pass straight through to the real compiler.
    exe = tmp_path / 'unit'
    subprocess.run([str(WRAPPER), str(obj), '-o', str(exe)], env=env,
                   check=True)
    assert subprocess.run([str(exe)], capture_output=True,
                          text=True).stdout == '42'


def test_setup_failure_names_the_step_and_leaves_no_ready_marker(tmp_path):
    venv = tmp_path / 'venv'
    venv.mkdir()
    (venv / '.mmrankkd-ready').write_text('stale')
    result = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'setup_env.sh')],
        env=dict(os.environ, MMRANKKD_VENV=str(venv),
                 PYTHON=str(tmp_path / 'no-such-python')),
        capture_output=True, text=True)
    assert result.returncode != 0
    assert 'FAILED while: checking Python' in result.stderr
    assert 'what to do:' in result.stderr
    assert not (venv / '.mmrankkd-ready').exists()


# ------------------------------------------------ the mmcv source download
def _build_mmcv():
    """tools/mmcv_build/build_mmcv.py as a module (it is a script)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'build_mmcv', ROOT / 'tools' / 'mmcv_build' / 'build_mmcv.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_sdist(folder, marker):
    """A source archive named like mmcv 2.1.0's whose setup.py, if pip ever
    runs it, appends a line to ``marker``."""
    import tarfile
    src = folder / 'src' / 'mmcv-2.1.0'
    src.mkdir(parents=True)
    (src / 'PKG-INFO').write_text(
        'Metadata-Version: 1.0\nName: mmcv\nVersion: 2.1.0\n')
    (src / 'setup.py').write_text(
        f'open({str(marker)!r}, "a").write("ran\\n")\n'
        'from setuptools import setup\n'
        'setup(name="mmcv", version="2.1.0")\n')
    links = folder / 'wheelhouse'
    links.mkdir()
    archive = links / 'mmcv-2.1.0.tar.gz'
    with tarfile.open(archive, 'w:gz') as tar:
        tar.add(src, arcname='mmcv-2.1.0')
    return archive


def _sha256(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_mmcv_source_comes_through_pip_without_an_index_address():
    bm = _build_mmcv()
    cmd = bm.pip_download_cmd('2.1.0', Path('/dest'), Path('/req.txt'))
    assert cmd[1:4] == ['-m', 'pip', 'download']
    for flag in ('--no-deps', '--no-build-isolation', '--require-hashes'):
        assert flag in cmd
    assert cmd[cmd.index('--no-binary') + 1] == 'mmcv'
    assert not any('://' in arg for arg in cmd)
    # No package index address anywhere in the set-up: pip's own
    # configuration (mirror, proxy, wheelhouse) decides where files come from.
    for path in [ROOT / 'tools' / 'setup_env.sh', ROOT / 'setup.py',
                 *(ROOT / 'tools' / 'mmcv_build').iterdir(),
                 *(ROOT / 'requirements').iterdir()]:
        if path.is_file():
            text = path.read_text()
            assert '://' not in text and 'pythonhosted' not in text, path


def test_local_mmcv_source_with_a_wrong_hash_is_refused(tmp_path, monkeypatch,
                                                       capsys):
    bm = _build_mmcv()
    fake = tmp_path / 'mmcv-2.1.0.tar.gz'
    fake.write_bytes(b'not the mmcv source')
    monkeypatch.setenv('MMRANKKD_MMCV_SDIST', str(fake))
    with pytest.raises(SystemExit):
        bm.fetch_sdist('2.1.0', tmp_path / 'cache')
    err = capsys.readouterr().err
    assert f'expected {bm.SDIST_SHA256["2.1.0"]}' in err
    assert f'actual {_sha256(fake)}' in err
    assert 'what to do:' in err
    assert fake.is_file()  # the user's file is left alone
    assert not (tmp_path / 'cache').exists()  # and nothing was downloaded


def test_local_mmcv_source_folder_is_used_when_its_hash_matches(
        tmp_path, monkeypatch):
    bm = _build_mmcv()
    archive = _fake_sdist(tmp_path, tmp_path / 'ran')
    monkeypatch.setitem(bm.SDIST_SHA256, '2.1.0', _sha256(archive))
    monkeypatch.setenv('MMRANKKD_MMCV_SDIST', str(archive.parent))
    assert bm.fetch_sdist('2.1.0', tmp_path / 'cache') == archive


def test_pip_download_honours_pip_find_links_and_checks_the_hash(
        tmp_path, monkeypatch, capsys):
    """Offline, from a wheelhouse named by pip's own PIP_FIND_LINKS: a
    matching archive is downloaded into the cache; a mismatching one is
    refused by pip before its setup.py runs, naming both hashes."""
    bm = _build_mmcv()
    if bm.missing_build_tools():
        pytest.skip(f'needs {bm.missing_build_tools()} (the set-up installs '
                    'them)')
    marker = tmp_path / 'ran'
    archive = _fake_sdist(tmp_path, marker)
    monkeypatch.delenv('MMRANKKD_MMCV_SDIST', raising=False)
    monkeypatch.setenv('PIP_NO_INDEX', '1')
    monkeypatch.setenv('PIP_FIND_LINKS', str(archive.parent))
    monkeypatch.delenv('PIP_INDEX_URL', raising=False)

    with pytest.raises(SystemExit):
        bm.fetch_sdist('2.1.0', tmp_path / 'cache')
    err = capsys.readouterr().err
    assert bm.SDIST_SHA256['2.1.0'] in err and _sha256(archive) in err
    assert not marker.exists()
    assert not (tmp_path / 'cache' / 'mmcv-2.1.0.tar.gz').exists()

    monkeypatch.setitem(bm.SDIST_SHA256, '2.1.0', _sha256(archive))
    got = bm.fetch_sdist('2.1.0', tmp_path / 'cache')
    assert got == tmp_path / 'cache' / 'mmcv-2.1.0.tar.gz'
    assert got.read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in got.parent.iterdir()) == [got.name]
    # A second call reuses the cached, verified archive.
    marker.unlink()
    assert bm.fetch_sdist('2.1.0', tmp_path / 'cache') == got
    assert not marker.exists()
