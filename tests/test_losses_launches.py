"""Launch and synchronisation budget of every loss (torch.profiler counts,
deterministic; times belong to tools/benchmark_losses.py, not here).

* At most 150 top-level aten operators per forward + backward of one call
  at the per-GPU logit shapes of the benchmark (a launch-bound loss costs
  ~5-10 us per operator on a GPU, whatever its size).
* No device -> host transfer (``.item()``, ``bool(tensor)``, boolean-mask
  selection) on a call after the first, until the deferred value checks
  are read (every ``validate_interval`` calls: one transfer).
"""
import pytest
import torch
from loss_profiling import aten_op_counts, host_syncs

from mmrankkd.models.losses.utils import READ_CHECKS
from mmrankkd.registry import MODELS

MAX_OPS = 150
LOSSES = {
    'KDLoss': {},
    'DISTLoss': {},
    'DKDLoss': {},
    'BalanceDivergenceLoss': {},
    'BalanceDivergenceLoss/channel': dict(mode='channel'),
    'CWDLoss': {},
    'PlackettLuceLoss': {},
    'KendallRankLoss': {},
    'CorrelationMatchingLoss': {},
    'DeiTDistillationLoss': {},
    'DeiTDistillationLoss/soft': dict(mode='soft'),
    'WTTMLoss': dict(gamma=0.1),
    'TTMLoss': dict(gamma=0.1),
    'CTKDLoss': dict(grl_lambda=-1.0),
    'KDLoss/ls': dict(temperature=2.0, logit_standardization=True),
    'DKDLoss/ls': dict(temperature=2.0, logit_standardization=True),
    'CWDLoss/ls': dict(logit_standardization=True),
}
# MLKDLoss takes two views: its budgets are in tests/test_mlkd_loss.py.
DENSE_ONLY = {'CWDLoss', 'BalanceDivergenceLoss/channel', 'CWDLoss/ls'}
# Per-GPU logits: ImageNet 32 and 256 images, CIFAR 64, Cityscapes decode
# head (1/8 of 512x1024) for 2 and 8 images.
SHAPES = [(32, 1000), (256, 1000), (64, 100), (2, 19, 64, 128),
          (8, 19, 64, 128)]


def build(name, **extra):
    return MODELS.build(
        dict(type='mmrankkd.' + name.split('/')[0], **LOSSES[name], **extra))


def inputs(shape, ignored=False):
    gen = torch.Generator().manual_seed(0)
    student = (torch.randn(shape, generator=gen) * 3).requires_grad_()
    teacher = torch.randn(shape, generator=gen) * 3
    labels = torch.randint(0, shape[1], (shape[0], ) + tuple(shape[2:]),
                           generator=gen)
    if ignored:
        labels[0, :4] = 255
    return student, teacher, labels


def cases():
    for name in LOSSES:
        for shape in SHAPES:
            if name in DENSE_ONLY and len(shape) == 2:
                continue
            yield name, shape, None
            if len(shape) == 4:  # the distiller sets mmseg's ignore label
                yield name, shape, 255


@pytest.mark.parametrize('name,shape,ignore_index', list(cases()))
def test_top_level_aten_ops_per_forward_backward(name, shape, ignore_index):
    loss_fn = build(name, ignore_index=ignore_index)
    student, teacher, labels = inputs(shape, ignore_index is not None)

    def step():
        student.grad = None
        loss_fn(student, teacher, labels).backward()

    step()  # the first call reads the value checks
    counts = aten_op_counts(step)
    total = sum(counts.values())
    assert total <= MAX_OPS, (total, counts.most_common(12))


@pytest.mark.parametrize('name', LOSSES)
@pytest.mark.parametrize('ignore_index', [None, 255])
def test_no_host_sync_after_the_first_call(name, ignore_index):
    shape = (2, 5, 3, 4) if name in DENSE_ONLY else (6, 5)
    if ignore_index is not None and name not in DENSE_ONLY:
        shape = (2, 5, 3, 4)
    loss_fn = build(name, ignore_index=ignore_index, validate_interval=3)
    student, teacher, labels = inputs(shape, ignore_index is not None)

    def step():
        loss_fn(student, teacher, labels).backward()

    reads = {READ_CHECKS: 1}
    assert host_syncs(step) == reads  # call 1: the checks are read
    assert not host_syncs(step)  # 2
    assert host_syncs(step) == reads  # 3: the deferred checks are read
    for call in (4, 5, 6, 7):  # 6: read
        assert host_syncs(step) == (reads if call == 6 else {})


def test_validate_always_reads_on_every_call_off_never():
    student, teacher, labels = inputs((6, 5))
    for validate, syncs in (('always', {READ_CHECKS: 1}), ('off', {})):
        loss_fn = build('KDLoss', validate=validate)
        for _ in range(3):
            assert host_syncs(lambda: loss_fn(student, teacher, labels).
                              backward()) == syncs
