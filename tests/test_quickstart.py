"""The quick-start demo end to end, on a tiny schedule."""
import json
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs', 'quickstart')


@pytest.mark.parametrize('name', [
    'teacher_pspnet_r18-d8-w32_synthcity-64x128.py',
    'student_pspnet_r18-d8-w16_synthcity-64x128.py',
    'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py',
])
def test_configs_parse_and_fit_a_cpu(name):
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIGS, name))
    assert cfg.train_dataloader.num_workers == 0
    assert cfg.model.get('auxiliary_head', None) is None or \
        cfg.model.type == 'mmrankkd.LogitDistiller'
    # the PolyLR schedule ends where training ends
    assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_iters
    assert cfg.default_hooks.checkpoint.interval == cfg.train_cfg.max_iters


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
