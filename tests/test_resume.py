"""Resume continues exactly: N iterations (epochs) in one run and N/2 +
--resume give the same weights (random crops, flips, dropout and the data
order included) with validation between the checkpoint and the next
iteration, with ``randomness.seed=None`` (num_workers 0 and 2), and with two
gloo ranks; resuming from a checkpoint without optimizer state is refused.
"""
import itertools
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from conftest import CLS_DISTILL, PY, REPO, free_port, run_tool

pytestmark = pytest.mark.slow

STUDENT = REPO / 'configs' / 'quickstart' / (
    'student_pspnet_r18-d8-w16_synthcity-64x128.py')


def _options(root, hooks=True, val_interval=2):
    """4 iterations, checkpoints at 2 and 4, validation right after the
    checkpoint at 2 (the PSPNet head has dropout, so a shifted torch
    generator changes iteration 3)."""
    opts = [f'{k}.dataset.data_root={root}'
            for k in ('train_dataloader', 'val_dataloader',
                      'test_dataloader')]
    opts += ['train_cfg.max_iters=4', f'train_cfg.val_interval={val_interval}',
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


def _resumed_copy(src, dst, checkpoint=None, name='iter_2.pth'):
    dst.mkdir()
    ckpt = dst / name
    if checkpoint is None:
        shutil.copy(src / name, ckpt)
    else:
        torch.save(checkpoint, ckpt)
    (dst / 'last_checkpoint').write_text(str(ckpt))
    return dst


def _max_diff(a, b):
    sa = torch.load(a, weights_only=False)['state_dict']
    sb = torch.load(b, weights_only=False)['state_dict']
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item()
               for k in sa)


# ------------------------------------------- validation between (seg, iter)
@pytest.fixture(scope='module')
def straight(cityscapes_root, tmp_path_factory):
    """The uninterrupted 4-iteration run (validation at 2 and 4)."""
    one = tmp_path_factory.mktemp('straight')
    _train(one, cityscapes_root)
    return one


@pytest.mark.parametrize('hooks', [True, False], ids=['exact', 'mmengine'])
def test_half_then_resume_equals_one_run(hooks, straight, cityscapes_root,
                                         tmp_path):
    two = _resumed_copy(straight, tmp_path / 'two')
    proc = _train(two, cityscapes_root, hooks, resume=True)
    diff = _max_diff(straight / 'iter_4.pth', two / 'iter_4.pth')
    if hooks:
        assert 'Random generator states restored' in proc.stdout + \
            proc.stderr
        assert diff == 0.0
    else:  # the control: MMEngine's own resume re-seeds, and drifts
        assert diff > 0.0


def test_resume_without_optimizer_state_is_refused(straight, cityscapes_root,
                                                   tmp_path):
    ckpt = torch.load(straight / 'iter_2.pth', weights_only=False)
    del ckpt['optimizer']
    two = _resumed_copy(straight, tmp_path / 'two', ckpt)
    proc = _train(two, cityscapes_root, resume=True, check=False)
    assert proc.returncode != 0
    assert 'no [\'optimizer\'] state' in proc.stderr
    assert 'load_from' in proc.stderr


# ------------------------------------------ seed=None, workers (cls, CIFAR)
_RUN_IDS = itertools.count()

CLS_CFG = '''
_base_ = [{base!r}]
data_root = {root!r}
train_dataloader = dict(batch_size=16, num_workers={workers},
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=25, num_workers={workers},
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval={half}, max_keep_ckpts=3))
_tiny = dict(backbone=dict(channels=(4, 8, 16, 32)),
             head=dict(in_channels=32))
model = dict(student=_tiny, teacher=dict({teacher!r}, _delete_=True),
             teacher_ckpt={ckpt!r})
'''

# The CIFAR recipe's epoch loop (DefaultSampler, 4 iterations an epoch), or
# an iteration loop with InfiniteSampler (its indices and, with workers, the
# worker processes exist before the checkpoint is loaded).
LOOPS = {
    'epoch': dict(train_cfg=dict(by_epoch=True, max_epochs=2,
                                 val_interval=1),
                  half=1, ckpt='epoch_{}.pth'),
    'iter': dict(train_cfg=dict(by_epoch=False, max_iters=6, val_interval=3),
                 half=3, ckpt='iter_{}.pth',
                 extra=dict(train_dataloader=dict(
                     sampler=dict(type='InfiniteSampler', shuffle=True)),
                     log_processor=dict(by_epoch=False),
                     default_hooks=dict(checkpoint=dict(by_epoch=False)))),
}
# The iteration loop with replayed views (mmrankkd.ReplaySampler around the
# InfiniteSampler, mmrankkd.ReplayDataset around the data set): the
# sampler seed restored through the wrapper, the views' passes counted
# again from the restored index stream.
LOOPS['replay'] = dict(LOOPS['iter'], replay=True, extra=dict(
    LOOPS['iter']['extra'], train_dataloader=dict(sampler=dict(
        type='mmrankkd.ReplaySampler',
        sampler=dict(type='InfiniteSampler', shuffle=True)))))
# The same around a DefaultSampler in the iteration loop (set_epoch at each
# pass's end): the resumed loop's first iterator, started and dropped by
# the seed restore, must not count as a pass of the epoch.
LOOPS['replay-epoch'] = dict(LOOPS['epoch'], replay=True, extra=dict(
    train_dataloader=dict(sampler=dict(
        type='mmrankkd.ReplaySampler',
        sampler=dict(type='DefaultSampler', shuffle=True)))))
LOOPS['replay-default'] = dict(LOOPS['replay'], extra=dict(
    LOOPS['iter']['extra'], train_dataloader=dict(sampler=dict(
        type='mmrankkd.ReplaySampler',
        sampler=dict(type='DefaultSampler', shuffle=True)))))


@pytest.fixture(scope='module')
def cifar(tmp_path_factory):
    """Tiny CIFAR-100 (64 training images) and a random tiny teacher."""
    from mmengine.registry import DefaultScope

    from mmrankkd.datasets.synthetic_cifar import make_synthetic_cifar100
    from mmrankkd.registry import MODELS
    d = tmp_path_factory.mktemp('cifar_resume')
    root = make_synthetic_cifar100(str(d / 'data'), num_train=64,
                                   num_test=25)
    teacher = Config.fromfile(str(CLS_DISTILL)).model.student.to_dict()
    teacher['backbone']['channels'] = (4, 8, 16, 32)
    teacher['head']['in_channels'] = 32
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(teacher)
    torch.save(model.state_dict(), d / 'teacher.pth')
    return dict(root=root, teacher=teacher,
                ckpt=str(d / 'teacher.pth'), dir=d)


def _cls_train(cifar, loop, workers, work_dir, resume=False):
    """Train the CIFAR distillation config in-process (CIFAR100 checks md5
    sums, switched off here); ``randomness.seed`` is the recipe's None."""
    from mmengine.runner import Runner

    from mmrankkd.datasets.synthetic_cifar import disable_cifar100_md5_check
    spec = LOOPS[loop]
    path = cifar['dir'] / f'{loop}_{workers}.py'
    path.write_text(CLS_CFG.format(
        base=str(CLS_DISTILL), root=cifar['root'], workers=workers,
        half=spec['half'], teacher=cifar['teacher'], ckpt=cifar['ckpt']))
    cfg = Config.fromfile(str(path))
    cfg.train_cfg = spec['train_cfg']
    cfg.merge_from_dict(spec.get('extra', {}))
    if spec.get('replay'):
        cfg.train_dataloader.dataset = dict(
            type='mmrankkd.ReplayDataset', seed=0,
            dataset=cfg.train_dataloader.dataset)
    assert cfg.randomness.seed is None
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'resume_{next(_RUN_IDS)}'
    cfg.resume = resume
    with disable_cifar100_md5_check():
        runner = Runner.from_cfg(cfg)
        runner.train()
    return runner


@pytest.mark.parametrize('loop,workers', [
    ('epoch', 0),
    ('iter', 2),
    ('replay', 2),
    ('replay-default', 2),
    ('replay-epoch', 2),
    pytest.param('epoch', 2, marks=pytest.mark.matrix),
    pytest.param('iter', 0, marks=pytest.mark.matrix),
])
def test_seed_none_resume_equals_one_run(loop, workers, cifar, tmp_path):
    spec = LOOPS[loop]
    one = tmp_path / 'one'
    first = _cls_train(cifar, loop, workers, one)
    half = spec['ckpt'].format(spec['half'])
    two = _resumed_copy(one, tmp_path / 'two', name=half)
    second = _cls_train(cifar, loop, workers, two, resume=True)
    # Fresh seeds in each process; the resumed one got the checkpoint's.
    assert second.seed == first.seed
    end = spec['ckpt'].format(2 * spec['half'])
    assert _max_diff(one / end, two / end) == 0.0


@pytest.mark.parametrize('loop', ['iter', 'epoch'])
def test_resumed_at_the_end_validates_without_reloading(loop, cifar,
                                                        tmp_path,
                                                        monkeypatch):
    """A run stopped during its final validation has its final
    checkpoint (written before that validation) but not its score. Resumed
    from it, the run validates it; an iteration loop skips its trained
    batches without loading them (only validation reads samples)."""
    from mmengine.dataset import BaseDataset
    spec = LOOPS[loop]
    one = tmp_path / 'one'
    first = _cls_train(cifar, loop, 0, one)
    final = first.message_hub.get_scalar('val/accuracy/top1').current()
    end = spec['ckpt'].format(2 * spec['half'])
    two = _resumed_copy(one, tmp_path / 'two', name=end)
    loads = []
    get = BaseDataset.__getitem__
    monkeypatch.setattr(BaseDataset, '__getitem__',
                        lambda self, i: loads.append(i) or get(self, i))
    second = _cls_train(cifar, loop, 0, two, resume=True)
    assert second.message_hub.get_scalar(
        'val/accuracy/top1').current() == final
    log = next(two.glob('*/*.log')).read_text()
    assert 'Resumed from the final checkpoint: validating it' in log
    assert len(loads) == 25  # the validation set, once


# --------------------------------------------------------- two gloo ranks
DIST_OPTIONS = ['randomness.seed=0', 'randomness.diff_rank_seed=True']


def _torchrun(work_dir, root, port, resume=False):
    args = [str(Path(PY).parent / 'torchrun'), '--nproc_per_node', '2',
            '--master_port', str(port), 'tools/train.py', str(STUDENT),
            '--launcher', 'pytorch', '--work-dir', str(work_dir)]
    args += ['--resume'] if resume else []
    args += ['--cfg-options', *_options(root, val_interval=100),
             *DIST_OPTIONS]
    return run_tool(args)


def test_two_gloo_ranks_resume_equals_one_run(cityscapes_root, tmp_path):
    """Each rank draws its own stream (diff_rank_seed): every rank must
    get its own states back, not rank 0's."""
    one = tmp_path / 'one'
    _torchrun(one, cityscapes_root, free_port())
    ckpt = torch.load(one / 'iter_2.pth', weights_only=False)
    ranks = ckpt['rng_states']['ranks']
    assert len(ranks) == 2
    assert not torch.equal(ranks[0]['torch'], ranks[1]['torch'])
    two = _resumed_copy(one, tmp_path / 'two')
    _torchrun(two, cityscapes_root, free_port(), resume=True)
    assert _max_diff(one / 'iter_4.pth', two / 'iter_4.pth') == 0.0


def test_other_world_size_warns_and_does_not_restore(cifar, tmp_path):
    """A checkpoint of 2 ranks resumed by 1 process: the states are not
    restored (not rank 0's either) and the warning names both sizes."""
    one = tmp_path / 'one'
    _cls_train(cifar, 'epoch', 0, one)
    ckpt = torch.load(one / 'epoch_1.pth', weights_only=False)
    saved = ckpt['rng_states']
    assert saved['world_size'] == 1 and len(saved['ranks']) == 1
    saved.update(world_size=2, ranks=saved['ranks'] * 2)
    two = _resumed_copy(one, tmp_path / 'two', ckpt, name='epoch_1.pth')
    _cls_train(cifar, 'epoch', 0, two, resume=True)
    log = '\n'.join(p.read_text() for p in two.glob('*/*.log'))
    assert 'was saved by 2 ranks, this run has 1' in log
    assert 'Random generator states restored' not in log
