"""DistillLossWeightScheduleHook: the warm-up weights at given epochs and
iterations, their continuation across resume, logging, DDP unwrapping and
its errors, with real mmengine Runners on a tiny toy distiller."""
import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub
from mmengine.model import BaseModel
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner
from torch.utils.data import Dataset

import mmrankkd  # noqa: F401
from mmrankkd.engine.hooks import DistillLossWeightScheduleHook

_RUN_IDS = itertools.count()


class ToyLoss(nn.Module):

    def __init__(self, loss_weight):
        super().__init__()
        self.loss_weight = loss_weight

    def forward(self, x):
        return x.pow(2).mean() * self.loss_weight


class ToyDistiller(BaseModel):
    """Exposes ``distill_losses`` as LogitDistiller does; records the loss
    weights it trains with at every step."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.distill_losses = nn.ModuleDict(
            dict(loss_a=ToyLoss(0.5), loss_b=ToyLoss(2.0)))
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(inputs)
        if mode != 'loss':
            return out
        self.seen.append({n: l.loss_weight
                          for n, l in self.distill_losses.items()})
        return {f'distill.{n}': l(out)
                for n, l in self.distill_losses.items()}


class ToyData(Dataset):
    metainfo = dict()

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i)))


def _runner(work_dir, train_cfg, hook, resume=False, model=None,
            ckpt_interval=1):
    by_epoch = train_cfg.get('by_epoch', True)
    return Runner(
        model=model or ToyDistiller(),
        work_dir=str(work_dir),
        experiment_name=f'loss_weight_schedule_{next(_RUN_IDS)}',
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,  # 4 iterations per epoch
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=train_cfg,
        custom_hooks=[hook],
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type='CheckpointHook', interval=ckpt_interval,
                            by_epoch=by_epoch)),
        log_processor=dict(by_epoch=by_epoch),
        resume=resume,
        default_scope='mmengine')


def _weights(model, name='loss_a'):
    return [seen[name] for seen in model.seen]


HOOK = dict(type='mmrankkd.DistillLossWeightScheduleHook',
            losses=['loss_a'], warmup=4, by_epoch=True)


def test_factor_is_mdistillers_rule():
    # mdistiller DKD: min(epoch / warmup, 1.0), epochs counted from 1.
    hook = DistillLossWeightScheduleHook(losses='loss_dkd', warmup=20)
    assert [hook.factor(e) for e in (1, 2, 10, 19, 20, 21, 240)] == [
        0.05, 0.1, 0.5, 0.95, 1.0, 1.0, 1.0]


def test_by_epoch_weights_and_log(tmp_path):
    runner = _runner(tmp_path, dict(by_epoch=True, max_epochs=5), HOOK)
    runner.train()
    model = runner.model
    # 4 iterations per epoch, constant within an epoch, base weight 0.5.
    expected = [0.5 * min(e / 4, 1.0) for e in range(1, 6) for _ in range(4)]
    assert _weights(model) == pytest.approx(expected)
    # Losses not named keep their weight.
    assert _weights(model, 'loss_b') == [2.0] * 20
    hub = runner.message_hub
    assert hub.get_scalar('train/distill_weight.a').current() == 0.5
    log = next(tmp_path.glob('*/*.log')).read_text()
    assert 'distill_weight.a: 0.1250' in log
    assert 'distill_weight.a: 0.5000' in log
    assert 'distill_weight.b' not in log


def test_by_epoch_resume_continues_the_schedule(tmp_path):
    full = _runner(tmp_path / 'full', dict(by_epoch=True, max_epochs=5),
                   HOOK)
    full.train()
    expected = _weights(full.model)

    first = _runner(tmp_path / 'resumed', dict(by_epoch=True, max_epochs=2),
                    HOOK)
    first.train()
    assert _weights(first.model) == expected[:8]
    second = _runner(tmp_path / 'resumed', dict(by_epoch=True, max_epochs=5),
                     HOOK, resume=True)
    second.train()
    assert second.model.seen, 'the resumed run trained nothing'
    # Epochs 3, 4, 5 of the uninterrupted run: 0.375, then 0.5.
    assert _weights(second.model) == pytest.approx(expected[8:])
    assert _weights(second.model)[0] == pytest.approx(0.375)


def test_by_iter_weights_and_resume(tmp_path):
    hook = dict(HOOK, warmup=8, by_epoch=False)
    full = _runner(tmp_path / 'full', dict(by_epoch=False, max_iters=10),
                   hook, ckpt_interval=6)
    full.train()
    expected = [0.5 * min(i / 8, 1.0) for i in range(1, 11)]
    assert _weights(full.model) == pytest.approx(expected)

    first = _runner(tmp_path / 'resumed', dict(by_epoch=False, max_iters=6),
                    hook, ckpt_interval=6)
    first.train()
    second = _runner(tmp_path / 'resumed',
                     dict(by_epoch=False, max_iters=10), hook, resume=True,
                     ckpt_interval=6)
    second.train()
    assert _weights(second.model) == pytest.approx(expected[6:])


def test_all_losses_when_none_named(tmp_path):
    runner = _runner(tmp_path, dict(by_epoch=True, max_epochs=1),
                     dict(HOOK, losses=None, warmup=2))
    runner.train()
    assert _weights(runner.model) == [0.25] * 4
    assert _weights(runner.model, 'loss_b') == [1.0] * 4


def test_unknown_loss_name_is_a_clear_error(tmp_path):
    runner = _runner(tmp_path, dict(by_epoch=True, max_epochs=1),
                     dict(HOOK, losses=['loss_a', 'loss_dkd']))
    with pytest.raises(KeyError, match="'loss_dkd' is not in "
                       "model.distill_losses.*'loss_a', 'loss_b'"):
        runner.train()


def test_by_epoch_with_an_iteration_loop_is_an_error(tmp_path):
    runner = _runner(tmp_path, dict(by_epoch=False, max_iters=2), HOOK)
    with pytest.raises(ValueError, match='by_epoch=False'):
        runner.train()


@pytest.mark.parametrize('kwargs', [dict(warmup=0), dict(warmup=2.5),
                                    dict(losses=[])])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        DistillLossWeightScheduleHook(**dict(dict(warmup=1), **kwargs))


@MODEL_WRAPPERS.register_module(force=True)
class _FakeDDPForScheduleTest(nn.Module):
    """Stands in for MMDistributedDataParallel (needs a process group)."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def test_unwraps_model_wrappers():
    model = ToyDistiller()
    hub = MessageHub.get_instance('loss_weight_schedule_ddp')
    runner = SimpleNamespace(
        model=_FakeDDPForScheduleTest(model), epoch=2, iter=9,
        train_loop=None, message_hub=hub)
    hook = DistillLossWeightScheduleHook(losses='loss_a', warmup=4)
    hook.before_train(runner)
    assert model.distill_losses['loss_a'].loss_weight == pytest.approx(
        0.375)
    assert hub.get_scalar('train/distill_weight.a').current() == \
        pytest.approx(0.375)
    runner.epoch = 3
    hook.before_train_iter(runner, batch_idx=0)
    assert model.distill_losses['loss_a'].loss_weight == 0.5


def test_model_without_distill_losses_is_an_error():
    runner = SimpleNamespace(model=nn.Linear(1, 1), epoch=0, iter=0,
                             train_loop=None, message_hub=None)
    with pytest.raises(TypeError, match='distill_losses'):
        DistillLossWeightScheduleHook(warmup=2).before_train(runner)
