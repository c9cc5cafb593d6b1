"""tools/run_table.py and mmrankkd.utils.results_table.

Default run (seconds, nothing trained): the published numbers read from
the configs equal the generator's table; a run's best / last come from its
scalars.json, a resumed run's logs merged; the table's rows and mean ± std
equal the runs' logs; finished runs are skipped, interrupted ones get
--resume; the --gpus, Cityscapes (4 GPUs per run) and slurm commands; the
missing-data and missing-teacher errors.

``-m matrix``: the whole path on a synthetic CIFAR-100: teachers fetched
from a local archive in the released layout, two CIFAR configs x 2 seeds x
2 epochs through tools/train.py, one run interrupted after its first epoch
and resumed, the table equal to the runs' logs, a second call launching
nothing.
"""
import importlib.util
import json
import math
import re
import statistics
import struct
from pathlib import Path

import pytest

from conftest import PY, REPO, run_tool

from mmrankkd.utils import results_table as rt

_spec = importlib.util.spec_from_file_location(
    'run_table', REPO / 'tools' / 'run_table.py')
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)
_gspec = importlib.util.spec_from_file_location(
    'gen_cifar100_configs', REPO / 'tools' / 'gen_cifar100_configs.py')
gen = importlib.util.module_from_spec(_gspec)
_gspec.loader.exec_module(gen)

CIFAR = REPO / 'configs' / 'cifar100'
KD = str(CIFAR / 'kd_resnet56_resnet20_1xb64_cifar100.py')
DKD = str(CIFAR / 'dkd_resnet56_resnet20_1xb64_cifar100.py')
CWD_CITY = str(REPO / 'configs' / 'cwd' / (
    'cwd_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py'))


# ------------------------------------------------------------ published
def test_published_numbers_are_the_generators_table():
    """Every KD / DKD / DIST number read from a config's comment is the
    one in tools/gen_cifar100_configs.py's PAIRS (parsed independently)."""
    checked = 0
    for pair in gen.PAIRS:
        for loss in ('kd', 'dkd', 'dist'):
            pub = rt.read_published(gen.loss_path(loss, pair))
            expected = pair[loss]
            if expected is None:
                assert pub['value'] is None and 'not in' in pub['text']
                continue
            mean, _, std = expected.partition('±')
            assert pub['metric'] == 'top-1'
            assert pub['value'] == float(mean), (loss, pair)
            assert pub['std'] == (float(std) if std else None)
            checked += 1
    assert checked == 11 + 11 + 6
    pld = rt.read_published(str(CIFAR / (
        'pld_resnet32x4_resnet8x4_1xb64_cifar100.py')))
    assert pld['value'] == 73.97 and 'own recipe' in pld['source']
    rkkd = rt.read_published(str(CIFAR / (
        'rkkd-kd_resnet56_resnet20_1xb64_cifar100.py')))
    assert rkkd['value'] is None
    cwd = rt.read_published(CWD_CITY)
    assert (cwd['metric'], cwd['value']) == ('mIoU', 75.54)


def test_names():
    pairs = tool._cifar_pairs()
    assert tool.name_parts('rkkd-kd_wrn_40_2_wrn_16_2_1xb64_cifar100',
                           pairs) == ('rkkd-kd', 'wrn_40_2 -> wrn_16_2')
    assert tool.name_parts(Path(CWD_CITY).stem, pairs) == (
        'cwd', 'pspnet-r101-d8 -> pspnet-r18-d8 '
        '(4xb2-80k_cityscapes-512x1024)')
    assert tool.gpus_per_run(Path(CWD_CITY).stem) == 4
    assert tool.gpus_per_run(Path(KD).stem) == 1


# ------------------------------------------------------------ logs
def _scalars(run_dir, stamp, epochs, metric='accuracy/top1', partial=False):
    """A scalars.json as mmengine writes it: train records per iteration,
    val records per epoch (the teacher's under teacher/...)."""
    path = Path(run_dir) / stamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch, value in epochs.items():
        lines.append(json.dumps({'lr': 0.05, 'loss': 4.0, 'epoch': epoch,
                                 'iter': 2 * epoch, 'step': 2 * epoch}))
        lines.append(json.dumps({metric: value,
                                 f'teacher/{metric}': 99.0,
                                 'agreement/top1': 10.0, 'step': epoch}))
    text = '\n'.join(lines) + '\n'
    if partial:
        text += '{"accuracy/top1": 7'  # killed while writing
    path.write_text(text)
    return path


def _finish(run_dir, final):
    Path(run_dir, f'epoch_{final}.pth').write_bytes(b'')
    Path(run_dir, 'last_checkpoint').write_text(
        str(Path(run_dir, f'epoch_{final}.pth')))


def test_read_run_merges_resumed_logs(tmp_path):
    run = tmp_path / 'run'
    # Killed in epoch 3 after epoch 2's checkpoint: epochs 1-3 logged;
    # resumed from epoch 2, so epoch 3 is run (and logged) again.
    _scalars(run, '20260101_000000', {1: 10.0, 2: 30.0, 3: 50.0},
             partial=True)
    _scalars(run, '20260101_010000', {3: 20.0, 4: 25.0})
    res = rt.read_run(str(run), final_step=4)
    assert res['metric'] == 'accuracy/top1'  # not teacher/accuracy/top1
    assert res['steps'] == {1: 10.0, 2: 30.0, 3: 20.0, 4: 25.0}
    assert (res['best'], res['best_step']) == (30.0, 2)
    assert (res['last'], res['last_step']) == (25.0, 4)
    with pytest.raises(rt.RunLogError, match='not at the final step 5'):
        rt.read_run(str(run), final_step=5)
    seg = tmp_path / 'seg'
    _scalars(seg, '20260101_000000', {8000: 70.0, 16000: 71.5}, 'mIoU')
    assert rt.read_run(str(seg))['metric'] == 'mIoU'
    with pytest.raises(rt.RunLogError, match='no <timestamp>/vis_data'):
        rt.read_run(str(tmp_path / 'empty'))


def test_table_equals_the_runs_logs(tmp_path, capsys):
    """Two configs x 2 seeds finished (one resumed), a third seed of one
    config interrupted: table.md rows, mean ± std (sample std), difference
    to the published number and runs column; runs.json; table.png."""
    wd = tmp_path / 'table'
    logs = {
        (KD, 0): [{1: 60.0, 2: 61.5}],
        (KD, 1): [{1: 59.0, 2: 63.25}],
        (DKD, 0): [{1: 62.0, 2: 61.0}],
        (DKD, 1): [{1: 64.0}, {2: 64.5}],  # resumed after epoch 1
    }
    for (config, seed), parts in logs.items():
        run = wd / Path(config).stem / f'seed{seed}'
        for i, part in enumerate(parts):
            _scalars(run, f'2026010{i}_000000', part)
        _finish(run, 2)
    interrupted = wd / Path(DKD).stem / 'seed2'
    _scalars(interrupted, '20260101_000000', {1: 99.0})
    Path(interrupted, 'epoch_1.pth').write_bytes(b'')
    Path(interrupted, 'last_checkpoint').write_text(
        str(interrupted / 'epoch_1.pth'))

    code = tool.main([KD, DKD, '--seeds', '3', '--work-dir', str(wd),
                      '--table-only', '--cfg-options',
                      'train_cfg.max_epochs=2'])
    assert code == 1  # KD seed 2 never ran, DKD seed 2 is interrupted
    err = capsys.readouterr().err
    assert 'seed2 (interrupted)' in err and 'seed2 (new)' in err

    md = (wd / 'table.md').read_text()
    rows = [line for line in md.splitlines()
            if line.startswith('| resnet56 -> resnet20')]
    assert len(rows) == 2
    for row, config, published in ((rows[0], KD, 70.66),
                                   (rows[1], DKD, 71.97)):
        merged = [{k: v for part in logs[config, s] for k, v in
                   part.items()} for s in (0, 1)]
        best = [max(m.values()) for m in merged]
        last = [m[2] for m in merged]
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert cells[1] == Path(config).stem.split('_')[0]
        assert cells[2] == f'`{Path(config).stem}`'
        assert cells[3].startswith(f'{published:.2f} (')
        assert cells[4] == (f'{statistics.mean(best):.2f} ± '
                            f'{statistics.stdev(best):.2f}')
        assert cells[5] == (f'{statistics.mean(last):.2f} ± '
                            f'{statistics.stdev(last):.2f}')
        assert cells[6] == f'{statistics.mean(best) - published:+.2f}'
        assert cells[7] == '2/3'
    records = json.loads((wd / 'runs.json').read_text())
    assert {(Path(r['config']).stem, r['seed'], r['state'])
            for r in records} >= {(Path(DKD).stem, 2, 'interrupted'),
                                  (Path(KD).stem, 2, 'new')}
    png = (wd / 'table.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'
    width, height = struct.unpack('>II', png[16:24])
    assert width > 200 and height > 200


def test_mean_std():
    assert rt.mean_std([1.0, 2.0, 4.0]) == pytest.approx(
        (7 / 3, statistics.stdev([1.0, 2.0, 4.0])))
    mean, std = rt.mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)


# ------------------------------------------------------------ plan
def test_dry_run_skips_finished_and_resumes_interrupted(tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    wd = tmp_path / 'w'
    runs = wd / Path(KD).stem
    _scalars(runs / 'seed0', '20260101_000000', {1: 1.0, 2: 2.0})
    _finish(runs / 'seed0', 2)
    (runs / 'seed1').mkdir(parents=True)
    Path(runs / 'seed1' / 'epoch_1.pth').write_bytes(b'')
    Path(runs / 'seed1' / 'last_checkpoint').write_text(
        str(runs / 'seed1' / 'epoch_1.pth'))
    base = [KD, '--seeds', '3', '--work-dir', str(wd), '--dry-run',
            '--cfg-options', 'train_cfg.max_epochs=2',
            'model.teacher_ckpt=missing/teacher.pth',
            'train_dataloader.dataset.data_root=no/cifar']
    assert tool.main(base + ['--gpus', '2']) == 0
    out = capsys.readouterr().out.splitlines()
    assert f'{runs.name} seed 0: finished' in out
    assert f'{runs.name} seed 1: interrupted' in out
    assert f'{runs.name} seed 2: new' in out
    cmds = [line for line in out if 'train.py' in line]
    assert len(cmds) == 2  # the finished run is skipped
    assert cmds[0].startswith('CUDA_VISIBLE_DEVICES=0 ')
    assert cmds[1].startswith('CUDA_VISIBLE_DEVICES=1 ')
    assert f'--work-dir {runs / "seed1"}' in cmds[0]
    assert cmds[0].endswith('--resume')
    assert 'randomness.seed=2' in cmds[1] and '--resume' not in cmds[1]
    assert 'train_cfg.max_epochs=2' in cmds[1]
    checks = [line for line in out if line.startswith('check: ')]
    assert any('missing/teacher.pth' in c and 'Fix' in c for c in checks)
    assert any('no/cifar' in c and 'cifar-100-python.tar.gz' in c
               for c in checks)
    assert not (wd / 'table.md').exists()  # a dry run writes nothing

    # Slurm: tools/slurm_train.sh PARTITION JOB CONFIG, 1 GPU per run.
    assert tool.main(base + ['--launcher', 'slurm', '--partition',
                             'gpu']) == 0
    cmds = [line for line in capsys.readouterr().out.splitlines()
            if 'slurm_train.sh' in line]
    assert len(cmds) == 2
    assert cmds[1].startswith('GPUS=1 GPUS_PER_NODE=1 PYTHON=')
    assert f'slurm_train.sh gpu {runs.name[:40]}-s2 {KD} --work-dir' in \
        cmds[1]


def test_cityscapes_runs_take_their_recipes_gpus(tmp_path, capsys,
                                                 monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    args = [CWD_CITY, '--seeds', '1', '--work-dir', str(tmp_path),
            '--dry-run']
    assert tool.main(args) == 1
    assert '4-GPU recipe' in capsys.readouterr().err
    assert tool.main(args + ['--gpus', '8']) == 0
    cmds = [line for line in capsys.readouterr().out.splitlines()
            if 'dist_train.sh' in line]
    assert len(cmds) == 1
    assert cmds[0].startswith('CUDA_VISIBLE_DEVICES=0,1,2,3 ')
    assert 'dist_train.sh ' + CWD_CITY + ' 4 --work-dir' in cmds[0]


def test_missing_data_stops_before_any_run(tmp_path, capsys, monkeypatch):
    def offline(root):
        raise OSError('<urlopen error [Errno -2] Name or service not known>')

    monkeypatch.setattr(tool, 'download_cifar100', offline)
    teacher = tmp_path / 'teacher.pth'
    teacher.write_bytes(b'')
    code = tool.main([KD, '--work-dir', str(tmp_path / 'w'),
                      '--cfg-options', f'model.teacher_ckpt={teacher}',
                      f'train_dataloader.dataset.data_root={tmp_path}/c',
                      f'val_dataloader.dataset.data_root={tmp_path}/c'])
    assert code == 1
    err = capsys.readouterr().err
    assert f'CIFAR-100 is not in "{tmp_path}/c"' in err
    assert 'Name or service not known' in err
    assert 'tar xzf cifar-100-python.tar.gz' in err
    assert not (tmp_path / 'w').exists()  # nothing launched


# ------------------------------------------------------------ end to end
def _tiny_options(root, teacher):
    """--cfg-options for tiny runs on synthetic CIFAR-100 (read by
    mmrankkd.SyntheticCIFAR100: no md5 check, no download)."""
    loader = ('{0}.batch_size={1} {0}.num_workers=0 '
              '{0}.dataset.type=mmrankkd.SyntheticCIFAR100 '
              '{0}.dataset.data_root=' + str(root))
    return (loader.format('train_dataloader', 16).split() +
            loader.format('val_dataloader', 20).split() +
            loader.format('test_dataloader', 20).split() +
            ['train_cfg.max_epochs=2', 'default_hooks.logger.interval=1',
             'default_hooks.checkpoint.interval=1',
             f'model.teacher_ckpt={teacher}'])


def _synthetic_cifar(root):
    """A synthetic CIFAR-100 (real layout) whose 96 training and 20 test
    images use 4 of the 100 classes, so that two epochs give top-1 values
    that differ from 0 and between seeds."""
    import pickle

    from mmrankkd.datasets.synthetic_cifar import make_synthetic_cifar100
    make_synthetic_cifar100(root, num_train=96, num_test=20)
    for split in ('train', 'test'):
        path = Path(root) / 'cifar-100-python' / split
        entry = pickle.loads(path.read_bytes())
        entry['fine_labels'] = [c % 4 for c in entry['fine_labels']]
        path.write_bytes(pickle.dumps(entry))
    return root


@pytest.mark.slow
@pytest.mark.matrix
def test_table_end_to_end(tmp_path, monkeypatch):
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    from test_fetch_teachers import make_archive
    root = _synthetic_cifar(str(tmp_path / 'cifar'))
    archive = make_archive(tmp_path / 'cifar_teachers.tar', ['resnet56'])
    crd = tmp_path / 'checkpoints' / 'crd'
    run_tool([PY, 'tools/fetch_cifar_teachers.py', '--archive', archive,
              '--archs', 'resnet56', '--out', str(crd)])
    teacher = crd / 'resnet56_vanilla.pth'
    options = _tiny_options(root, teacher)
    wd = tmp_path / 'table'

    # An interrupted run: KD seed 1 stopped after epoch 1's checkpoint.
    pre = wd / Path(KD).stem / 'seed1'
    run_tool([PY, 'tools/train.py', KD, '--work-dir', str(pre),
              '--cfg-options', 'randomness.seed=1'] + options[:-4] +
             ['train_cfg.max_epochs=1'] + options[-3:])
    assert (pre / 'last_checkpoint').read_text().endswith('epoch_1.pth')

    # Two runs at a time (--gpus 2: CUDA_VISIBLE_DEVICES 0 and 1, ignored
    # on this CPU machine).
    cmd = [PY, 'tools/run_table.py', KD, DKD, '--seeds', '2',
           '--work-dir', str(wd), '--gpus', '2', '--cfg-options'] + options
    proc = run_tool(cmd)
    assert f'{Path(KD).stem} seed 1: interrupted' in proc.stdout
    assert proc.stdout.count(' done in ') == 4
    starts = [line for line in proc.stdout.splitlines()
              if 'tools/train.py' in line]
    assert len(starts) == 4
    assert {re.search(r'CUDA_VISIBLE_DEVICES=(\S+) ', line).group(1)
            for line in starts} == {'0', '1'}

    # The interrupted run resumed: its second log starts at epoch 2.
    logs = sorted(pre.glob('*/*.log'))
    assert len(logs) == 2
    assert 'resumed epoch: 1, iter: 6' in logs[1].read_text()
    second = rt.read_run(str(pre))['logs'][1]
    steps = [json.loads(line)['step'] for line in open(second)
             if '"accuracy/top1"' in line]
    assert steps == [2]

    md = (wd / 'table.md').read_text()
    values = []
    for config in (KD, DKD):
        runs = [rt.read_run(str(wd / Path(config).stem / f'seed{s}'),
                            final_step=2) for s in (0, 1)]
        best = [r['best'] for r in runs]
        last = [r['last'] for r in runs]
        row = next(line for line in md.splitlines()
                   if f'`{Path(config).stem}`' in line)
        cells = [c.strip() for c in row.strip('|').split('|')]
        assert cells[4] == (f'{statistics.mean(best):.2f} ± '
                            f'{statistics.stdev(best):.2f}')
        assert cells[5] == (f'{statistics.mean(last):.2f} ± '
                            f'{statistics.stdev(last):.2f}')
        assert cells[7] == '2/2'
        values += best + last
    assert any(values)  # DKD's runs learn a little; the check is not 0 = 0
    assert (wd / 'table.png').stat().st_size > 0

    # Everything finished: a second call launches nothing, same table.
    again = run_tool(cmd)
    assert ' done in ' not in again.stdout
    assert again.stdout.count(': finished') == 4
    assert (wd / 'table.md').read_text() == md


def _random_teacher(path):
    """A resnet56 zoo checkpoint with random weights (what
    tools/convert_crd_checkpoint.py writes)."""
    import torch
    from test_convert_crd import build, random_weights
    torch.save({'state_dict': random_weights(build('resnet56')).state_dict(),
                'meta': {}}, str(path))
    return str(path)


@pytest.mark.slow
def test_resume_through_tools_train(tmp_path, capsys):
    """The default run's real representative: DKD x 1 seed on a
    synthetic CIFAR-100 through tools/train.py, first to epoch 1, then to
    epoch 2: the second call resumes (not restarts) and the table's numbers
    are those of mmengine's own scalars.json files."""
    root = _synthetic_cifar(str(tmp_path / 'cifar'))
    teacher = _random_teacher(tmp_path / 'resnet56.pth')
    wd = tmp_path / 'table'
    options = _tiny_options(root, teacher)
    args = [DKD, '--work-dir', str(wd), '--cfg-options'] + options
    # In-process tool.main (the runs are still tools/train.py processes).
    assert tool.main(args[:-4] + ['train_cfg.max_epochs=1'] +
                     options[-3:]) == 0
    run = wd / Path(DKD).stem / 'seed0'
    capsys.readouterr()
    assert tool.main(args) == 0
    assert f'{Path(DKD).stem} seed 0: interrupted' in capsys.readouterr().out
    logs = sorted(run.glob('*/*.log'))
    assert len(logs) == 2
    resumed = logs[1].read_text()
    assert 'resumed epoch: 1, iter: 6' in resumed
    # The warm-up continues at epoch 2 (a restart would log 0.0500).
    assert 'distill_weight.dkd: 0.1000' in resumed
    assert 'distill_weight.dkd: 0.0500' not in resumed
    res = rt.read_run(str(run), final_step=2)
    assert sorted(res['steps']) == [1, 2] and len(res['logs']) == 2
    # DKD (CE weight 1) learns the 4 classes a little in 12 iterations
    # (KD, CE weight 0.1, follows the random teacher to 0): the numbers
    # compared below are not all zero.
    assert res['best'] > 0
    row = next(line for line in (wd / 'table.md').read_text().splitlines()
               if f'`{Path(DKD).stem}`' in line)
    cells = [c.strip() for c in row.strip('|').split('|')]
    assert cells[4:6] == [f'{res["best"]:.2f}', f'{res["last"]:.2f}']
    assert cells[6] == f'{res["best"] - 71.97:+.2f}' and cells[7] == '1/1'
    # Stopped during its final validation: the final checkpoint (written
    # before that validation) is there, its score is not. Rerunning the
    # same command resumes at the end and validates it.
    scalars = sorted(run.glob('*/vis_data/scalars.json'))[-1]
    kept = [line for line in scalars.read_text().splitlines()
            if not ('accuracy/top1' in json.loads(line)
                    and json.loads(line)['step'] == 2)]
    scalars.write_text('\n'.join(kept) + '\n')
    with pytest.raises(rt.RunLogError, match='final step 2'):
        rt.read_run(str(run), final_step=2)
    capsys.readouterr()
    assert tool.main(args) == 0
    assert f'{Path(DKD).stem} seed 0: interrupted' in capsys.readouterr().out
    log = sorted(run.glob('*/*.log'))[-1].read_text()
    assert 'Resumed from the final checkpoint: validating it' in log
    assert rt.read_run(str(run), final_step=2)['last'] == res['last']


def test_device_slots_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '4,6,7,9')
    assert tool.device_slots(2, 1) == [['4'], ['6']]
    assert tool.device_slots(4, 2) == [['4', '6'], ['7', '9']]
    with pytest.raises(ValueError, match='Fix: --gpus 4'):
        tool.device_slots(5, 1)
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES')
    assert tool.device_slots(8, 4) == [['0', '1', '2', '3'],
                                       ['4', '5', '6', '7']]


def test_too_few_visible_devices_is_an_error_not_a_traceback(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2')
    assert tool.main([KD, '--work-dir', str(tmp_path), '--gpus', '2',
                      '--dry-run']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: --gpus 2, but CUDA_VISIBLE_DEVICES=2')
