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

The wheel is cached outside the repository under a key of mmcv, torch, Python,
platform and ops variant, so the next set-up on this machine takes seconds.

Usage (with the Python of the target environment)::

    python tools/mmcv_build/build_mmcv.py [--cache-dir DIR] [--cuda]

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
import urllib.request
from pathlib import Path

# Pinned source distributions: (url, sha256).
SDISTS = {
    '2.1.0': (
        'https://files.pythonhosted.org/packages/a7/19/'
        'f97f0fd4d432113a232e75f965335be6b7bb6557ae9faf8051e9a012cadd/'
        'mmcv-2.1.0.tar.gz',
        'd387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f'),
}
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


def fetch_sdist(version, dest_dir):
    if version not in SDISTS:
        fail(f'no pinned source for mmcv {version}',
             f'use one of {sorted(SDISTS)} or pass --sdist PATH')
    url, sha = SDISTS[version]
    path = Path(dest_dir) / url.rsplit('/', 1)[1]
    if not path.exists():
        log(f'downloading {url}')
        tmp = path.with_suffix('.part')
        try:
            with urllib.request.urlopen(url, timeout=120) as r, \
                    open(tmp, 'wb') as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            fail(f'download of mmcv {version} source failed: {e}',
                 'check access to PyPI, or download the sdist yourself and '
                 'pass --sdist PATH')
        tmp.rename(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        path.unlink()
        fail(f'sha256 mismatch for {path.name}: {digest} != {sha}',
             'run the set-up again to re-download it')
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
    parser.add_argument('--sdist', help='use this mmcv source archive')
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
        sdist = Path(args.sdist) if args.sdist else fetch_sdist(
            args.version, Path(args.cache_dir))
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
