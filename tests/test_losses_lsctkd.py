"""Logit standardization (any loss), TTM/WTTM and CTKD against
transcriptions of their authors' code (values and gradients, saturated and
uniform rows included), CTKD's curriculum hook through a real Runner
(schedule, log, resume), and the peak memory of the new losses."""
import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from loss_profiling import peak_extra_bytes
from mmengine.model import BaseModel
from mmengine.runner import Runner
from test_losses_interface import CASES, DENSE_ONLY, build
from torch.utils.data import Dataset

from mmrankkd.engine.hooks import CTKDScheduleHook
from mmrankkd.models.losses import CTKDLoss, TTMLoss, WTTMLoss
from mmrankkd.models.losses.utils import standardize


def rand(*shape, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def saturated_inputs(shape, seed=0):
    """Logits at scale 1e3 with one uniform student and teacher row."""
    student = rand(*shape, seed=seed, scale=1e3)
    teacher = rand(*shape, seed=seed + 1, scale=1e3)
    student[1] = 0.5
    teacher[2] = -3.0
    return student, teacher


def value_and_grad(fn, student):
    student = student.detach().clone().requires_grad_()
    value = fn(student)
    grad, = torch.autograd.grad(value, student)
    return value.detach(), grad


def assert_same(ours, theirs, student, rtol=1e-9, atol=1e-9):
    value, grad = value_and_grad(ours, student)
    ref_value, ref_grad = value_and_grad(theirs, student)
    torch.testing.assert_close(value, ref_value, rtol=rtol, atol=atol)
    torch.testing.assert_close(grad, ref_grad, rtol=rtol, atol=atol)


def pixel_rows(x):
    return x.permute(0, 2, 3, 1).reshape(-1, x.size(1))


# ------------------------------------------------ logit standardization
def authors_normalize(logit):
    """logit-standardization-KD mdistiller/distillers/KD.py ``normalize``."""
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def authors_kd(s, t, temperature):
    """Their ``kd_loss`` with logit_stand=True."""
    s, t = authors_normalize(s), authors_normalize(t)
    log_pred_student = F.log_softmax(s / temperature, dim=1)
    pred_teacher = F.softmax(t / temperature, dim=1)
    loss = F.kl_div(log_pred_student, pred_teacher,
                    reduction='none').sum(1).mean()
    return loss * temperature**2


def authors_dkd(s, t, target, alpha, beta, temperature):
    """Their ``dkd_loss`` with logit_stand=True."""
    s, t = authors_normalize(s), authors_normalize(t)
    gt = torch.zeros_like(s).scatter_(1, target.unsqueeze(1), 1).bool()
    other = torch.ones_like(s).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(x):
        return torch.cat([(x * gt).sum(1, keepdims=True),
                          (x * other).sum(1, keepdims=True)], dim=1)

    pred_s = cat_mask(F.softmax(s / temperature, dim=1))
    pred_t = cat_mask(F.softmax(t / temperature, dim=1))
    tckd = F.kl_div(torch.log(pred_s), pred_t, reduction='sum') * \
        temperature**2 / target.shape[0]
    pred_t2 = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    log_pred_s2 = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(log_pred_s2, pred_t2, reduction='sum') * \
        temperature**2 / target.shape[0]
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize('scale', [3.0, 1e3])
def test_ls_kd_and_dkd_equal_the_authors(scale):
    student, teacher = rand(8, 10, seed=1, scale=scale), rand(
        8, 10, seed=2, scale=scale)
    student[1] = 0.5  # a uniform row: their finite (g - mean g) / 1e-7
    teacher[2] = -3.0
    labels = torch.randint(0, 10, (8, ),
                           generator=torch.Generator().manual_seed(3))
    kd = build('KDLoss/ls').double()
    assert_same(lambda s: kd(s, teacher), lambda s: authors_kd(s, teacher, 2),
                student, rtol=1e-7, atol=1e-9)
    dkd = build('DKDLoss/ls')
    # Their "- 1000 * gt_mask" drops the target only if 1000 dwarfs the
    # standardized logits (|z| <= sqrt(C - 1) = 3 here): it does.
    assert_same(lambda s: dkd(s, teacher, labels),
                lambda s: authors_dkd(s, teacher, labels, 1.0, 2.0, 2.0),
                student, rtol=1e-7, atol=1e-9)


def test_standardize_is_the_authors_normalize_and_dense_is_per_pixel():
    x = rand(4, 7, seed=5)
    x[0] = 1.25
    assert torch.equal(standardize(x), authors_normalize(x))
    dense = rand(2, 5, 3, 4, seed=6)
    torch.testing.assert_close(pixel_rows(standardize(dense)),
                               authors_normalize(pixel_rows(dense)))


@pytest.mark.parametrize('name', [n for n in CASES
                                  if not n.endswith('/ls')])
def test_ls_on_every_loss_is_the_loss_on_standardized_logits(name):
    """Any loss with logit_standardization=True equals the same loss on
    standardized logits (per pixel over classes; channel-wise losses per
    channel over positions), values and gradients, ignored pixels
    included."""
    shapes = [(2, 5, 3, 4)] if name in DENSE_ONLY else [(6, 5),
                                                        (2, 5, 3, 4)]
    for shape in shapes:
        student, teacher = rand(*shape, seed=7), rand(*shape, seed=8)
        labels = torch.randint(0, 5, (shape[0], ) + shape[2:],
                               generator=torch.Generator().manual_seed(9))
        extra = {}
        if len(shape) == 4:
            labels[0, 1] = 255
            extra = dict(ignore_index=255)
        ours = build(name, logit_standardization=True, **extra).double()
        plain = build(name, **extra).double()
        assert ours.logit_standardization and not plain.logit_standardization
        dims = ours.standardize_dims()
        t_std = standardize(teacher, dims)
        assert_same(lambda s: ours(s, teacher, labels),
                    lambda s: plain(standardize(s, dims), t_std, labels),
                    student)
        # ...and it is not a no-op.
        assert not torch.allclose(ours(student, teacher, labels),
                                  plain(student, teacher, labels))


def test_ls_flag_is_validated_and_every_loss_takes_it():
    with pytest.raises(ValueError, match='logit_standardization must be'):
        WTTMLoss(logit_standardization='yes')
    for name in CASES:
        assert build(name, logit_standardization=True).logit_standardization


# ------------------------------------------------------------ TTM / WTTM
def authors_ttm(y_s, y_t, gamma, weighted):
    """zkxufo/TTM distiller_zoo/ttm.py and wttm.py."""
    p_s = F.log_softmax(y_s, dim=1)
    p_t = torch.pow(torch.softmax(y_t, dim=1), gamma)
    norm = torch.sum(p_t, dim=1)
    p_t = p_t / norm.unsqueeze(1)
    kl = torch.sum(F.kl_div(p_s, p_t, reduction='none'), dim=1)
    return torch.mean(norm * kl) if weighted else torch.mean(kl)


@pytest.mark.parametrize('weighted', [True, False])
@pytest.mark.parametrize('gamma', [0.1, 0.5, 1.0])
def test_ttm_and_wttm_equal_the_authors(weighted, gamma):
    cls = WTTMLoss if weighted else TTMLoss
    loss_fn = cls(gamma=gamma)
    for student, teacher in ((rand(8, 10, seed=1), rand(8, 10, seed=2)),
                             saturated_inputs((8, 10))):
        assert_same(lambda s: loss_fn(s, teacher),
                    lambda s: authors_ttm(s, teacher, gamma, weighted),
                    student)
    # Dense: per pixel, as their code on the pixels as rows; ignored
    # pixels are left out.
    student, teacher = rand(2, 6, 3, 4, seed=3), rand(2, 6, 3, 4, seed=4)
    labels = torch.zeros(2, 3, 4, dtype=torch.long)
    labels[1, 2] = 255
    keep = pixel_rows(labels.unsqueeze(1)).squeeze(1) != 255
    loss_fn = cls(gamma=gamma, ignore_index=255)
    assert_same(lambda s: loss_fn(s, teacher, labels),
                lambda s: authors_ttm(pixel_rows(s)[keep],
                                      pixel_rows(teacher)[keep], gamma,
                                      weighted), student)


def test_wttm_weight_is_the_teachers_power_sum():
    student, teacher = rand(5, 8, seed=1), rand(5, 8, seed=2)
    gamma = 0.3
    weights = torch.softmax(teacher, 1).pow(gamma).sum(1)
    rows = [TTMLoss(gamma=gamma)(student[i:i + 1], teacher[i:i + 1])
            for i in range(5)]
    torch.testing.assert_close(
        WTTMLoss(gamma=gamma)(student, teacher),
        (weights * torch.stack(rows)).mean())
    # gamma = 1: TTM is KD at T = 1.
    torch.testing.assert_close(
        TTMLoss(gamma=1.0)(student, teacher),
        build('KDLoss', temperature=1.0).double()(student, teacher))


# ----------------------------------------------------------------- CTKD
class AuthorsGRL(torch.autograd.Function):
    """CTKD models/temp_global.py GradientReversalFunction."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grads):
        return grads.new_tensor(ctx.lambda_) * grads, None


def authors_ctkd(y_s, y_t, theta, lambda_, t_start=1.0, t_end=20.0):
    """Global_T -> t_start + t_end * sigmoid -> DistillKL (KLDivLoss
    batchmean, * T * T), CTKD helper/loops.py."""
    temp = t_start + t_end * torch.sigmoid(AuthorsGRL.apply(theta, lambda_))
    return nn.KLDivLoss(reduction='batchmean')(
        F.log_softmax(y_s / temp, dim=1), F.softmax(y_t / temp,
                                                     dim=1)) * temp * temp


def log_space_ctkd(y_s, y_t, theta, lambda_, t_start=1.0, t_end=20.0):
    """The same formula with the teacher's KL term in log space: where the
    teacher's softmax underflows to 0, the authors' kl_div backward through
    its target (``log(0) * 0``) makes theta's gradient NaN; this gives its
    finite limit."""
    temp = t_start + t_end * torch.sigmoid(AuthorsGRL.apply(theta, lambda_))
    log_pt = F.log_softmax(y_t / temp, dim=1)
    log_ps = F.log_softmax(y_s / temp, dim=1)
    kl = (log_pt.exp() * (log_pt - log_ps)).sum(1).mean()
    return (kl * temp * temp).reshape(())


def ctkd_grads(loss_fn, student, teacher, labels=None):
    student = student.detach().clone().requires_grad_()
    value = loss_fn(student, teacher, labels)
    grad_s, grad_theta = torch.autograd.grad(value,
                                             [student, loss_fn.global_t])
    return value.detach(), grad_s, grad_theta


@pytest.mark.parametrize('lambda_', [0.0, -0.3, -1.0])
def test_ctkd_equals_the_authors(lambda_):
    for student, teacher in ((rand(8, 10, seed=1), rand(8, 10, seed=2)),
                             saturated_inputs((8, 10))):
        for theta in (1.0, -2.5):
            loss_fn = CTKDLoss(grl_lambda=lambda_).double()
            with torch.no_grad():
                loss_fn.global_t.fill_(theta)
            value, grad_s, grad_theta = ctkd_grads(loss_fn, student, teacher)
            ref_theta = torch.full((1, ), theta, dtype=torch.float64,
                                   requires_grad=True)
            s = student.clone().requires_grad_()
            ref = authors_ctkd(s, teacher, ref_theta, lambda_)
            ref_s, ref_th = torch.autograd.grad(ref, [s, ref_theta])
            torch.testing.assert_close(value, ref.detach().reshape(()))
            torch.testing.assert_close(grad_s, ref_s)
            log_space = log_space_ctkd(s, teacher, ref_theta, lambda_)
            torch.testing.assert_close(
                grad_theta,
                torch.autograd.grad(log_space, ref_theta)[0], rtol=1e-7,
                atol=1e-12)
            if torch.isfinite(ref_th).all():
                torch.testing.assert_close(grad_theta, ref_th, rtol=1e-7,
                                           atol=1e-12)
            else:  # saturated teacher at a low T: theirs is NaN
                assert theta < 0


def test_ctkd_gradient_reversal_sign_scale_and_range():
    student, teacher = rand(6, 10, seed=3), rand(6, 10, seed=4, scale=5)
    grads = {}
    for lambda_ in (1.0, -1.0, -0.25, 0.0):
        grads[lambda_] = ctkd_grads(CTKDLoss(grl_lambda=lambda_).double(),
                                    student, teacher)[2]
    plain = grads[1.0]  # no reversal: dL/dtheta itself
    assert plain.abs().item() > 0
    torch.testing.assert_close(grads[-1.0], -plain)
    torch.testing.assert_close(grads[-0.25], -0.25 * plain)
    assert grads[0.0].item() == 0
    # The student's gradient does not depend on lambda.
    loss_fn = CTKDLoss(grl_lambda=-1.0)
    torch.testing.assert_close(
        ctkd_grads(loss_fn, student, teacher)[1],
        ctkd_grads(CTKDLoss(grl_lambda=1.0), student, teacher)[1])
    # T in (t_start, t_start + t_end); 1 + 20 sigmoid(1) at init.
    assert loss_fn.temperature().item() == pytest.approx(
        1 + 20 / (1 + math.exp(-1)))
    for theta, expected in ((-50.0, 1.0), (50.0, 21.0)):
        with torch.no_grad():
            loss_fn.global_t.fill_(theta)
        assert loss_fn.temperature().item() == pytest.approx(expected)


def test_ctkd_dense_ignore_and_unset_lambda():
    student, teacher = rand(2, 6, 3, 4, seed=5), rand(2, 6, 3, 4, seed=6)
    labels = torch.zeros(2, 3, 4, dtype=torch.long)
    labels[0, 1] = 255
    keep = pixel_rows(labels.unsqueeze(1)).squeeze(1) != 255
    dense = ctkd_grads(
        CTKDLoss(grl_lambda=-0.5, ignore_index=255).double(), student,
        teacher, labels)
    theta = torch.ones(1, dtype=torch.float64, requires_grad=True)
    s = student.clone().requires_grad_()
    ref = authors_ctkd(pixel_rows(s)[keep], pixel_rows(teacher)[keep],
                       theta, -0.5)
    for ours, theirs in zip(dense, (ref.detach().reshape(()), ) +
                            torch.autograd.grad(
            ref, [s, theta])):
        torch.testing.assert_close(ours, theirs)
    with pytest.raises(ValueError, match='grl_lambda is unset.*'
                       'CTKDScheduleHook'):
        CTKDLoss()(student.float().requires_grad_(), teacher.float())
    with torch.no_grad():  # no training: no lambda needed
        assert torch.isfinite(CTKDLoss()(student.float(), teacher.float()))


def authors_cosine_decay(i, max_value=0.0, min_value=-1.0, num_loops=10):
    """CTKD train_student.py CosineDecay.get_value."""
    if i < 0:
        i = 0
    if i >= num_loops:
        i = num_loops
    value = (math.cos(i * math.pi / num_loops) + 1.0) * 0.5
    return value * (max_value - min_value) + min_value


@pytest.mark.parametrize('loops', [10, 5])
def test_ctkd_lambda_curve_is_the_authors(loops):
    hook = CTKDScheduleHook(decay_loops=loops)
    for epoch in (1, 2, 3, loops - 1, loops, loops + 1, 240):
        assert hook.value(epoch) == authors_cosine_decay(epoch,
                                                         num_loops=loops)
    assert hook.value(1) == pytest.approx(
        (math.cos(math.pi / loops) + 1) / 2 - 1)
    assert hook.value(loops) == -1.0


@pytest.mark.parametrize('kwargs', [dict(decay_loops=0),
                                    dict(decay_loops=2.5),
                                    dict(losses=[])])
def test_ctkd_hook_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        CTKDScheduleHook(**kwargs)


# ---------------------------------------------- the hook through a Runner
_RUN_IDS = itertools.count()


class CTKDToyDistiller(BaseModel):
    """A linear student distilled from a fixed linear teacher with a
    CTKDLoss in ``distill_losses``, as LogitDistiller holds it; records
    (lambda, T) at every step."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.student = nn.Linear(4, 5)
        self.teacher_weight = torch.randn(5, 4) * 3
        self.distill_losses = nn.ModuleDict(
            dict(loss_ctkd=CTKDLoss(loss_weight=0.9)))
        self.seen = []

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.student(inputs)
        if mode != 'loss':
            return out
        loss_fn = self.distill_losses['loss_ctkd']
        value = loss_fn(out, inputs @ self.teacher_weight.t())
        self.seen.append((loss_fn.grl_lambda,
                          loss_fn.last_temperature.item()))
        return {'distill.loss_ctkd': value}


class ToyData(Dataset):
    metainfo = dict()

    def __len__(self):
        return 8

    def __getitem__(self, i):
        gen = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=gen))


def _runner(work_dir, max_epochs, resume=False):
    return Runner(
        model=CTKDToyDistiller(),
        work_dir=str(work_dir),
        experiment_name=f'ctkd_schedule_{next(_RUN_IDS)}',
        train_dataloader=dict(
            dataset=ToyData(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,  # 4 iterations per epoch
            num_workers=0,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9,
                                          weight_decay=5e-4)),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        custom_hooks=[dict(type='mmrankkd.CTKDScheduleHook', decay_loops=3)],
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1),
                           checkpoint=dict(type='CheckpointHook',
                                           interval=1)),
        resume=resume,
        default_scope='mmengine')


def test_ctkd_hook_schedule_log_optimizer_and_resume(tmp_path):
    full = _runner(tmp_path / 'full', 5)
    full.train()
    seen = full.model.seen
    lambdas = [lam for lam, _ in seen]
    assert lambdas == [authors_cosine_decay(e, num_loops=3)
                       for e in range(1, 6) for _ in range(4)]
    temps = [t for _, t in seen]
    # theta is trained by the runner's optimizer: T moves every step.
    assert len(set(temps)) == len(temps)
    assert temps[0] == pytest.approx(1 + 20 / (1 + math.exp(-1)), rel=1e-6)
    hub = full.message_hub
    assert hub.get_scalar('train/ctkd_lambda.ctkd').current() == -1.0
    assert hub.get_scalar('train/ctkd_temperature.ctkd').current() == \
        pytest.approx(temps[-1])
    log = next((tmp_path / 'full').glob('*/*.log')).read_text()
    assert log.count('ctkd_temperature.ctkd: ') == 20
    assert 'ctkd_lambda.ctkd: -1.0000' in log
    # theta is in the checkpoint and resume continues exactly.
    first = _runner(tmp_path / 'resumed', 2)
    first.train()
    ckpt = torch.load(tmp_path / 'resumed' / 'epoch_2.pth',
                      map_location='cpu', weights_only=False)
    assert 'distill_losses.loss_ctkd.global_t' in ckpt['state_dict']
    second = _runner(tmp_path / 'resumed', 5, resume=True)
    second.train()
    resumed = second.model.seen
    assert [lam for lam, _ in resumed] == lambdas[8:]
    assert [t for _, t in resumed] == pytest.approx(temps[8:], rel=1e-6)


def test_ctkd_hook_needs_a_ctkd_loss(tmp_path):
    runner = _runner(tmp_path, 1)
    runner.model.distill_losses['loss_ctkd'] = build('KDLoss')
    with pytest.raises(KeyError, match='no CTKD loss'):
        runner.train()


# ----------------------------------------------------------------- memory
@pytest.mark.parametrize('cfg', [
    dict(type='mmrankkd.WTTMLoss', gamma=0.1),
    dict(type='mmrankkd.CTKDLoss', grl_lambda=-1.0),
    dict(type='mmrankkd.KDLoss', temperature=2.0,
         logit_standardization=True),
    dict(type='mmrankkd.DKDLoss', temperature=2.0,
         logit_standardization=True),
])
@pytest.mark.parametrize('shape', [(256, 1000), (2, 19, 64, 128)])
def test_peak_memory_within_16x_the_logits(cfg, shape):
    from mmrankkd.registry import MODELS
    loss_fn = MODELS.build(cfg)
    gen = torch.Generator().manual_seed(0)
    student = (torch.randn(shape, generator=gen) * 3).requires_grad_()
    teacher = torch.randn(shape, generator=gen) * 3
    labels = torch.randint(0, shape[1], (shape[0], ) + shape[2:],
                           generator=gen)

    def step():
        student.grad = None
        loss_fn(student, teacher, labels).backward()

    step()
    peak = peak_extra_bytes(step)
    assert peak <= 16 * student.numel() * 4, peak / (student.numel() * 4)
