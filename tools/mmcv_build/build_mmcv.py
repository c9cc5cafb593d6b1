"""Build (or fetch from the local cache) a full mmcv wheel with compiled ops.

PyPI ships mmcv 2.1.0 only as a source distribution, and building it against a
current torch needs three fixes: setuptools < 80 (its setup.py imports
pkg_resources), no build isolation (it imports torch at build time) and C++20
instead of the C++14/17 its setup.py asks for (torch's headers require C++20).

Speed: torch's headers dominate the compile time of every unit, so units are
compiled through ``pch_cxx.sh``, which force-includes a gcc precompiled header
of ``pytorch_cpp_helper.hpp``; debug info is dropped (``-g0``); ninja runs one
job per core. CUDA kernels are compiled only with ``--cuda`` (the losses, PSPNet
and the classifiers use none of mmcv's ops).

The source comes through pip (``pip download mmcv==2.1.0 --no-deps --no-binary
mmcv``), so the user's pip configuration applies (mirror, proxy,
``PIP_FIND_LINKS`` with an offline wheelhouse), or from a local archive
(``--sdist`` or ``$MMRANKKD_MMCV_SDIST``); its sha256 is checked either way.

The wheel is cached outside the repository under a key of mmcv, torch, Python,
platform and ops variant, so the next set-up on this machine takes seconds.

Usage (with the Python of the target environment)::

    python tools/mmcv_build/build_mmcv.py [--cache-dir DIR] [--sdist PATH]
        [--cuda]

Prints the path of the wheel on its last line of stdout.
"""
import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from pathlib import Path

# sha256 of the pinned source distributions (as published for `pip download
# mmcv==<version> --no-binary mmcv`).
SDIST_SHA256 = {
    '2.1.0':
    'd387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f',
}
#: A local mmcv source archive (or a folder holding mmcv-<version>.tar.gz)
#: used instead of downloading one.
SDIST_ENV = 'MMRANKKD_MMCV_SDIST'
HERE = Path(__file__).resolve().parent


def log(msg):
    print(f'[build_mmcv] {msg}', file=sys.stderr, flush=True)


def fail(msg, hint):
    log(f'FAILED: {msg}')
    log(f'what to do: {hint}')
    sys.exit(1)


def cache_key(mmcv_version, cuda):
    import torch
    py = f'cp{sys.version_info.major}{sys.version_info.minor}'
    plat = sysconfig.get_platform().replace('-', '_').replace('.', '_')
    variant = f'cuda{torch.version.cuda}' if cuda else 'cpu'
    return f'mmcv-{mmcv_version}_torch-{torch.__version__}_{py}_{plat}_{variant}'


def missing_build_tools():
    """What this Python lacks to run mmcv's setup.py without build
    isolation (``pip download`` runs its ``egg_info`` too): setuptools
    with ``pkg_resources`` (it imports it) and ``bdist_wheel``."""
    import importlib.util
    missing = []
    if importlib.util.find_spec('pkg_resources') is None:
        missing.append('setuptools<80 (with pkg_resources)')
    if importlib.util.find_spec('wheel') is None:
        try:
            has_bdist_wheel = importlib.util.find_spec(
                'setuptools.command.bdist_wheel') is not None
        except ImportError:
            has_bdist_wheel = False
        if not has_bdist_wheel:
            missing.append('wheel')
    return missing


def sdist_name(version):
    return f'mmcv-{version}.tar.gz'


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path, version):
    """None if ``path`` is the pinned mmcv ``version`` source, else a message
    naming the expected and the actual sha256."""
    expected, actual = SDIST_SHA256[version], sha256_of(path)
    if actual != expected:
        return (f'sha256 mismatch for {path}: expected {expected} (mmcv '
                f'{version} as published), actual {actual}')
    return None


def pip_download_cmd(version, dest, requirements):
    """The pip command that downloads the mmcv source archive into ``dest``.

    It goes through pip, so the user's pip configuration applies (index or
    mirror, proxy, certificates, ``PIP_FIND_LINKS`` / ``PIP_NO_INDEX`` for an
    offline wheelhouse). ``requirements`` is a file pinning
    ``mmcv==<version> --hash=sha256:...``: pip checks the archive's hash
    before it runs anything from it. pip still runs the archive's
    ``setup.py egg_info`` to read its metadata (``--no-deps`` does not skip
    that); ``--no-build-isolation`` runs it in this environment, which has
    the setuptools<80 and torch mmcv's setup.py imports, instead of an
    isolated one that would need its own downloads.
    """
    return [
        sys.executable, '-m', 'pip', 'download', '--disable-pip-version-check',
        '--no-deps', '--no-binary', 'mmcv', '--no-build-isolation',
        '--require-hashes', '-d',
        str(dest), '-r',
        str(requirements)
    ]


def download_sdist(version, dest_dir):
    """Downloads the mmcv ``version`` source archive into ``dest_dir`` with
    pip; returns its path."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix='mmcv-sdist-',
                                     dir=dest_dir) as tmp:
        req = Path(tmp) / 'mmcv-sdist.txt'
        req.write_text(f'mmcv=={version} '
                       f'--hash=sha256:{SDIST_SHA256[version]}\n')
        cmd = pip_download_cmd(version, Path(tmp) / 'dl', req)
        log(f'downloading the mmcv {version} source with pip: '
            f'{" ".join(cmd[1:])}')
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        got = Path(tmp) / 'dl' / sdist_name(version)
        if proc.returncode != 0 or not got.is_file():
            for line in proc.stdout.splitlines()[-25:]:
                print('    ' + line, file=sys.stderr)
            fail(f'pip could not download the mmcv {version} source '
                 f'(exit {proc.returncode})',
                 'check access to your package index (pip\'s own settings '
                 'apply: PIP_INDEX_URL, proxy, PIP_FIND_LINKS), or download '
                 f'{sdist_name(version)} yourself and set '
                 f'{SDIST_ENV}=/path/to/{sdist_name(version)}')
        path = dest_dir / sdist_name(version)
        os.replace(got, path)
    return path


def fetch_sdist(version, cache_dir, local=None):
    """The verified mmcv ``version`` source archive.

    ``local`` (or ``$MMRANKKD_MMCV_SDIST``): a source archive, or a folder
    holding ``mmcv-<version>.tar.gz``, used instead of a download. Otherwise
    the archive cached in ``cache_dir`` by an earlier set-up, or a pip
    download into it. Its sha256 must match the pinned one in every case.
    """
    if version not in SDIST_SHA256:
        fail(f'no pinned source for mmcv {version}',
             f'use one of {sorted(SDIST_SHA256)}')
    local = local or os.environ.get(SDIST_ENV)
    if local:
        path = Path(local).expanduser()
        if path.is_dir():
            path = path / sdist_name(version)
        if not path.is_file():
            fail(f'{path} (from --sdist / {SDIST_ENV}) does not exist',
                 f'point {SDIST_ENV} at {sdist_name(version)} or the folder '
                 'holding it, or unset it to download the source with pip')
        bad = check_sha256(path, version)
        if bad:
            fail(bad, f'use the published {sdist_name(version)} (pip '
                 f'download mmcv=={version} --no-deps --no-binary mmcv) or '
                 f'unset {SDIST_ENV}')
        log(f'using the mmcv source {path}')
        return path
    path = Path(cache_dir) / sdist_name(version)
    if path.is_file() and check_sha256(path, version) is None:
        log(f'using the cached mmcv source {path}')
        return path
    path = download_sdist(version, cache_dir)
    bad = check_sha256(path, version)
    if bad:
        path.unlink()
        fail(bad, 'check what your package index or PIP_FIND_LINKS serves '
             f'as {sdist_name(version)}, then run the set-up again')
    return path


def patch_setup_py(src):
    setup_py = src / 'setup.py'
    text = setup_py.read_text()
    patched = re.sub(r'-std=c\+\+1[47]', '-std=c++20', text)
    if patched == text:
        fail('found no -std=c++14/17 flag to raise in mmcv setup.py',
             'this mmcv version is not supported by build_mmcv.py')
    setup_py.write_text(patched)


def release_cflags():
    """Python's own compile flags with debug info dropped.

    setuptools >= 72 replaces (rather than extends) Python's CFLAGS with
    $CFLAGS, so the optimisation flags are restated here; -g0 alone would
    compile at -O0 without -DNDEBUG. A user's $CFLAGS still comes last.
    """
    flags = [f for f in (sysconfig.get_config_var('CFLAGS') or '').split()
             if not f.startswith('-g')]
    return ' '.join(flags + ['-g0', os.environ.get('CFLAGS', '')]).strip()


def build(src, out_dir, cuda, jobs, log_path):
    header = src / 'mmcv/ops/csrc/common/pytorch_cpp_helper.hpp'
    if not header.exists():
        fail(f'{header} is missing', 'this mmcv version is not supported')
    env = dict(os.environ)
    env.update(
        MMCV_WITH_OPS='1',
        MAX_JOBS=str(jobs),
        CXX=str(HERE / 'pch_cxx.sh'),
        MMCV_REAL_CXX=os.environ.get('CXX', 'g++'),
        MMCV_PCH_HEADER=str(header),
        CFLAGS=release_cflags(),
        PIP_NO_BUILD_ISOLATION='1')
    if cuda:
        env['FORCE_CUDA'] = '1'
    else:
        # mmcv compiles CUDA kernels whenever torch sees a GPU; hide it.
        env['CUDA_VISIBLE_DEVICES'] = ''
        env['FORCE_CUDA'] = '0'
    cmd = [sys.executable, '-m', 'pip', 'wheel', '-v', '--no-deps',
           '--no-build-isolation', '-w', str(out_dir), str(src)]
    log(f'compiling mmcv ops with {jobs} jobs ({"CUDA+CPU" if cuda else "CPU"}'
        f' kernels); full log: {log_path}')
    start = time.time()
    progress = re.compile(r'^\s*\[(\d+)/(\d+)\]')
    last_shown = -1
    with open(log_path, 'w') as logf:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                cwd=src)
        for line in proc.stdout:
            logf.write(line)
            m = progress.match(line)
            if m:
                done, total = int(m.group(1)), int(m.group(2))
                # About ten progress lines per build.
                if done == total or done * 10 // total > last_shown:
                    last_shown = done * 10 // total
                    log(f'compiled {done}/{total} units '
                        f'({time.time() - start:.0f} s)')
        rc = proc.wait()
    if rc != 0:
        tail = Path(log_path).read_text().splitlines()[-25:]
        log('last lines of the build log:')
        for line in tail:
            print('    ' + line, file=sys.stderr)
        fail(f'mmcv build exited with {rc}',
             f'read {log_path}; the usual causes are a missing C++ compiler '
             '(install g++) or too little memory (set MAX_JOBS=1)')
    log(f'built in {time.time() - start:.0f} s')
    wheels = list(Path(out_dir).glob('mmcv-*.whl'))
    if len(wheels) != 1:
        fail(f'expected one wheel in {out_dir}, found {wheels}',
             'report this as a bug')
    return wheels[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--version', default='2.1.0')
    parser.add_argument(
        '--cache-dir',
        default=os.environ.get(
            'MMRANKKD_WHEEL_CACHE',
            os.path.join(os.path.expanduser('~'), '.cache', 'mmrankkd',
                         'wheels')))
    parser.add_argument(
        '--sdist',
        default=os.environ.get(SDIST_ENV),
        help=f'use this mmcv source archive (or a folder holding it; '
        f'default: ${SDIST_ENV}, else a pip download); its sha256 is checked')
    parser.add_argument('--cuda', action='store_true',
                        help='also compile the CUDA kernels (slow)')
    parser.add_argument('--jobs', type=int, default=os.cpu_count() or 1)
    parser.add_argument('--rebuild', action='store_true',
                        help='ignore a cached wheel')
    args = parser.parse_args()

    try:
        import torch  # noqa: F401
    except ImportError:
        fail('torch is not importable by this Python',
             'install torch first (the set-up script does this)')
    missing = missing_build_tools()
    if missing:
        fail(f'this Python lacks {", ".join(missing)}, which reading and '
             'building the mmcv source need',
             f'{sys.executable} -m pip install ninja "setuptools<80" wheel '
             '(the set-up script does this)')

    key = cache_key(args.version, args.cuda)
    key_dir = Path(args.cache_dir) / key
    cached = sorted(key_dir.glob('mmcv-*.whl'))
    if cached and not args.rebuild:
        log(f'using cached wheel {cached[0]}')
        print(cached[0])
        return
    key_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix='mmcv-build-') as tmp:
        tmp = Path(tmp)
        sdist = fetch_sdist(args.version, Path(args.cache_dir), args.sdist)
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter='data')
        src = next(p for p in tmp.iterdir() if p.is_dir())
        patch_setup_py(src)
        wheel = build(src, tmp / 'dist', args.cuda, args.jobs,
                      key_dir / 'build.log')
        # Move into place last, so an interrupted build leaves no wheel behind.
        final = key_dir / wheel.name
        shutil.copy2(wheel, key_dir / (wheel.name + '.part'))
        os.replace(key_dir / (wheel.name + '.part'), final)
    log(f'cached {final} ({final.stat().st_size / 2**20:.1f} MiB, '
        f'{platform.machine()})')
    print(final)


if __name__ == '__main__':
    main()
