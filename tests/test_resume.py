"""Resume continues exactly: N iterations in one run and N/2 + --resume give
the same weights (random crops, flips and dropout included), and resuming
from a checkpoint without optimizer state is refused."""
import shutil

import pytest
import torch

from conftest import PY, REPO, run_tool

pytestmark = pytest.mark.slow

STUDENT = REPO / 'configs' / 'quickstart' / (
    'student_pspnet_r18-d8-w16_synthcity-64x128.py')


def _options(root, hooks=True):
    opts = [f'{k}.dataset.data_root={root}'
            for k in ('train_dataloader', 'val_dataloader',
                      'test_dataloader')]
    opts += ['train_cfg.max_iters=4', 'train_cfg.val_interval=100',
             'default_hooks.checkpoint.interval=2',
             'default_hooks.checkpoint.max_keep_ckpts=3',
             'train_dataloader.batch_size=2']
    if not hooks:
        opts.append('custom_hooks=[]')
    return opts


def _train(work_dir, root, hooks=True, resume=False, check=True):
    args = [PY, 'tools/train.py', str(STUDENT), '--work-dir', str(work_dir)]
    args += ['--resume'] if resume else []
    args += ['--cfg-options', *_options(root, hooks)]
    return run_tool(args, check=check)


def _resumed_copy(src, dst, checkpoint=None):
    dst.mkdir()
    ckpt = dst / 'iter_2.pth'
    if checkpoint is None:
        shutil.copy(src / 'iter_2.pth', ckpt)
    else:
        torch.save(checkpoint, ckpt)
    (dst / 'last_checkpoint').write_text(str(ckpt))
    return dst


def _max_diff(a, b):
    sa = torch.load(a, weights_only=False)['state_dict']
    sb = torch.load(b, weights_only=False)['state_dict']
    return max((sa[k].float() - sb[k].float()).abs().max().item()
               for k in sa)


@pytest.mark.parametrize('hooks', [True, False], ids=['exact', 'mmengine'])
def test_half_then_resume_equals_one_run(hooks, cityscapes_root, tmp_path):
    one = tmp_path / 'one'
    _train(one, cityscapes_root, hooks)
    two = _resumed_copy(one, tmp_path / 'two')
    proc = _train(two, cityscapes_root, hooks, resume=True)
    diff = _max_diff(one / 'iter_4.pth', two / 'iter_4.pth')
    if hooks:
        assert 'Random generator states restored' in proc.stdout + \
            proc.stderr
        assert diff == 0.0
    else:  # the control: MMEngine's own resume re-seeds, and drifts
        assert diff > 0.0


def test_resume_without_optimizer_state_is_refused(cityscapes_root,
                                                   tmp_path):
    one = tmp_path / 'one'
    _train(one, cityscapes_root)
    ckpt = torch.load(one / 'iter_2.pth', weights_only=False)
    del ckpt['optimizer']
    two = _resumed_copy(one, tmp_path / 'two', ckpt)
    proc = _train(two, cityscapes_root, resume=True, check=False)
    assert proc.returncode != 0
    assert 'no [\'optimizer\'] state' in proc.stderr
    assert 'load_from' in proc.stderr
