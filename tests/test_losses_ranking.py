"""Kendall (RKKD), soft-rank Spearman (CMKD) and their memory-bounded
kernels: limits against scipy, the naive reference, block plans, the memory
bound, and the agreement metric's Kendall tau on the same kernel."""
import math

import numpy as np
import pytest
import torch
from loss_profiling import peak_extra_bytes
from scipy import stats

from mmrankkd.evaluation import kendall_tau
from mmrankkd.models.losses import CorrelationMatchingLoss, KendallRankLoss
from mmrankkd.models.losses.pairwise import (DEFAULT_BLOCK_BYTES, _Layout,
                                             centred_hard_rank, hard_rank,
                                             naive_pairwise_sign_agreement,
                                             naive_soft_rank,
                                             pairwise_sign_agreement,
                                             plan_blocks, soft_rank,
                                             surrogate_sign)


def separated_rows(num_rows, num_classes, seed=0, gap=1.0):
    """Rows of distinct values at least ``gap`` apart (random orders)."""
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.randperm(num_classes, generator=gen).double() * gap
            for _ in range(num_rows)]
    return torch.stack(rows)


@pytest.mark.parametrize('surrogate', ['tanh', 'sigmoid', 'erf'])
def test_kendall_steep_limit_equals_scipy_tau(surrogate):
    student = separated_rows(6, 12, seed=1)
    teacher = separated_rows(6, 12, seed=2)
    loss = KendallRankLoss(surrogate=surrogate, steepness=60.)(student,
                                                                teacher)
    taus = [stats.kendalltau(s, t).statistic
            for s, t in zip(student.numpy(), teacher.numpy())]
    assert abs((1 - loss.item()) - np.mean(taus)) < 1e-4
    # A single row too (no averaging to hide behind).
    one = KendallRankLoss(surrogate=surrogate, steepness=60.)(student[:1],
                                                              teacher[:1])
    assert abs((1 - one.item()) - taus[0]) < 1e-4


def test_kendall_topk_counts_only_pairs_led_by_teacher_topk():
    student = separated_rows(4, 9, seed=3)
    teacher = separated_rows(4, 9, seed=4)
    k = 3
    loss = KendallRankLoss(steepness=60., topk=k)(student, teacher)
    expected = []
    for s, t in zip(student.tolist(), teacher.tolist()):
        top = sorted(range(9), key=lambda c: -t[c])[:k]
        agree = sum(
            np.sign(s[i] - s[j]) * np.sign(t[i] - t[j]) for i in top
            for j in range(9) if j != i)
        expected.append(1 - agree / (k * 8))
    assert abs(loss.item() - np.mean(expected)) < 1e-4
    # topk >= C is the plain loss.
    torch.testing.assert_close(
        KendallRankLoss(steepness=2., topk=9)(student, teacher),
        KendallRankLoss(steepness=2.)(student, teacher))


@pytest.mark.parametrize('surrogate', ['tanh', 'sigmoid', 'erf'])
def test_kendall_value_at_student_equals_teacher(surrogate):
    """Non-zero minimum: 1 - mean_{i != j} |g(k (t_i - t_j))| at s == t."""
    teacher = torch.randn(3, 6, dtype=torch.float64)
    k = 1.5
    diff = teacher.unsqueeze(2) - teacher.unsqueeze(1)
    expected = 1 - surrogate_sign(k * diff, surrogate).abs().sum(
        (1, 2)) / (6 * 5)
    loss = KendallRankLoss(surrogate=surrogate, steepness=k)(teacher.clone(),
                                                             teacher)
    torch.testing.assert_close(loss, expected.mean())
    assert loss > 0.05
    # Reversing the student's order gives the maximum-side value 1 + ...
    reversed_loss = KendallRankLoss(surrogate=surrogate, steepness=k)(
        -teacher, teacher)
    torch.testing.assert_close(reversed_loss, 2 - expected.mean())


def test_kendall_smooth_teacher_uses_surrogate_on_both():
    student = torch.randn(3, 6, dtype=torch.float64)
    teacher = torch.randn(3, 6, dtype=torch.float64)
    k = 2.0
    ds = student.unsqueeze(2) - student.unsqueeze(1)
    dt = teacher.unsqueeze(2) - teacher.unsqueeze(1)
    expected = 1 - (torch.tanh(k * ds) * torch.tanh(k * dt)).sum(
        (1, 2)) / 30
    loss = KendallRankLoss(steepness=k, smooth_teacher=True)(student, teacher)
    torch.testing.assert_close(loss, expected.mean())


def test_hard_rank_matches_scipy_rankdata_with_ties():
    x = torch.tensor([[3., 1., 1., 2., 5., 5., 5., 0.],
                      [0., 0., 0., 0., 1., -1., 2., 2.]])
    expected = np.stack([stats.rankdata(row) for row in x.numpy()])
    np.testing.assert_allclose(hard_rank(x).numpy(), expected)


def test_soft_rank_tends_to_hard_rank():
    x = separated_rows(3, 10, seed=5)
    torch.testing.assert_close(soft_rank(x, eps=1e-3), hard_rank(x))
    # Smooth ranks keep the order but are pulled towards the middle.
    smooth = soft_rank(x, eps=2.0)
    assert torch.equal(smooth.argsort(1), x.argsort(1))
    assert not torch.allclose(smooth, hard_rank(x), atol=0.1)


def test_spearman_term_equals_scipy_spearmanr():
    student = separated_rows(5, 11, seed=6)
    teacher = separated_rows(5, 11, seed=7)
    teacher[:, :3] = 0.5  # teacher ties: averaged ranks, as scipy does
    loss = CorrelationMatchingLoss(
        weighting='fixed', pearson_weight=0., spearman_weight=1.,
        rank_eps=1e-3)(student, teacher)
    rhos = [stats.spearmanr(s, t).statistic
            for s, t in zip(student.numpy(), teacher.numpy())]
    assert abs((1 - loss.item()) - np.mean(rhos)) < 1e-4


def test_pearson_term_equals_scipy_pearsonr_on_tempered_probs():
    gen = torch.Generator().manual_seed(8)
    student = torch.randn(5, 11, generator=gen, dtype=torch.float64)
    teacher = torch.randn(5, 11, generator=gen, dtype=torch.float64)
    temperature = 2.0
    loss = CorrelationMatchingLoss(
        temperature=temperature, weighting='fixed', pearson_weight=1.,
        spearman_weight=0.)(student, teacher)
    ps = torch.softmax(student / temperature, 1).numpy()
    pt = torch.softmax(teacher / temperature, 1).numpy()
    rhos = [stats.pearsonr(s, t).statistic for s, t in zip(ps, pt)]
    assert abs(loss.item() / temperature**2 - (1 - np.mean(rhos))) < 1e-6


def _cmkd_transcription(student, teacher, temperature, rank_eps):
    """The adopted CMKD formula written out with the naive soft rank."""
    ps = torch.softmax(student / temperature, 1)
    pt = torch.softmax(teacher / temperature, 1)

    def pearson(a, b):  # the official DIST form: eps added
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)

    # Teacher ranks 1..C (no ties in these inputs).
    teacher_ranks = teacher.argsort(1).argsort(1).to(student.dtype) + 1
    student_ranks = 1 + torch.stack([
        sum(torch.sigmoid((student[:, i] - student[:, j]) / rank_eps)
            for j in range(student.size(1)) if j != i)
        for i in range(student.size(1))
    ], 1)
    entropy = -(pt * pt.log()).sum(1) / math.log(student.size(1))
    per_row = (1 - entropy) * (1 - pearson(ps, pt)) + entropy * (
        1 - pearson(student_ranks, teacher_ranks))
    return temperature**2 * per_row.mean()


def test_correlation_matching_matches_transcription_and_nonzero_minimum():
    gen = torch.Generator().manual_seed(9)
    student = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    teacher = torch.randn(4, 7, generator=gen, dtype=torch.float64)
    loss_fn = CorrelationMatchingLoss(temperature=2., rank_eps=0.5)
    torch.testing.assert_close(
        loss_fn(student, teacher),
        _cmkd_transcription(student, teacher, 2., 0.5))
    # At student == teacher only the soft-vs-hard rank gap is left.
    at_teacher = loss_fn(teacher.clone(), teacher)
    torch.testing.assert_close(at_teacher,
                               _cmkd_transcription(teacher, teacher, 2., 0.5))
    assert at_teacher > 1e-3
    # ...and it shrinks towards 0 as the soft rank sharpens.
    sharp = CorrelationMatchingLoss(temperature=2., rank_eps=1e-3)
    assert sharp(teacher.clone(), teacher) < 1e-6


def test_correlation_matching_gradient_matches_transcription(layout):
    gen = torch.Generator().manual_seed(19)
    student = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    teacher = torch.randn(5, 9, generator=gen, dtype=torch.float64)
    for weighting in ('entropy', 'fixed'):
        loss_fn = CorrelationMatchingLoss(temperature=1.5, rank_eps=0.7,
                                          weighting=weighting,
                                          pearson_weight=0.3,
                                          spearman_weight=1.2,
                                          block_bytes=200)
        s1 = student.clone().requires_grad_()
        s2 = student.clone().requires_grad_()
        loss_fn(s1, teacher).backward()
        if weighting == 'entropy':
            _cmkd_transcription(s2, teacher, 1.5, 0.7).backward()
        else:
            ps = torch.softmax(s2 / 1.5, 1)
            pt = torch.softmax(teacher / 1.5, 1)

            def pearson(a, b):
                a = a - a.mean(1, keepdim=True)
                b = b - b.mean(1, keepdim=True)
                return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) +
                                         1e-8)

            ranks = torch.tensor(np.stack(
                [stats.rankdata(t) for t in teacher.numpy()]))
            rows = 0.3 * (1 - pearson(ps, pt)) + 1.2 * (
                1 - pearson(naive_soft_rank(s2, 0.7), ranks))
            (1.5**2 * rows.mean()).backward()
        torch.testing.assert_close(s1.grad, s2.grad)


@pytest.fixture(params=['rows first', 'rows last'])
def layout(request, monkeypatch):
    """Run a kernel test with the pair blocks laid out either way (the
    kernels choose by shape: rows last for many rows of few classes)."""
    monkeypatch.setattr(_Layout, 'force', request.param == 'rows last')
    return request.param


# Budgets around the blocks of 5 rows x 7 classes (float64, 2-3 buffers):
# single-row tiles of one first member (1 byte: the smallest possible),
# partial tiles, rows per block not dividing 5, everything in one block.
BUDGETS = [1, 200, 700, 1500, 4000, 10**9]


@pytest.mark.parametrize('block_bytes', BUDGETS)
@pytest.mark.parametrize('surrogate', ['tanh', 'sigmoid', 'erf'])
@pytest.mark.parametrize('topk', [None, 3])
@pytest.mark.parametrize('smooth_teacher', [False, True])
def test_blockwise_kendall_kernel_equals_naive(block_bytes, surrogate, topk,
                                               smooth_teacher, layout):
    gen = torch.Generator().manual_seed(10)
    student = torch.randn(5, 7, generator=gen,
                          dtype=torch.float64).requires_grad_()
    teacher = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    teacher[0, :2] = 0.3  # a teacher tie: sgn(0) = 0
    teacher[1, 2:6] = -0.1  # a longer one, across the top-3 boundary
    teacher[2] = 0.5  # a constant row: no ordered pair at all
    grad_out = torch.randn(5, generator=gen, dtype=torch.float64)
    results = []
    for kernel, extra in ((pairwise_sign_agreement,
                           dict(block_bytes=block_bytes)),
                          (naive_pairwise_sign_agreement, {})):
        out = kernel(student, teacher, topk, surrogate, 1.7, smooth_teacher,
                     **extra)
        grad, = torch.autograd.grad((out * grad_out).sum(), student)
        results.append((out, grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


def test_kendall_kernel_float32_at_imagenet_width(layout):
    """One block vs many, float32, 1000 classes, against float64: A within
    1e-6 of its range C (C - 1) (tau within 1e-6), gradients close."""
    gen = torch.Generator().manual_seed(14)
    student = (torch.randn(3, 1000, generator=gen) * 3).requires_grad_()
    teacher = torch.randn(3, 1000, generator=gen) * 3
    naive = naive_pairwise_sign_agreement(student.double(), teacher.double())
    grad_naive, = torch.autograd.grad(naive.sum(), student)
    for block_bytes in (DEFAULT_BLOCK_BYTES, 2**20):
        out = pairwise_sign_agreement(student, teacher,
                                      block_bytes=block_bytes)
        grad, = torch.autograd.grad(out.sum(), student)
        torch.testing.assert_close(out.double(), naive, rtol=0,
                                   atol=1e-6 * 1000 * 999)
        torch.testing.assert_close(grad, grad_naive.float(), rtol=1e-4,
                                   atol=1e-5)


def test_hard_sign_kernel_is_kendall_tau_a(layout):
    gen = torch.Generator().manual_seed(15)
    a = torch.randint(0, 6, (4, 11), generator=gen).double()  # many ties
    b = torch.randint(0, 6, (4, 11), generator=gen).double()
    with torch.no_grad():
        out = pairwise_sign_agreement(a, b, surrogate='sign', block_bytes=1)
    torch.testing.assert_close(out, naive_pairwise_sign_agreement(
        a, b, surrogate='sign'))
    with pytest.raises(ValueError, match='no gradient'):
        pairwise_sign_agreement(a.requires_grad_(), b, surrogate='sign')


def test_agreement_metric_kendall_tau_matches_scipy_with_ties():
    gen = torch.Generator().manual_seed(16)
    a = torch.randn(6, 40, generator=gen)
    b = torch.randn(6, 40, generator=gen)
    b[0, :10] = 0.  # ties in one, the other or both
    a[1, :7] = 1.
    a[2, :5], b[2, :5] = 2., 2.
    tau = kendall_tau(a, b)
    for row, (x, y) in enumerate(zip(a.numpy(), b.numpy())):
        # tau-a: concordant minus discordant over all C (C - 1) / 2 pairs
        signs = np.sign(x[:, None] - x[None]) * np.sign(y[:, None] - y[None])
        expected = signs.sum() / (40 * 39)
        assert abs(tau[row].item() - expected) < 1e-6
        if row >= 3:  # no ties: tau-a = tau-b
            assert abs(tau[row].item() - stats.kendalltau(x, y).statistic) \
                < 1e-6


def test_block_plans_cover_every_pair_once():
    for rows, first, cols, budget in ((5, 7, 7, 1), (5, 7, 7, 700),
                                      (256, 1000, 1000, DEFAULT_BLOCK_BYTES),
                                      (65536, 19, 19, DEFAULT_BLOCK_BYTES),
                                      (3, 4, 30, 500), (64, 100, 100, 10**5)):
        blocks = plan_blocks(rows, first, cols, 8, budget, rows * cols * 4,
                             'cpu')
        covered = np.zeros((rows, first, cols), dtype=int)
        for r0, r1, a, b in blocks:
            covered[r0:r1, a:b, a:] += 1
            assert 0 <= r0 < r1 <= rows and 0 <= a < b <= first
        # every pair i < j (i among the first members) exactly once
        upper = np.triu(np.ones((first, cols), dtype=int), 1)
        assert (covered * upper == upper).all()
        assert ((covered == 0) | (covered == 1)).all()


def test_block_plans_at_imagenet_scale_use_few_blocks_and_half_the_pairs():
    blocks = plan_blocks(256, 1000, 1000, 8, DEFAULT_BLOCK_BYTES,
                         256 * 1000 * 4, 'cpu')
    assert len(blocks) <= 5
    work = sum((r1 - r0) * (b - a) * (1000 - a) for r0, r1, a, b in blocks)
    assert work < 0.65 * 256 * 1000 * 1000
    budget = DEFAULT_BLOCK_BYTES - 12 * 256 * 1000 * 4
    assert max((r1 - r0) * (b - a) * (1000 - a) * 8
               for r0, r1, a, b in blocks) <= budget


def test_centred_hard_rank_is_hard_rank_minus_mean():
    x = torch.tensor([[3., 1., 1., 2., 5., 5., 5., 0.]])
    torch.testing.assert_close(centred_hard_rank(x), hard_rank(x) - 4.5)


@pytest.mark.parametrize('block_bytes', BUDGETS)
def test_blockwise_soft_rank_equals_naive(block_bytes, layout):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    x[1, :3] = 0.2  # ties
    x.requires_grad_()
    grad_out = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    blockwise = soft_rank(x, 0.4, block_bytes)
    naive = naive_soft_rank(x, 0.4)
    torch.testing.assert_close(blockwise, naive)
    g1, = torch.autograd.grad((blockwise * grad_out).sum(), x)
    g2, = torch.autograd.grad((naive * grad_out).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_kernels_gradcheck_across_blocks(layout):
    gen = torch.Generator().manual_seed(12)
    s = torch.randn(3, 5, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    t = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: pairwise_sign_agreement(x, t, 2, 'erf', 1.3, True, 100),
        (s, ))
    assert torch.autograd.gradcheck(
        lambda x: pairwise_sign_agreement(x, t, None, 'sigmoid', 0.8, False,
                                          150), (s, ))
    assert torch.autograd.gradcheck(
        lambda x: pairwise_sign_agreement(x, t, None, 'tanh', 0.8, False, 1),
        (s, ))
    assert torch.autograd.gradcheck(lambda x: soft_rank(x, 0.7, 60), (s, ))


@pytest.mark.parametrize('shape', [(64, 300), (128, 100), (2, 400)])
@pytest.mark.parametrize('block_bytes', [DEFAULT_BLOCK_BYTES, 2**20])
@pytest.mark.parametrize('loss_cls', [KendallRankLoss,
                                      CorrelationMatchingLoss])
def test_forward_backward_memory_is_bounded(loss_cls, block_bytes, shape):
    """Peak extra memory of forward + backward <= max(16x the logits, the
    block budget), while the naive pairwise form needs far more (so the
    measurement can fail)."""
    gen = torch.Generator().manual_seed(13)
    student = torch.randn(shape, generator=gen).requires_grad_()
    teacher = torch.randn(shape, generator=gen)
    logits_bytes = student.numel() * student.element_size()
    loss_fn = loss_cls(block_bytes=block_bytes)

    def bounded():
        loss_fn(student, teacher).backward()

    def naive():
        if loss_cls is KendallRankLoss:
            out = naive_pairwise_sign_agreement(student, teacher)
        else:
            out = naive_soft_rank(student)
        out.sum().backward()

    bounded()  # the first call also reads the value checks
    student.grad = None
    assert peak_extra_bytes(bounded) <= max(16 * logits_bytes, block_bytes)
    student.grad = None
    assert peak_extra_bytes(naive) > 100 * logits_bytes


@pytest.mark.parametrize('loss_cls', [KendallRankLoss,
                                      CorrelationMatchingLoss])
def test_memory_stays_within_a_small_budget_at_imagenet_width(loss_cls):
    """256 x 1000 logits (1 MB; all pairs: 1 GB per tensor) with a 32 MiB
    budget: the pairs are split into many blocks, the call stays within
    it."""
    gen = torch.Generator().manual_seed(17)
    student = torch.randn(256, 1000, generator=gen).requires_grad_()
    teacher = torch.randn(256, 1000, generator=gen)
    loss_fn = loss_cls(block_bytes=32 * 2**20)
    peak = peak_extra_bytes(lambda: loss_fn(student, teacher).backward())
    assert peak <= 32 * 2**20
