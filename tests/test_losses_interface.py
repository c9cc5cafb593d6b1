"""Behaviour every loss shares: the interface the distiller relies on
(ignore_index as a plain attribute, no label ignored by default, value
checks read on the first call and every validate_interval calls)."""
import pytest
import torch

import mmrankkd.models.losses as losses
from mmrankkd.registry import MODELS

IGNORE = 255

# name -> constructor kwargs used in these tests (small, non-default values
# where a default would hide a bug, e.g. T != 1).
CASES = {
    'KDLoss': dict(temperature=2.0),
    'DISTLoss': dict(beta=1.0, gamma=2.0, temperature=2.0),
    'CWDLoss': dict(temperature=2.0),
    'DKDLoss': dict(alpha=1.0, beta=2.0, temperature=2.0),
    'BalanceDivergenceLoss': dict(forward_temperature=2.0,
                                  reverse_temperature=3.0,
                                  forward_weight=1.0, reverse_weight=0.5),
    'BalanceDivergenceLoss/channel': dict(forward_temperature=2.0,
                                          reverse_temperature=3.0,
                                          reverse_weight=0.5,
                                          mode='channel'),
    'KendallRankLoss': dict(steepness=2.0),
    'KendallRankLoss/topk': dict(steepness=2.0, topk=3, surrogate='erf'),
    'CorrelationMatchingLoss': dict(temperature=2.0, rank_eps=0.5),
    'PlackettLuceLoss': dict(teacher_temperature=2.0),
    'DeiTDistillationLoss': dict(mode='hard'),
    'DeiTDistillationLoss/soft': dict(mode='soft', temperature=2.0),
    'WTTMLoss': dict(gamma=0.5),
    'TTMLoss': dict(gamma=0.5),
    'CTKDLoss': dict(t_start=1.0, t_end=3.0, grl_lambda=-0.5),
    'KDLoss/ls': dict(temperature=2.0, logit_standardization=True),
    'DKDLoss/ls': dict(alpha=1.0, beta=2.0, temperature=2.0,
                       logit_standardization=True),
}
# Losses on two views (another call): tests/test_mlkd_loss.py.
TWO_VIEW = {'MLKDLoss'}
DENSE_ONLY = {'CWDLoss', 'BalanceDivergenceLoss/channel'}
# Pixel-wise losses: dense input == its pixels as rows.
ROW_WISE = [name for name in CASES if name not in DENSE_ONLY]
# Zero (and a stationary point) at student == teacher. DIST's official
# Pearson form adds eps = 1e-8 to the norm product, so there it is
# eps / |p'|^2 (~1e-6 here), not 0.
ZERO_MINIMUM = {'KDLoss': 1e-6, 'DISTLoss': 1e-5, 'CWDLoss': 1e-6,
                'DKDLoss': 1e-6, 'BalanceDivergenceLoss': 1e-6,
                'BalanceDivergenceLoss/channel': 1e-6,
                'DeiTDistillationLoss/soft': 1e-6, 'CTKDLoss': 1e-6,
                'KDLoss/ls': 1e-6, 'DKDLoss/ls': 1e-6}


def build(name, **extra):
    # Scope-qualified, as configs write it: a bare name would be looked up
    # in whatever default scope an earlier in-process runner left (mmseg).
    cfg = dict(type='mmrankkd.' + name.split('/')[0], **CASES[name])
    cfg.update(extra)
    return MODELS.build(cfg)


def shapes_for(name):
    dense = (2, 5, 3, 4)
    return [dense] if name in DENSE_ONLY else [(6, 5), dense]


def make_inputs(shape, dtype=torch.float32, scale=2.0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    student = (torch.randn(shape, generator=gen) * scale).to(dtype)
    teacher = (torch.randn(shape, generator=gen) * scale).to(dtype)
    label_shape = (shape[0], ) + tuple(shape[2:])
    labels = torch.randint(0, shape[1], label_shape, generator=gen)
    return student, teacher, labels


def test_exports_and_registry():
    assert sorted(losses.__all__) == sorted(
        {name.split('/')[0] for name in CASES} | TWO_VIEW)
    for name in losses.__all__:
        cls = getattr(losses, name)
        assert MODELS.get(name) is cls
        assert MODELS.get(f'mmrankkd.{name}') is cls
        assert cls.requires_labels == (name in ('PlackettLuceLoss',
                                                'DKDLoss'))


@pytest.mark.parametrize('name', CASES)
def test_scalar_weighted_and_teacher_gets_no_grad(name):
    for shape in shapes_for(name):
        student, teacher, labels = make_inputs(shape)
        student.requires_grad_()
        teacher.requires_grad_()
        loss = build(name)(student, teacher, labels)
        assert loss.dim() == 0 and loss.dtype == torch.float32
        assert torch.isfinite(loss) and loss > 0
        loss.backward()
        assert teacher.grad is None
        assert student.grad is not None and student.grad.abs().sum() > 0
        weighted = build(name, loss_weight=3.0)(student, teacher, labels)
        torch.testing.assert_close(weighted, 3 * loss.detach())


@pytest.mark.parametrize('name', ZERO_MINIMUM)
def test_zero_and_stationary_when_student_equals_teacher(name):
    for shape in shapes_for(name):
        _, teacher, labels = make_inputs(shape)
        student = teacher.clone().requires_grad_()
        loss = build(name)(student, teacher, labels)
        loss.backward()
        assert abs(loss.item()) < ZERO_MINIMUM[name]
        assert student.grad.abs().max() < 1e-6


@pytest.mark.parametrize('name', ROW_WISE)
def test_dense_equals_pixels_as_rows(name):
    student, teacher, labels = make_inputs((2, 5, 3, 4))
    labels[0, 1, :] = IGNORE  # some ignored pixels
    loss_fn = build(name, ignore_index=IGNORE)
    dense = loss_fn(student, teacher, labels)

    def rows(x):
        return x.permute(0, 2, 3, 1).reshape(-1, 5)

    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE
    # Ignored pixels are left out entirely: same as removing the rows.
    removed = loss_fn(rows(student)[keep], rows(teacher)[keep],
                      flat_labels[keep])
    masked = loss_fn(rows(student), rows(teacher), flat_labels)
    torch.testing.assert_close(dense, removed)
    torch.testing.assert_close(dense, masked)
    # ...and the ignored pixels' logits do not matter.
    student2 = student.clone()
    student2[0, :, 1, :] += 100 * torch.randn(5, 4)
    torch.testing.assert_close(loss_fn(student2, teacher, labels), dense)


@pytest.mark.parametrize('name', sorted(DENSE_ONLY))
def test_channel_losses_ignore_pixels(name):
    """Ignored pixels change nothing: ignoring the last image row equals
    cropping it away; their logits do not matter."""
    student, teacher, labels = make_inputs((2, 5, 3, 4))
    labels[:, 2, :] = IGNORE
    loss_fn = build(name, ignore_index=IGNORE)
    dense = loss_fn(student, teacher, labels)
    cropped = loss_fn(student[:, :, :2].contiguous(),
                      teacher[:, :, :2].contiguous(), labels[:, :2])
    torch.testing.assert_close(dense, cropped)
    student[:, :, 2] += 50.
    torch.testing.assert_close(loss_fn(student, teacher, labels), dense)
    # An image with every pixel ignored is left out of the mean.
    labels[1] = IGNORE
    torch.testing.assert_close(
        loss_fn(student, teacher, labels),
        loss_fn(student[:1], teacher[:1], labels[:1]))


@pytest.mark.parametrize('name', CASES)
def test_all_ignored_gives_zero_with_grad(name):
    for shape in shapes_for(name):
        student, teacher, labels = make_inputs(shape)
        student.requires_grad_()
        labels.fill_(IGNORE)
        loss = build(name, ignore_index=IGNORE)(student, teacher, labels)
        assert loss.item() == 0 and loss.requires_grad
        loss.backward()
        assert torch.equal(student.grad, torch.zeros_like(student))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
@pytest.mark.parametrize('name', CASES)
def test_half_precision_computed_in_float32(name, dtype):
    for shape in shapes_for(name):
        student, teacher, labels = make_inputs(shape, dtype=dtype)
        student.requires_grad_()
        loss_fn = build(name)
        loss = loss_fn(student, teacher, labels)
        assert loss.dtype == torch.float32
        reference = loss_fn(student.detach().float(), teacher.float(), labels)
        # Same rounded inputs, float32 arithmetic: equal up to fp32 noise.
        torch.testing.assert_close(loss.detach(), reference)
        loss.backward()
        assert student.grad.dtype == dtype
        assert torch.isfinite(student.grad.float()).all()


# Their official Pearson form has a gradient ~ b' / 1e-8 at a constant
# (saturated) column: finite in float32, beyond fp16's range; the
# zero_grad_where_constant option keeps fp16 gradients finite.
OFFICIAL_PEARSON = {'DISTLoss', 'CorrelationMatchingLoss'}
# Logit standardization's gradient at a constant student row (here: rows of
# equal signs) is (g - mean g) / 1e-7, the authors' epsilon: finite in
# float32, beyond fp16's range.
STANDARDIZED = {'KDLoss/ls', 'DKDLoss/ls'}


@pytest.mark.parametrize('name', CASES)
def test_large_magnitude_logits_stay_finite(name):
    dtypes = (torch.float32, ) if name in STANDARDIZED else (
        torch.float32, torch.float16)
    for dtype in dtypes:
        for shape in shapes_for(name):
            student, teacher, labels = make_inputs(shape, scale=1.)
            student = (student.sign() * 1e4).to(dtype).requires_grad_()
            teacher = (teacher * 1e4).clamp(-1e4, 1e4).to(dtype)
            extra = dict(zero_grad_where_constant=True) if (
                dtype == torch.float16 and name in OFFICIAL_PEARSON) else {}
            loss = build(name, **extra)(student, teacher, labels)
            loss.backward()
            assert torch.isfinite(loss)
            assert torch.isfinite(student.grad.float()).all()


@pytest.mark.parametrize('name', CASES)
def test_gradcheck_float64(name):
    shapes = [(2, 4, 2, 3)] if name in DENSE_ONLY else [(3, 5), (2, 4, 2, 3)]
    for shape in shapes:
        student, teacher, labels = make_inputs(shape, dtype=torch.float64,
                                               scale=1.0)
        student.requires_grad_()
        loss_fn = build(name)
        assert torch.autograd.gradcheck(
            lambda s: loss_fn(s, teacher, labels), (student, ))


def _raises(loss_fn, *args, match):
    with pytest.raises(ValueError, match=match):
        loss_fn(*args)


@pytest.mark.parametrize('name', CASES)
def test_bad_inputs_raise_value_error(name):
    # 'always': every call reads the value checks; with an ignore_index
    # every loss reads (and checks) the labels.
    loss_fn = build(name, validate='always', ignore_index=IGNORE)
    shape = shapes_for(name)[-1]
    student, teacher, labels = make_inputs(shape)
    other = torch.randn(shape[0], shape[1] + 1, *shape[2:])
    _raises(loss_fn, student, other, labels,
            match=rf'student logits \({", ".join(map(str, shape))}\) and '
            rf'teacher logits \({", ".join(map(str, other.shape))}\) differ')
    _raises(loss_fn, student[0], teacher[0], labels,
            match=r'2-D \(N, C\) or 4-D \(N, C, H, W\), got 3-D')
    _raises(loss_fn, student, teacher, labels[:1], match='labels of shape')
    _raises(loss_fn, student, teacher, labels.unsqueeze(1),
            match=r'labels of shape.*squeeze')
    _raises(loss_fn, student, teacher, labels.float(),
            match='integer class indices')
    bad_labels = labels.clone()
    bad_labels.view(-1)[0] = shape[1]
    _raises(loss_fn, student, teacher, bad_labels,
            match=rf'labels contain {shape[1]}, outside \[0, {shape[1]}\) '
            rf'and not ignore_index={IGNORE}')
    bad_labels.view(-1)[0] = -1
    _raises(loss_fn, student, teacher, bad_labels,
            match=rf'labels contain -1, outside \[0, {shape[1]}\)')
    for role in ('student', 'teacher'):
        for value in (float('nan'), float('inf')):
            broken = {'student': student.clone(), 'teacher': teacher.clone()}
            broken[role].view(-1)[3] = value
            _raises(loss_fn, broken['student'], broken['teacher'], labels,
                    match=f'{role} logits contain NaN or Inf')
    if loss_fn.requires_labels:
        _raises(loss_fn, student, teacher, None, match='requires labels')
    else:
        assert torch.isfinite(loss_fn(student, teacher))


@pytest.mark.parametrize('name', sorted(DENSE_ONLY))
def test_dense_only_losses_reject_classification_logits(name):
    student, teacher, labels = make_inputs((4, 5))
    fix = 'KDLoss or DISTLoss' if name == 'CWDLoss' else "mode='pixel'"
    with pytest.raises(ValueError, match=rf'needs dense \(N, C, H, W\).*'
                       rf'{fix}'):
        build(name)(student, teacher, labels)


def test_bad_constructor_arguments():
    for cfg in (dict(type='mmrankkd.KendallRankLoss', surrogate='relu'),
                dict(type='mmrankkd.KendallRankLoss', topk=0),
                dict(type='mmrankkd.BalanceDivergenceLoss', mode='spatial'),
                dict(type='mmrankkd.CorrelationMatchingLoss',
                     weighting='learned'),
                dict(type='mmrankkd.KDLoss', temperature=0),
                dict(type='mmrankkd.KDLoss', validate='sometimes'),
                dict(type='mmrankkd.KDLoss', validate_interval=0),
                dict(type='mmrankkd.KendallRankLoss', block_bytes=0)):
        with pytest.raises(ValueError):
            MODELS.build(cfg)


@pytest.mark.parametrize('name', CASES)
def test_no_label_is_ignored_by_default(name):
    """ignore_index=None: 255 is a class like any other; where labels are
    read (requires_labels), one outside [0, C) is a named error."""
    loss_fn = build(name)
    assert loss_fn.ignore_index is None
    shape = shapes_for(name)[-1]
    student, teacher, labels = make_inputs(shape)
    labels.view(-1)[0] = IGNORE
    if loss_fn.requires_labels:
        _raises(loss_fn, student, teacher, labels,
                match=rf'labels contain {IGNORE}, outside \[0, {shape[1]}\) '
                'and no ignore_index')
    else:  # labels not read at all
        assert torch.isfinite(loss_fn(student, teacher, labels))


@pytest.mark.parametrize('name', ['PlackettLuceLoss', 'DKDLoss'])
def test_class_255_of_1000_trains(name):
    """ImageNet: images of class 255 get a gradient from the
    label-dependent losses (they used to be ignored)."""
    student, teacher, labels = make_inputs((4, 1000))
    labels[1] = 255
    student.requires_grad_()
    build(name)(student, teacher, labels).backward()
    assert student.grad[1].abs().sum() > 1e-3
    # ...unless the user says 255 is the ignore label.
    student.grad = None
    build(name, ignore_index=255)(student, teacher, labels).backward()
    assert student.grad[1].abs().sum() == 0
    assert student.grad[0].abs().sum() > 1e-3


@pytest.mark.parametrize('name', ROW_WISE)
def test_ignore_index_is_read_at_call_time(name):
    """The distiller sets ``loss.ignore_index`` after building the loss."""
    student, teacher, labels = make_inputs((2, 5, 3, 4))
    labels[0, 1, :] = IGNORE
    loss_fn = build(name, validate='always')
    expected = build(name, ignore_index=IGNORE)(student, teacher, labels)
    loss_fn.ignore_index = IGNORE
    torch.testing.assert_close(loss_fn(student, teacher, labels), expected)
    loss_fn.ignore_index = None
    if loss_fn.requires_labels:
        _raises(loss_fn, student, teacher, labels, match='labels contain')


def test_deferred_checks_raise_within_the_interval():
    """Default 'deferred': the first call raises at once; later bad calls
    raise at the next multiple of validate_interval, naming the calls."""
    student, teacher, labels = make_inputs((6, 5))
    broken = student.clone()
    broken[2, 1] = float('nan')
    loss_fn = build('DKDLoss', validate_interval=4)
    _raises(loss_fn, broken, teacher, labels,
            match='student logits contain NaN or Inf')  # call 1
    assert torch.isfinite(loss_fn(student, teacher, labels))  # 2
    assert torch.isnan(loss_fn(broken, teacher, labels))  # 3: not read yet
    bad_labels = labels.clone()
    bad_labels[0] = 7
    _raises(loss_fn, student, teacher, labels,  # 4: the read
            match=r'student logits contain NaN or Inf \(deferred check of '
            r'calls 2-4')
    assert torch.isfinite(loss_fn(student, teacher, bad_labels))  # 5
    for _ in range(2):  # 6, 7
        loss_fn(student, teacher, labels)
    _raises(loss_fn, student, teacher, labels,  # 8
            match=r'labels contain 7, outside \[0, 5\).*calls 5-8')
    for _ in range(4):  # 9-12: clean again
        loss_fn(student, teacher, labels)


def test_validate_always_and_off():
    student, teacher, labels = make_inputs((6, 5))
    broken = student.clone()
    broken[0, 0] = float('inf')
    always = build('KDLoss', validate='always')
    off = build('KDLoss', validate='off')
    for _ in range(3):
        _raises(always, broken, teacher, labels, match='student logits')
        assert not torch.isfinite(off(broken, teacher, labels))
    teacher_nan = teacher.clone()
    teacher_nan[1, 1] = float('nan')
    _raises(always, student, teacher_nan, labels,
            match='teacher logits contain NaN or Inf')
