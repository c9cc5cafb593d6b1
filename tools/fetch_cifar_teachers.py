# Download the released CIFAR-100 teachers (CRD / RepDistiller's, as
# mdistiller republishes them in its GitHub release) and convert them to the
# checkpoints the configs under configs/cifar100/ expect:
#
#   python tools/fetch_cifar_teachers.py            # download + convert
#   python tools/fetch_cifar_teachers.py --archive cifar_teachers.tar
#   python tools/fetch_cifar_teachers.py --sha256 <hex of the archive>
#
# The archive is mdistiller's `cifar_teachers.tar` (its README: "Download the
# cifar_teachers.tar at https://github.com/megvii-research/mdistiller/
# releases/tag/checkpoints"), holding
# cifar_teachers/<arch>_vanilla/ckpt_epoch_240.pth for wrn_40_2, resnet56,
# resnet110, resnet32x4, vgg13 and ResNet50. Each is converted by
# tools/convert_crd_checkpoint.py to checkpoints/crd/<arch>_vanilla.pth.
#
# Integrity: no sha256 of the archive is published, and this project has
# not downloaded it, so none is built in. The archive's sha256 is checked
# against --sha256 when given, and against the one recorded by the first
# fetch: that fetch writes checkpoints/crd/cifar_teachers.sha256.json (the
# archive's sha256 and each released and converted file's), and every later
# fetch or --verify compares with it (trust on first use). A mismatch stops
# with both hashes.
#
# Offline (no route to github.com): the error names the URL and the manual
# steps: download the archive elsewhere, then pass it with --archive.
import argparse
import hashlib
import importlib.util
import json
import os
import os.path as osp
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
URL = ('https://github.com/megvii-research/mdistiller/releases/download/'
       'checkpoints/cifar_teachers.tar')
RELEASE_PAGE = ('https://github.com/megvii-research/mdistiller/releases/'
                'tag/checkpoints')
ARCHIVE_NAME = 'cifar_teachers.tar'
TEACHERS = ('wrn_40_2', 'resnet56', 'resnet110', 'resnet32x4', 'vgg13',
            'ResNet50')
MANIFEST = 'cifar_teachers.sha256.json'
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """The archive cannot be had, or is not the one recorded / given."""


def _converter():
    spec = importlib.util.spec_from_file_location(
        'convert_crd_checkpoint',
        osp.join(REPO, 'tools', 'convert_crd_checkpoint.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(_CHUNK), b''):
            digest.update(block)
    return digest.hexdigest()


def manual_steps(out_dir):
    return (
        f'Manual steps: on a machine with access to github.com, download '
        f'{URL} (the release page: {RELEASE_PAGE}), copy it here, then run '
        f'python tools/fetch_cifar_teachers.py --archive '
        f'/path/to/{ARCHIVE_NAME} --out {out_dir}')


def download(url, dst, timeout=60):
    """Download ``url`` to ``dst`` (through ``dst.part``)."""
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    part = dst + '.part'
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, \
                open(part, 'wb') as f:
            shutil.copyfileobj(response, f, _CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as e:
        if osp.exists(part):
            os.remove(part)
        raise FetchError(f'cannot download {url}: {e}.') from e
    os.replace(part, dst)
    return dst


def archive_members(archive):
    """{arch: member name} of the released teachers in the tar."""
    found = {}
    try:
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = member.name.replace('\\', '/').split('/')
                if (member.isfile() and len(parts) >= 2
                        and parts[-1] == 'ckpt_epoch_240.pth'
                        and parts[-2].endswith('_vanilla')):
                    found[parts[-2][:-len('_vanilla')]] = member.name
    except tarfile.TarError as e:
        raise FetchError(f'"{archive}" is not a readable tar archive ({e}). '
                         'Fix: delete it and fetch again, or pass the '
                         f'released {ARCHIVE_NAME} with --archive.') from e
    return found


def _read_manifest(out_dir):
    path = osp.join(out_dir, MANIFEST)
    if not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def check_archive(archive, expected=None, manifest=None):
    """The archive's sha256, checked against ``expected`` (--sha256) and the
    one a manifest recorded."""
    digest = sha256_file(archive)
    if expected and digest != expected.lower():
        raise FetchError(
            f'sha256 of "{archive}" is {digest}, not the {expected} passed '
            'with --sha256. Fix: download the archive again (a partial or '
            'altered file), or pass the right hash.')
    if manifest and manifest.get('archive_sha256') not in (None, digest):
        raise FetchError(
            f'sha256 of "{archive}" is {digest}, but the first fetch '
            f'recorded {manifest["archive_sha256"]} (from '
            f'{manifest.get("archive_source")}) in {MANIFEST}. The archive '
            'changed. Fix: find out why; if the new archive is trusted, '
            f'delete {MANIFEST} and the converted teachers and fetch again.')
    return digest


def fetch(out_dir='checkpoints/crd', archive=None, sha256=None,
          archs=TEACHERS, cache_dir=None, force=False, url=URL, log=print):
    """Download (unless ``archive``), check and convert the teachers.

    Returns:
        dict: The manifest written to ``out_dir/cifar_teachers.sha256.json``.
    """
    converter = _converter()
    manifest = _read_manifest(out_dir)
    targets = {a: osp.join(out_dir, f'{a}_vanilla.pth') for a in archs}
    if not force and archive is None and all(
            osp.isfile(p) for p in targets.values()):
        if manifest is None:
            log(f'all {len(archs)} teachers are in {out_dir}, not fetched '
                f'by this tool (no {MANIFEST}), so not checked; nothing to '
                'do (--force fetches and records them).')
        else:
            verify(out_dir, archs, manifest)
            log(f'all {len(archs)} teachers are in {out_dir} (sha256 as '
                'recorded); nothing to do (--force converts again).')
        return manifest
    if archive is None:
        cache_dir = cache_dir or osp.join(out_dir, 'download')
        archive = osp.join(cache_dir, ARCHIVE_NAME)
        if force or not osp.isfile(archive):
            log(f'downloading {url} -> {archive}')
            try:
                download(url, archive)
            except FetchError as e:
                raise FetchError(f'{e} {manual_steps(out_dir)}') from e
        source = url
    else:
        if not osp.isfile(archive):
            raise FetchError(f'--archive "{archive}" does not exist. '
                             f'{manual_steps(out_dir)}')
        source = osp.abspath(archive)
    digest = check_archive(archive, sha256, manifest)
    log(f'{archive}: sha256 {digest}' +
        (' (as --sha256)' if sha256 else '') +
        (' (as recorded)' if manifest else
         ' (recorded now; later fetches must match it)'))
    members = archive_members(archive)
    missing = [a for a in archs if a not in members]
    if missing:
        raise FetchError(
            f'"{archive}" has no {", ".join(f"{a}_vanilla/ckpt_epoch_240.pth" for a in missing)} '  # noqa: E501
            f'(it has: {", ".join(sorted(members)) or "no released teacher"}'
            f'). Fix: pass the released {ARCHIVE_NAME} ({URL}), or only '
            'the teachers it has with --archs.')
    new = dict(archive_sha256=digest, archive_source=source,
               note='Recorded by tools/fetch_cifar_teachers.py on the first '
               'fetch (no sha256 of the archive is published); later '
               'fetches must match.',
               teachers=dict((manifest or {}).get('teachers', {})))
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp, \
            tarfile.open(archive) as tar:
        for arch in archs:
            # Read only the member, never extract paths from the archive.
            src = osp.join(tmp, f'{arch}_vanilla', 'ckpt_epoch_240.pth')
            os.makedirs(osp.dirname(src), exist_ok=True)
            with tar.extractfile(members[arch]) as fin, \
                    open(src, 'wb') as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
            released = sha256_file(src)
            old = new['teachers'].get(arch, {})
            if old.get('released_sha256') not in (None, released):
                raise FetchError(
                    f'{members[arch]} has sha256 {released}, but '
                    f'{MANIFEST} recorded {old["released_sha256"]}. Fix: '
                    'find out why the release changed; to accept it, delete '
                    f'{MANIFEST} and fetch again.')
            res = converter.convert(src, targets[arch], arch)
            new['teachers'][arch] = dict(
                member=members[arch], released_sha256=released,
                converted=targets[arch],
                converted_sha256=sha256_file(targets[arch]),
                epoch=res.get('epoch'), accuracy=res.get('accuracy'))
            extra = ''.join(f', {k} {res[k]:g}' for k in ('epoch', 'accuracy')
                            if k in res)
            log(f'{arch}: {members[arch]} (sha256 {released[:12]}...)'
                f'{extra} -> {targets[arch]}')
    with open(osp.join(out_dir, MANIFEST), 'w', encoding='utf-8') as f:
        json.dump(new, f, indent=1, sort_keys=True)
    return new


def verify(out_dir, archs=TEACHERS, manifest=None):
    """Check the converted teachers against the manifest."""
    manifest = manifest or _read_manifest(out_dir)
    if manifest is None:
        raise FetchError(
            f'{osp.join(out_dir, MANIFEST)} does not exist: these teachers '
            'were not fetched by this tool, so there is nothing to check '
            'them against. Fix: python tools/fetch_cifar_teachers.py '
            '--force (with --archive if offline).')
    for arch in archs:
        entry = manifest.get('teachers', {}).get(arch)
        path = osp.join(out_dir, f'{arch}_vanilla.pth')
        if entry is None:
            raise FetchError(f'{MANIFEST} has no entry for {arch}. Fix: '
                             f'fetch it (--archs {arch} --force).')
        if not osp.isfile(path):
            raise FetchError(f'{path} is missing. Fix: fetch again.')
        digest = sha256_file(path)
        if digest != entry['converted_sha256']:
            raise FetchError(
                f'{path} has sha256 {digest}, not the recorded '
                f'{entry["converted_sha256"]}. Fix: fetch again with '
                '--force.')
    return manifest


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Download, check and convert the released CIFAR-100 '
        'teachers to checkpoints/crd/<arch>_vanilla.pth')
    parser.add_argument('--out', default='checkpoints/crd',
                        help='where the converted teachers go (the configs '
                        'expect checkpoints/crd)')
    parser.add_argument('--archive', help=f'a local {ARCHIVE_NAME} '
                        '(offline); no download')
    parser.add_argument('--sha256', help='expected sha256 of the archive')
    parser.add_argument('--archs', nargs='+', default=list(TEACHERS),
                        choices=TEACHERS, metavar='ARCH',
                        help='teachers to convert (default: all six)')
    parser.add_argument('--cache-dir', help='where the download goes '
                        '(default OUT/download)')
    parser.add_argument('--url', default=URL, help='the archive address')
    parser.add_argument('--force', action='store_true',
                        help='download / convert even if the teachers are '
                        'there')
    parser.add_argument('--verify', action='store_true',
                        help='only check the converted teachers against the '
                        'recorded sha256')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.verify:
            verify(args.out, args.archs)
            print(f'{len(args.archs)} teachers in {args.out} match '
                  f'{MANIFEST}.')
        else:
            fetch(args.out, args.archive, args.sha256, args.archs,
                  args.cache_dir, args.force, args.url)
    except FetchError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except Exception as e:  # conversion errors name their fix
        print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
