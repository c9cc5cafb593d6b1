"""Kendall (RKKD), soft-rank Spearman (CMKD) and their memory-bounded
kernels: limits against scipy, the naive reference, and the memory bound."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from mmrankkd.models.losses import CorrelationMatchingLoss, KendallRankLoss
from mmrankkd.models.losses.pairwise import (hard_rank,
                                             naive_pairwise_sign_agreement,
                                             naive_soft_rank,
                                             pairwise_sign_agreement,
                                             soft_rank, surrogate_sign)
from mmrankkd.utils.memory import peak_extra_bytes


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

    def pearson(a, b):
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

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


# Block sizes around the boundaries of 5 rows x 7 x 7 pairs: partial row
# slices (1, 6, 7, 8), a row slice equal to a row (49), rows per block not
# dividing 5 (98 -> 2 rows), and everything in one block.
BLOCKS = [1, 6, 7, 8, 48, 49, 50, 98, 10**6]


@pytest.mark.parametrize('max_elements', BLOCKS)
@pytest.mark.parametrize('surrogate', ['tanh', 'sigmoid', 'erf'])
@pytest.mark.parametrize('topk', [None, 3])
def test_blockwise_kendall_kernel_equals_naive(max_elements, surrogate,
                                               topk):
    gen = torch.Generator().manual_seed(10)
    student = torch.randn(5, 7, generator=gen,
                          dtype=torch.float64).requires_grad_()
    teacher = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    teacher[0, :2] = 0.3  # a teacher tie: sgn(0) = 0
    grad_out = torch.randn(5, generator=gen, dtype=torch.float64)
    first = None if topk is None else teacher.topk(topk, 1).indices
    results = []
    for kernel, extra in ((pairwise_sign_agreement,
                           dict(max_elements=max_elements)),
                          (naive_pairwise_sign_agreement, {})):
        out = kernel(student, teacher, first, surrogate, 1.7, False, **extra)
        grad, = torch.autograd.grad((out * grad_out).sum(), student)
        results.append((out, grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize('max_elements', BLOCKS)
def test_blockwise_soft_rank_equals_naive(max_elements):
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    x[1, :3] = 0.2  # ties
    x.requires_grad_()
    grad_out = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    blockwise = soft_rank(x, 0.4, max_elements)
    naive = naive_soft_rank(x, 0.4)
    torch.testing.assert_close(blockwise, naive)
    g1, = torch.autograd.grad((blockwise * grad_out).sum(), x)
    g2, = torch.autograd.grad((naive * grad_out).sum(), x)
    torch.testing.assert_close(g1, g2)


def test_kernels_gradcheck_across_blocks():
    gen = torch.Generator().manual_seed(12)
    s = torch.randn(3, 5, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    t = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: pairwise_sign_agreement(x, t, t.topk(2, 1).indices, 'erf',
                                          1.3, True, 4), (s, ))
    assert torch.autograd.gradcheck(
        lambda x: pairwise_sign_agreement(x, t, None, 'sigmoid', 0.8, False,
                                          7), (s, ))
    assert torch.autograd.gradcheck(lambda x: soft_rank(x, 0.7, 6), (s, ))


@pytest.mark.parametrize('shape', [(64, 300), (128, 100), (2, 400)])
@pytest.mark.parametrize('loss_cls', [KendallRankLoss,
                                      CorrelationMatchingLoss])
def test_forward_backward_memory_is_bounded(loss_cls, shape):
    """Peak extra memory of forward + backward <= 16x the logits, while the
    naive pairwise form needs far more (so the measurement can fail)."""
    gen = torch.Generator().manual_seed(13)
    student = torch.randn(shape, generator=gen).requires_grad_()
    teacher = torch.randn(shape, generator=gen)
    logits_bytes = student.numel() * student.element_size()
    loss_fn = loss_cls()

    def bounded():
        loss_fn(student, teacher).backward()

    def naive():
        if loss_cls is KendallRankLoss:
            out = naive_pairwise_sign_agreement(student, teacher)
        else:
            out = naive_soft_rank(student)
        out.sum().backward()

    student.grad = None
    assert peak_extra_bytes(bounded) <= 16 * logits_bytes
    student.grad = None
    assert peak_extra_bytes(naive) > 100 * logits_bytes
