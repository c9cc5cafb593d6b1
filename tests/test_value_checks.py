"""Deferred value checks are read at the end of every epoch, before every
checkpoint and at the end of training (mmrankkd.ValueCheckHook), so the
last calls of a run are checked and no checkpoint follows an unread NaN or
bad label (issue 15 item 6)."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import mmrankkd  # noqa: F401
from conftest import SEG_DISTILL, free_port, seg_distill_config
from mmrankkd.engine import ValueCheckHook
from mmrankkd.models.losses import KDLoss, PlackettLuceLoss
from mmrankkd.models.losses import utils as loss_utils
from test_distiller import save_teacher, tiny_seg


def _logits(n=4, c=5, nan=False):
    x = torch.randn(n, c)
    if nan:
        x[0, 0] = float('nan')
    return x


def test_flush_reads_the_pending_calls_and_names_them(monkeypatch):
    reads = []
    read = loss_utils._read
    monkeypatch.setattr(loss_utils, '_read',
                        lambda *a: reads.append(1) or read(*a))
    loss = KDLoss(validate_interval=100)
    loss(_logits(), _logits())  # call 1: read at once
    loss.flush()  # nothing pending: no read
    assert len(reads) == 1
    loss(_logits(), _logits())
    loss(_logits(nan=True), _logits())  # call 3: deferred
    assert len(reads) == 1
    with pytest.raises(ValueError, match=r'student logits contain NaN.*'
                       r'deferred check of calls 2-3\b'):
        loss.flush()
    loss.flush()  # read once: nothing pending any more
    assert len(reads) == 2


def test_clamped_labels_are_named_with_the_training_iterations():
    loss = PlackettLuceLoss(validate_interval=100)
    loss.align_iterations(10)  # a resumed run: the next call is iter 11
    labels = torch.tensor([0, 1, 2, 3])
    loss(_logits(), _logits(), labels)  # call 1 (iteration 11): read
    loss(_logits(), _logits(), torch.tensor([0, 1, 7, 3]))  # clamped
    loss(_logits(), _logits(), labels)
    with pytest.raises(ValueError) as err:
        loss.flush()
    message = str(err.value)
    assert 'labels contain 7, outside [0, 5)' in message
    assert 'calls 2-3, training iterations 12-13' in message
    assert 'trained with the labels clamped into [0, 5)' in message


class _Poison(Hook):
    """Spoils the last training iteration: a NaN student weight, or a
    label outside the classes (19) that is not the ignore label."""

    def __init__(self, what):
        self.what = what

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter != runner.max_iters - 1:
            return
        if self.what == 'nan':
            with torch.no_grad():
                runner.model.student.decode_head.conv_seg.bias[0] = float(
                    'nan')
        else:
            data_batch['data_samples'][0].gt_sem_seg.data[..., :8, :8] = 40


def _runner(tmp_path, root, hooks, ckpt_interval, poison):
    model = tiny_seg(8)
    model['data_preprocessor']['size'] = (64, 64)
    if poison == 'label':
        # mmseg's cross-entropy would fail on label 40 itself; Dice clamps
        # (and so trains on) labels outside the classes: only the
        # distillation losses' checks can see them.
        for head in ('decode_head', 'auxiliary_head'):
            model[head]['loss_decode'] = dict(type='DiceLoss')
    ckpt, _ = save_teacher(model, tmp_path / 't.pth')
    model_file = tmp_path / 'pspnet.py'
    model_file.write_text(f'model = {model!r}\n')
    cfg = Config.fromfile(seg_distill_config(
        tmp_path / 'cfg.py', root, str(model_file), str(model_file), ckpt,
        base=SEG_DISTILL))
    cfg.work_dir = str(tmp_path / 'wd')
    cfg.train_cfg.val_interval = 100  # no validation: train and save only
    cfg.default_hooks.checkpoint.interval = ckpt_interval
    cfg.custom_hooks = hooks
    cfg.log_level = 'WARNING'
    runner = Runner.from_cfg(cfg)
    runner.register_hook(_Poison(poison))
    return runner


@pytest.mark.parametrize('what,ckpt_interval,calls', [
    # read before the checkpoint of iteration 2, then before that of 4
    ('nan', 2, 'calls 3-4, training iterations 3-4'),
    # no checkpoint: read at the end of training
    ('label', 100, 'calls 2-4, training iterations 2-4'),
])
def test_bad_last_calls_are_reported_and_never_checkpointed(
        what, ckpt_interval, calls, tmp_path, cityscapes_root):
    """4 iterations, validate_interval=100 (call 1 is read at once);
    the last one goes bad."""
    runner = _runner(tmp_path, cityscapes_root,
                     [dict(type='mmrankkd.ValueCheckHook')], ckpt_interval,
                     what)
    match = ('student logits contain NaN' if what == 'nan' else
             r'labels contain 40, outside \[0, 19\)')
    with pytest.raises(ValueError, match=match) as err:
        runner.train()
    assert calls in str(err.value)
    wd = tmp_path / 'wd'
    if what == 'nan':  # raised before the checkpoint of iteration 4
        assert (wd / 'iter_2.pth').is_file()
        assert not (wd / 'iter_4.pth').exists()
    assert not list(wd.glob('iter_*.pth')) or what == 'nan'


def test_without_the_hook_a_runner_warns(tmp_path, cityscapes_root,
                                         monkeypatch):
    """The shipped configs list the hook; a config that drops it gets a
    warning naming it (and its last calls go unchecked)."""
    from mmrankkd.models.distillers import logit_distiller
    logged = []
    monkeypatch.setattr(logit_distiller, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    runner = _runner(tmp_path, cityscapes_root, [], 100, 'nan')
    runner.train()  # the NaN of the last call is never read
    assert any("mmrankkd.ValueCheckHook" in m and 'Fix' in m
               for m in logged)


def test_flush_on_every_rank_when_a_checkpoint_is_due():
    """MMEngine writes checkpoints (and calls before_save_checkpoint) on
    rank 0 only: the hook reads every rank's pending checks right after
    the iteration a checkpoint ends, where all ranks still are."""
    from types import SimpleNamespace

    import torch.nn as nn
    from mmengine.hooks import CheckpointHook

    class Loss(nn.Module):
        flushed = 0

        def flush(self):
            self.flushed += 1

    loss = Loss()
    model = SimpleNamespace(distill_losses=nn.ModuleDict(dict(loss_x=loss)))
    runner = SimpleNamespace(
        model=model, iter=0, max_iters=10,
        hooks=[CheckpointHook(interval=4, by_epoch=False)])
    hook = ValueCheckHook()
    for it in range(10):
        runner.iter = it
        hook.after_train_iter(runner, it)
    # Iterations 4 and 8 (interval) and 10 (save_last).
    assert loss.flushed == 3


def _flush_on_two_ranks(rank, port, out):
    """One gloo rank: rank 1's loss has a failed deferred check."""
    from types import SimpleNamespace

    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=2)

    class Loss:
        def flush(self):
            if rank == 1:
                raise ValueError('KDLoss: NaN in the teacher logits (call 7)')

    runner = SimpleNamespace(model=SimpleNamespace(
        distill_losses={'loss_kd': Loss()}))
    try:
        ValueCheckHook().after_train_epoch(runner)
        result = 'no error'
    except ValueError as error:
        result = str(error)
    Path(out, f'rank{rank}.txt').write_text(result)
    dist.destroy_process_group()


def test_a_failed_check_on_one_rank_stops_every_rank(tmp_path):
    """At a read every rank makes, rank 1's failure is raised on rank 0 as
    well (naming rank 1), so the healthy rank does not go on to wait in
    its next collective."""
    torch.multiprocessing.spawn(_flush_on_two_ranks,
                                args=(free_port(), str(tmp_path)), nprocs=2)
    rank0 = (tmp_path / 'rank0.txt').read_text()
    rank1 = (tmp_path / 'rank1.txt').read_text()
    assert rank1.startswith('KDLoss: NaN in the teacher logits')
    assert rank0.startswith('Rank 1 of 2 failed') and 'call 7' in rank0
