"""The quick-start demo end to end, on a tiny schedule."""
import json
import os.path as osp
import subprocess
import sys

import pytest
import torch

from mmrankkd.models.distillers import resolve_model_cfg

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'quickstart')
TEACHER = osp.join(CONFIGS, 'teacher_pspnet_r18-d8-w32_synthcity-64x128.py')
STUDENT = osp.join(CONFIGS, 'student_pspnet_r18-d8-w16_synthcity-64x128.py')
DISTILL = osp.join(
    CONFIGS, 'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py')


@pytest.mark.parametrize('name', [
    'teacher_pspnet_r18-d8-w32_synthcity-64x128.py',
    'student_pspnet_r18-d8-w16_synthcity-64x128.py',
    'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py',
])
def test_configs_parse_and_fit_a_cpu(name):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    assert cfg.train_dataloader.num_workers == 0
    model = cfg.model
    if model.type == 'mmrankkd.LogitDistiller':
        model = resolve_model_cfg(model.student, 'student')[0]
    # no auxiliary head: its FCN would cost CPU time for little gain
    assert model.get('auxiliary_head') is None
    # the PolyLR schedule ends where training ends
    assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters
    assert cfg.default_hooks.checkpoint.interval == cfg.train_cfg.max_iters


def test_distilled_student_is_comparable_with_the_student_alone():
    """The demo's comparison is fair only if the distilled student is the
    very network trained alone, on the same data and schedule, and the
    teacher is the one the teacher config trains."""
    from mmengine.config import Config
    distill, student = Config.fromfile(DISTILL), Config.fromfile(STUDENT)
    assert resolve_model_cfg(distill.model.student, 'student') == \
        resolve_model_cfg(STUDENT, 'student')
    assert resolve_model_cfg(distill.model.teacher, 'teacher') == \
        resolve_model_cfg(TEACHER, 'teacher')
    for key in ('train_cfg', 'param_scheduler', 'optim_wrapper',
                'train_dataloader', 'val_dataloader', 'randomness'):
        assert distill.get(key) == student.get(key), key


def test_export_student_writes_the_cfg_options_it_is_given(tmp_path,
                                                           monkeypatch):
    """tools/export_student.py --cfg-options: the written student config
    holds the data root training used, not the config file's."""
    import runpy

    import torch
    from mmengine.config import Config
    ckpt = tmp_path / 'iter_1.pth'
    torch.save({'meta': {}, 'state_dict': {
        'student.decode_head.conv_seg.bias': torch.zeros(19)}}, ckpt)
    root = str(tmp_path / 'my_data')
    options = [f'{loader}.dataset.data_root={root}'
               for loader in ('train_dataloader', 'val_dataloader',
                              'test_dataloader')]
    monkeypatch.setattr(sys, 'argv', [
        'export_student.py', str(ckpt), str(tmp_path / 'student.pth'),
        '--config', DISTILL, '--cfg-options', *options])
    runpy.run_path(osp.join(REPO, 'tools', 'export_student.py'),
                   run_name='__main__')
    cfg = Config.fromfile(str(tmp_path / 'student.py'))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == root, loader
    assert cfg.model.type == 'EncoderDecoder'
    assert 'custom_imports' not in cfg


def test_distill_config_builds_student_and_teacher(tmp_path):
    """The distiller config points at the two quick-start configs; the
    student is the quarter-width network trained alone."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmrankkd  # noqa: F401
    init_default_scope('mmseg')
    teacher_cfg = Config.fromfile(
        osp.join(CONFIGS, 'teacher_pspnet_r18-d8-w32_synthcity-64x128.py'))
    teacher = MODELS.build(teacher_cfg.model)
    ckpt = str(tmp_path / 'teacher.pth')
    torch.save({'state_dict': teacher.state_dict()}, ckpt)
    cfg = Config.fromfile(
        osp.join(CONFIGS,
                 'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py'))
    cfg.model.teacher_ckpt = ckpt
    distiller = MODELS.build(cfg.model)
    # The teacher is the checkpoint, loaded: its logits are the saved
    # model's; the student is the student config's network.
    student = MODELS.build(Config.fromfile(
        osp.join(CONFIGS, 'student_pspnet_r18-d8-w16_synthcity-64x128.py')
    ).model)
    assert {k: v.shape for k, v in distiller.student.state_dict().items()} \
        == {k: v.shape for k, v in student.state_dict().items()}
    n_student = sum(p.numel() for p in distiller.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    assert n_student < n_teacher / 3
    images = torch.rand(2, 3, 64, 128)
    teacher.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            distiller.teacher(images, mode='tensor'),
            teacher(images, mode='tensor'))
    assert set(cfg.model.distill_losses) == {'loss_bdd', 'loss_rank'}


@pytest.mark.slow
def test_quickstart_runs_end_to_end(tmp_path):
    work_dir = tmp_path / 'qs'
    out = subprocess.run(
        [sys.executable,
         osp.join(REPO, 'tools', 'quickstart.py'), '--work-dir',
         str(work_dir), '--iters-scale', '0.02'],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert osp.isfile(work_dir / 'quickstart.png')
    summary = json.loads((work_dir / 'summary.json').read_text())
    assert set(summary) == {'teacher', 'student', 'distilled'}
    # Each run's mIoU is the last one its own log recorded.
    for name, run in summary.items():
        logs = sorted((work_dir / name).glob('*/vis_data/scalars.json'))
        rows = [json.loads(line) for line in logs[-1].read_text().split(
            '\n') if '"mIoU"' in line]
        assert run['miou'] == pytest.approx(rows[-1]['mIoU']), name
    # The distilled student (its export) agrees with the teacher on the
    # share of valid validation pixels recomputed here from the two
    # checkpoints with mmseg's inference API.
    import glob

    import cv2
    import numpy as np
    from mmseg.apis import inference_model, init_model
    from mmengine.config import Config
    models = {}
    for name, config, ckpt in (
            ('teacher', osp.join(CONFIGS, 'teacher_pspnet_r18-d8-w32_'
                                 'synthcity-64x128.py'),
             summary['teacher']['ckpt']),
            ('distilled', str(work_dir / 'distilled' / 'student.py'),
             str(work_dir / 'distilled' / 'student.pth'))):
        cfg = Config.fromfile(config)
        models[name] = init_model(cfg, ckpt, device='cpu')
    data = work_dir / 'data' / 'synthetic_cityscapes'
    same = valid = 0
    for path in sorted(glob.glob(str(data / 'leftImg8bit' / 'val' / '*' /
                                     '*_leftImg8bit.png'))):
        gt = cv2.imread(path.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelTrainIds.png'),
            cv2.IMREAD_UNCHANGED)
        preds = [inference_model(models[n], path).pred_sem_seg.data[0]
                 .numpy() for n in ('teacher', 'distilled')]
        keep = gt != 255
        same += int(((preds[0] == preds[1]) & keep).sum())
        valid += int(keep.sum())
    assert summary['distilled']['agreement']['top1'] == pytest.approx(
        100.0 * same / valid, abs=1e-6)
    # Distillation changed the training: same network and seed as the
    # student alone, different weights.
    alone = torch.load(summary['student']['ckpt'], map_location='cpu',
                       weights_only=False)['state_dict']
    distilled = torch.load(str(work_dir / 'distilled' / 'student.pth'),
                           map_location='cpu')['state_dict']
    assert alone.keys() == distilled.keys()
    assert any(not torch.equal(alone[k], distilled[k]) for k in alone
               if alone[k].is_floating_point())
    for stage in ('[1/5]', '[5/5]', 'Figure:', 'distilled student'):
        assert stage in out.stdout
    # the exported student config reads the data the student trained on
    from mmengine.config import Config
    exported = Config.fromfile(str(work_dir / 'distilled' / 'student.py'))
    assert exported.test_dataloader.dataset.data_root == str(
        work_dir / 'data' / 'synthetic_cityscapes')


@pytest.mark.parametrize('threads, expected', [(1, '1'), (3, '3'),
                                               (0, 'unset')])
def test_training_processes_get_the_thread_count(tmp_path, monkeypatch,
                                                 threads, expected):
    """--threads reaches every tools/train.py process as OMP_NUM_THREADS
    (0: the environment's own setting)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'quickstart', osp.join(REPO, 'tools', 'quickstart.py'))
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    seen = {}

    class FakeProcess:
        stdout = iter(())

        def __init__(self, cmd, env, **kwargs):
            seen['env'] = env

        def wait(self):
            return 1

    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    monkeypatch.setattr(quickstart.subprocess, 'Popen', FakeProcess)
    with pytest.raises(SystemExit):
        quickstart.train(TEACHER, str(tmp_path), 0.01, 0, str(tmp_path),
                         False, threads=threads)
    assert seen['env'].get('OMP_NUM_THREADS', 'unset') == expected


def test_loader_options_move_the_data_and_data_root_alone_does_not():
    """What the base config's comment says: the loaders hold the path, so
    `--cfg-options data_root=X` leaves them where they were."""
    import argparse

    from mmengine.config import Config, DictAction
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    cfg = Config.fromfile(STUDENT)
    before = [cfg[loader].dataset.data_root for loader in loaders]
    parser = argparse.ArgumentParser()  # as tools/train.py parses them
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(
        ['--cfg-options', 'data_root=/elsewhere']).cfg_options)
    assert cfg.data_root == '/elsewhere'
    assert [cfg[loader].dataset.data_root for loader in loaders] == before
    cfg.merge_from_dict({f'{loader}.dataset.data_root': '/elsewhere'
                         for loader in loaders})
    assert {cfg[loader].dataset.data_root for loader in loaders} == \
        {'/elsewhere'}
