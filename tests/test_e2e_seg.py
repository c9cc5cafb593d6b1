"""End to end on a tiny synthetic Cityscapes (real layout, mmseg's
CityscapesDataset): a tiny teacher trained with tools/train.py, then
distillation through tools/train.py with a config inheriting
configs/rkkd/..., resume (through mmseg's own tools/train.py), student-only
checkpoints, export + mmseg inference, tools/test.py, and torchrun."""
import glob
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

import mmrankkd  # noqa: F401
from conftest import PY, REPO, free_port, run_tool, seg_distill_config

pytestmark = pytest.mark.slow

MMSEG_TRAIN = Path(__import__('mmseg').__file__).parent / '.mim' / 'tools' / \
    'train.py'


def _log_text(work_dir):
    return '\n'.join(Path(p).read_text()
                     for p in glob.glob(f'{work_dir}/*/*.log'))


@pytest.fixture(scope='module')
def distilled(seg_models, cityscapes_root):
    d = seg_models['dir']
    cfg = seg_distill_config(d / 'tiny_distill.py', cityscapes_root,
                             seg_models['student_cfg'],
                             seg_models['teacher_cfg'],
                             seg_models['teacher_ckpt'])
    wd = d / 'distill'
    run_tool([PY, 'tools/train.py', cfg, '--work-dir', str(wd),
              '--cfg-options', 'experiment_name=tiny_distill'])
    return dict(cfg=cfg, wd=wd, log=_log_text(wd), **seg_models)


def test_training_log_and_validation(distilled):
    log = distilled['log']
    train = [l for l in log.splitlines() if 'Iter(train) [4/4]' in l][0]
    for key in ('decode.loss_ce', 'aux.loss_ce', 'distill.loss_kd',
                'distill.loss_rank'):
        assert key in train, key
    val = [l for l in log.splitlines() if 'Iter(val) [2/2]' in l and
           'mIoU' in l][-1]
    for key in ('mIoU', 'agreement/top1', 'agreement/kendall_tau',
                'teacher/mIoU'):
        assert f'{key}:' in val, key
    # The logged agreement and teacher mIoU, recomputed from the two
    # checkpoints with mmseg's inference API on the 2 validation images.
    import cv2
    import numpy as np
    from mmseg.apis import inference_model, init_model
    student = init_model(distilled['student_cfg'], device='cpu')
    state = torch.load(distilled['wd'] / 'iter_4.pth')['state_dict']
    student.load_state_dict({k[len('student.'):]: v
                             for k, v in state.items()})
    teacher = init_model(distilled['teacher_cfg'],
                         distilled['teacher_ckpt'], device='cpu')
    same = valid = 0
    hits = np.zeros((2, 19), np.int64)  # teacher (intersection, union)
    for path in sorted(glob.glob(f'{distilled["dir"].parent}/**/leftImg8bit/'
                                 'val/*/*.png', recursive=True)):
        gt = cv2.imread(path.replace('leftImg8bit', 'gtFine', 1).replace(
            '_leftImg8bit.png', '_gtFine_labelTrainIds.png'),
            cv2.IMREAD_UNCHANGED)
        s, t = (inference_model(m, path).pred_sem_seg.data[0].numpy()
                for m in (student, teacher))
        keep = gt != 255
        same += int(((s == t) & keep).sum())
        valid += int(keep.sum())
        for c in range(19):
            hits[0, c] += ((t == c) & (gt == c) & keep).sum()
            hits[1, c] += (((t == c) & keep) | (gt == c)).sum()
    logged = {key: float(re.search(rf'{key}: (\S+)', val).group(1))
              for key in ('agreement/top1', 'teacher/mIoU')}
    assert logged['agreement/top1'] == pytest.approx(100 * same / valid,
                                                     abs=1e-3)
    present = hits[1] > 0  # mmseg's mIoU: nanmean over classes
    assert logged['teacher/mIoU'] == pytest.approx(
        100 * np.mean(hits[0][present] / hits[1][present]), abs=0.01)


def test_checkpoint_holds_only_the_student(distilled):
    ckpt = torch.load(distilled['wd'] / 'iter_4.pth')
    keys = list(ckpt['state_dict'])
    assert all(k.startswith('student.') for k in keys)
    assert 'optimizer' in ckpt and 'param_schedulers' in ckpt
    teacher = torch.load(distilled['teacher_ckpt'])['state_dict']
    n_student = sum(v.numel() for v in ckpt['state_dict'].values())
    n_teacher = sum(v.numel() for v in teacher.values())
    assert n_student < n_teacher / 2  # the teacher is not in there
    # A distill checkpoint is about a student checkpoint (same tensors
    # and optimizer state): compare with a plain student training ckpt.
    size = os.path.getsize(distilled['wd'] / 'iter_4.pth')
    print(f'distill ckpt {size} B, teacher ckpt '
          f'{os.path.getsize(distilled["teacher_ckpt"])} B')


def test_resume_with_mmseg_train_py_continues_identically(distilled):
    """Resume from iter_2 with mmseg's own tools/train.py (custom_imports
    brings mmrankkd in) and reach the same iter_4 state."""
    wd2 = distilled['dir'] / 'resumed'
    wd2.mkdir()
    shutil.copy(distilled['wd'] / 'iter_2.pth', wd2 / 'iter_2.pth')
    (wd2 / 'last_checkpoint').write_text(str(wd2 / 'iter_2.pth'))
    proc = run_tool([PY, str(MMSEG_TRAIN), distilled['cfg'], '--work-dir',
                     str(wd2), '--resume', '--cfg-options',
                     'experiment_name=tiny_resumed'])
    log = _log_text(wd2)
    assert 'resumed' in log.lower() and 'Iter(train) [3/4]' in log
    assert 'Iter(train) [1/4]' not in log
    a = torch.load(distilled['wd'] / 'iter_4.pth')
    b = torch.load(wd2 / 'iter_4.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 4
    for k, v in a['state_dict'].items():
        torch.testing.assert_close(b['state_dict'][k], v, rtol=1e-5,
                                   atol=1e-6, msg=k)
    sa, sb = a['optimizer']['state'], b['optimizer']['state']
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sb[k]['momentum_buffer'],
                                   sa[k]['momentum_buffer'], rtol=1e-5,
                                   atol=1e-6)
    assert a['param_schedulers'] == b['param_schedulers']
    del proc


def test_export_student_loads_in_mmseg_inference(distilled, tmp_path):
    out = tmp_path / 'student.pth'
    run_tool([PY, 'tools/export_student.py', str(distilled['wd'] /
                                                 'iter_4.pth'),
              str(out), '--config', distilled['cfg']])
    assert torch.serialization.get_unsafe_globals_in_checkpoint(
        str(out)) == []  # loads weights-only without mmrankkd
    cfg_text = (tmp_path / 'student.py').read_text()
    assert 'LogitDistiller' not in cfg_text and 'mmrankkd' not in cfg_text
    from mmseg.apis import inference_model, init_model
    model = init_model(str(tmp_path / 'student.py'), str(out), device='cpu')
    ckpt = torch.load(distilled['wd'] / 'iter_4.pth')['state_dict']
    for k, v in model.state_dict().items():
        assert torch.equal(v, ckpt['student.' + k]), k
    img = sorted(glob.glob(
        f'{distilled["dir"].parent}/**/leftImg8bit/val/*/*.png',
        recursive=True))[0]
    result = inference_model(model, img)
    assert tuple(result.pred_sem_seg.shape) == (64, 128)
    print('exported student', os.path.getsize(out), 'B')


def test_tools_test_scores_student_and_agreement(distilled):
    proc = run_tool([PY, 'tools/test.py', distilled['cfg'],
                     str(distilled['wd'] / 'iter_4.pth'), '--work-dir',
                     str(distilled['dir'] / 'test'), '--cfg-options',
                     'experiment_name=tiny_test'])
    out = proc.stdout + proc.stderr + _log_text(distilled['dir'] / 'test')
    line = [l for l in out.splitlines() if 'Iter(test) [2/2]' in l and
            'mIoU' in l][-1]
    assert 'agreement/top1' in line and 'teacher/mIoU' in line


DIST_SCRIPT = '''
import os, sys, torch
sys.argv = ['train.py', sys.argv[1], '--launcher', 'pytorch',
            '--work-dir', sys.argv[2], '--cfg-options',
            'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
            'experiment_name=tiny_ddp']
sys.path.insert(0, 'tools')
import runpy
from mmengine.runner import Runner
orig_train = Runner.train
def train(self):
    model = orig_train(self)
    sd = {k: v.detach().clone() for k, v in
          self.model.module.named_parameters()}
    torch.save(sd, os.path.join(self.work_dir, f'rank{self.rank}.pt'))
    return model
Runner.train = train
runpy.run_path('tools/train.py', run_name='__main__')
'''


def test_torchrun_two_processes_agree(distilled, tmp_path):
    script = tmp_path / 'ddp_train.py'
    script.write_text(DIST_SCRIPT)
    wd = tmp_path / 'ddp'
    run_tool([str(Path(PY).parent / 'torchrun'), '--nproc_per_node', '2',
              '--master_port', str(free_port()), str(script), distilled['cfg'],
              str(wd)])
    # Parameters (BN running stats stay per rank with plain BN and the
    # runner's broadcast_buffers=False, as in any mmseg DDP run).
    r0, r1 = torch.load(wd / 'rank0.pt'), torch.load(wd / 'rank1.pt')
    assert r0.keys() == r1.keys() and r0
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    start = torch.load(distilled['wd'] / 'iter_2.pth')  # any other run
    assert any(not torch.equal(r0[k], start['state_dict'][k]) for k in r0)
