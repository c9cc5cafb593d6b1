"""The quick-start demo end to end, on a tiny schedule."""
import json
import os.path as osp
import subprocess
import sys

import pytest

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
    n_student = sum(p.numel() for p in distiller.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    assert n_student < n_teacher / 3
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
    for run in summary.values():
        assert 0 <= run['miou'] <= 100
        assert osp.isfile(run['ckpt'])
    assert summary['teacher']['agreement']['top1'] == pytest.approx(100.0)
    # the distilled checkpoint holds the student only
    assert summary['distilled']['params'] == pytest.approx(
        summary['student']['params'])
    assert summary['distilled']['ckpt_mb'] < summary['teacher']['ckpt_mb']
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
