"""Each loss against its formula written out independently (float64), and
the fused closed-form gradients against autograd through those formulas;
DIST against a transcription of the authors' code."""
import pytest
import torch
import torch.nn.functional as F

from mmrankkd.models.losses import (BalanceDivergenceLoss, CWDLoss,
                                    DISTLoss, DKDLoss, KDLoss,
                                    PlackettLuceLoss)
from mmrankkd.registry import MODELS


def rand(*shape, seed=0, scale=2.0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def labels_for(num_rows, num_classes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_classes, (num_rows, ), generator=gen)


# ---------------------------------------------------------------- PLD
def pld_transcription(student, teacher, labels, tau):
    """The PLD paper's loss (arXiv 2506.12542), element by element."""
    total = 0.
    for s, t, y in zip(student.tolist(), teacher.tolist(), labels.tolist()):
        others = sorted((c for c in range(len(s)) if c != y),
                        key=lambda c: -t[c])
        order = [y] + others
        weights = torch.softmax(torch.tensor(t, dtype=torch.float64) / tau,
                                0)
        row = 0.
        for k, chosen in enumerate(order):
            rest = torch.tensor([s[c] for c in order[k:]],
                                dtype=torch.float64)
            row += weights[chosen].item() * (
                torch.logsumexp(rest, 0).item() - s[chosen])
        total += row
    return total / len(labels)


def test_pld_matches_transcription():
    student, teacher = rand(6, 7, seed=1), rand(6, 7, seed=2)
    labels = labels_for(6, 7, seed=3)
    for tau in (0.5, 1.0, 4.0):
        loss = PlackettLuceLoss(teacher_temperature=tau)(student, teacher,
                                                         labels)
        assert abs(loss.item() -
                   pld_transcription(student, teacher, labels, tau)) < 1e-10


def test_pld_one_hot_alpha_is_cross_entropy():
    student = rand(6, 7, seed=4)
    labels = labels_for(6, 7, seed=5)
    # Teacher softmax = one-hot at the label: alpha = (1, 0, ..., 0).
    teacher = torch.zeros(6, 7, dtype=torch.float64)
    teacher[torch.arange(6), labels] = 1e4
    loss = PlackettLuceLoss()(student, teacher, labels)
    torch.testing.assert_close(loss, F.cross_entropy(student, labels))


def test_pld_uniform_alpha_is_listmle():
    student = rand(6, 7, seed=6)
    teacher = rand(6, 7, seed=7)
    labels = labels_for(6, 7, seed=8)
    # A huge tau_T makes alpha uniform (1/C) but keeps pi* from the teacher.
    loss = PlackettLuceLoss(teacher_temperature=1e9)(student, teacher,
                                                     labels)
    listmle = 0.
    for s, t, y in zip(student, teacher, labels.tolist()):
        others = [c for c in t.argsort(descending=True).tolist() if c != y]
        ordered = s[[y] + others]
        listmle += sum(
            torch.logsumexp(ordered[k:], 0) - ordered[k]
            for k in range(len(ordered)))
    torch.testing.assert_close(loss, listmle / 6 / 7)


def test_pld_translation_invariant():
    student, teacher = rand(5, 6, seed=9), rand(5, 6, seed=10)
    labels = labels_for(5, 6, seed=11)
    loss_fn = PlackettLuceLoss(teacher_temperature=2.)
    shift = rand(5, 1, seed=12, scale=100.)
    torch.testing.assert_close(
        loss_fn(student + shift, teacher, labels),
        loss_fn(student, teacher, labels))


def test_pld_is_minimised_by_student_following_pi_star():
    teacher = rand(1, 5, seed=13)
    labels = torch.tensor([2])
    loss_fn = PlackettLuceLoss()
    key = teacher.clone()
    key[0, 2] = float('inf')
    order = key.argsort(descending=True)[0]
    aligned = torch.empty(1, 5, dtype=torch.float64)
    aligned[0, order] = torch.arange(5, 0, -1, dtype=torch.float64) * 20
    reversed_ = -aligned
    assert loss_fn(aligned, teacher, labels) < 1e-6
    assert loss_fn(reversed_, teacher, labels) > 1.


# ------------------------------------------------------------ KD / BDD
def kl_rows(p, q):
    return (p * (p.log() - q.log())).sum(1)


def test_kd_matches_hand_written_kl():
    student, teacher = rand(8, 10, seed=14), rand(8, 10, seed=15)
    for temperature in (1.0, 4.0):
        p_t = torch.softmax(teacher / temperature, 1)
        p_s = torch.softmax(student / temperature, 1)
        expected = temperature**2 * kl_rows(p_t, p_s).mean()
        torch.testing.assert_close(
            KDLoss(temperature=temperature)(student, teacher), expected)


def test_bdd_pixel_is_weighted_forward_plus_reverse_kl():
    student, teacher = rand(8, 10, seed=16), rand(8, 10, seed=17)
    tf, tr, wf, wr = 2.0, 3.0, 0.7, 1.9
    fwd = tf**2 * kl_rows(torch.softmax(teacher / tf, 1),
                          torch.softmax(student / tf, 1)).mean()
    rev = tr**2 * kl_rows(torch.softmax(student / tr, 1),
                          torch.softmax(teacher / tr, 1)).mean()
    loss = BalanceDivergenceLoss(forward_temperature=tf,
                                 reverse_temperature=tr, forward_weight=wf,
                                 reverse_weight=wr)(student, teacher)
    torch.testing.assert_close(loss, wf * fwd + wr * rev)
    # With w_r = 0 it is KD.
    torch.testing.assert_close(
        BalanceDivergenceLoss(forward_temperature=tf,
                              reverse_weight=0.)(student, teacher),
        KDLoss(temperature=tf)(student, teacher))


def channel_kl(p_logits, q_logits, temperature):
    """mmrazor ChannelWiseDivergence transcription: sum over positions,
    divided by N * C."""
    n, c = p_logits.shape[:2]
    p = torch.softmax(p_logits.reshape(n * c, -1) / temperature, 1)
    q = torch.softmax(q_logits.reshape(n * c, -1) / temperature, 1)
    return temperature**2 * (p * (p.log() - q.log())).sum() / (n * c)


def test_cwd_matches_mmrazor_transcription():
    student, teacher = rand(2, 4, 3, 5, seed=18), rand(2, 4, 3, 5, seed=19)
    for temperature in (1.0, 4.0):
        torch.testing.assert_close(
            CWDLoss(temperature=temperature)(student, teacher),
            channel_kl(teacher, student, temperature))


def test_bdd_channel_mode_is_cwd_forward_plus_reverse():
    student, teacher = rand(2, 4, 3, 5, seed=20), rand(2, 4, 3, 5, seed=21)
    loss = BalanceDivergenceLoss(forward_temperature=2., reverse_temperature=
                                 3., reverse_weight=0.5,
                                 mode='channel')(student, teacher)
    expected = channel_kl(teacher, student, 2.) + 0.5 * channel_kl(
        student, teacher, 3.)
    torch.testing.assert_close(loss, expected)
    # The pixel mode differs (softmax over classes, not positions).
    assert not torch.allclose(
        BalanceDivergenceLoss(forward_temperature=2., reverse_temperature=3.,
                              reverse_weight=0.5)(student, teacher), loss)


# ------------------------------------------------------------------ DKD
def dkd_reference(student, teacher, labels, alpha, beta, temperature):
    """DKD as in mdistiller (masking by -1000 and probability sums)."""
    gt = F.one_hot(labels, student.size(1)).to(student.dtype)
    other = 1 - gt
    p_s = torch.softmax(student / temperature, 1)
    p_t = torch.softmax(teacher / temperature, 1)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * other).sum(1)], 1)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * other).sum(1)], 1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum() * temperature**2 / len(
        labels)
    p_t2 = torch.softmax(teacher / temperature - 1000. * gt, 1)
    log_p_s2 = F.log_softmax(student / temperature - 1000. * gt, 1)
    nckd = F.kl_div(log_p_s2, p_t2, reduction='sum') * temperature**2 / len(
        labels)
    return alpha * tckd + beta * nckd


def test_dkd_matches_independent_definition():
    student, teacher = rand(8, 10, seed=22), rand(8, 10, seed=23)
    labels = labels_for(8, 10, seed=24)
    for alpha, beta, temperature in ((1., 8., 4.), (0.5, 2., 1.)):
        torch.testing.assert_close(
            DKDLoss(alpha=alpha, beta=beta,
                    temperature=temperature)(student, teacher, labels),
            dkd_reference(student, teacher, labels, alpha, beta,
                          temperature))
    # beta = 0: the target-vs-rest binary KL only; alpha = 0: NCKD only.
    tckd = DKDLoss(alpha=1., beta=0.)(student, teacher, labels)
    nckd = DKDLoss(alpha=0., beta=1.)(student, teacher, labels)
    torch.testing.assert_close(
        DKDLoss(alpha=2., beta=3.)(student, teacher, labels),
        2 * tckd + 3 * nckd)


def test_dkd_stays_finite_when_target_probability_saturates():
    student = torch.zeros(2, 5, dtype=torch.float64)
    teacher = torch.zeros(2, 5, dtype=torch.float64)
    labels = torch.tensor([1, 3])
    student[torch.arange(2), labels] = 1e4  # p_target = 1 exactly
    student.requires_grad_()
    loss = DKDLoss()(student, teacher, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss > 100
    assert torch.isfinite(student.grad).all()


# ----------------------------------------------------------------- DIST
def official_dist(logits_student, logits_teacher, beta, gamma, tau):
    """DIST as the authors' code (DIST_KD; mmrazor's DISTLoss is the same)
    writes it, transcribed: a hand-written cosine of the vectors centred
    along dim 1 with eps = 1e-8 *added* to the product of the norms (not
    F.cosine_similarity, which clamps each norm separately); inter over
    rows, intra over the transposed (class) columns; softmax with tau and
    a tau^2 factor on both terms."""

    def cosine_similarity(a, b, eps=1e-8):
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    def pearson_correlation(a, b, eps=1e-8):
        return cosine_similarity(a - a.mean(1).unsqueeze(1),
                                 b - b.mean(1).unsqueeze(1), eps)

    def inter_class_relation(y_s, y_t):
        return 1 - pearson_correlation(y_s, y_t).mean()

    def intra_class_relation(y_s, y_t):
        return inter_class_relation(y_s.transpose(0, 1),
                                    y_t.transpose(0, 1))

    y_s = (logits_student / tau).softmax(dim=1)
    y_t = (logits_teacher / tau).softmax(dim=1)
    inter_loss = tau**2 * inter_class_relation(y_s, y_t)
    intra_loss = tau**2 * intra_class_relation(y_s, y_t)
    return beta * inter_loss + gamma * intra_loss


def _value_and_grad(fn, student):
    student = student.detach().clone().requires_grad_()
    value = fn(student)
    grad, = torch.autograd.grad(value, student)
    return value.detach(), grad


def _assert_rel(actual, expected, rel):
    """|actual - expected| <= rel * max|expected| (elementwise for
    gradients: relative to the largest entry, as entries can be ~0)."""
    scale = expected.abs().max().clamp(min=1e-30)
    assert (actual - expected).abs().max() <= rel * scale, (
        (actual - expected).abs().max().item(), scale.item())


DIST_CASES = {
    # (rows, classes), logit scale, T, beta, gamma
    'cifar': ((8, 10), 2.0, 1.0, 1.0, 1.0),
    'weighted_T4': ((8, 10), 2.0, 4.0, 2.0, 0.5),
    # saturated softmax: columns of ~0 probabilities, norms << eps
    'saturated_32x1000': ((32, 1000), 10.0, 1.0, 1.0, 1.0),
    # near-uniform probabilities: tiny deviations from 1/C
    'near_uniform_T4': ((16, 100), 0.3, 4.0, 1.0, 1.0),
}


@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
@pytest.mark.parametrize('case', DIST_CASES)
def test_dist_matches_official_code(case, dtype):
    shape, scale, tau, beta, gamma = DIST_CASES[case]
    student = rand(*shape, seed=25, scale=scale).to(dtype)
    teacher = rand(*shape, seed=26, scale=scale).to(dtype)
    loss_fn = DISTLoss(beta=beta, gamma=gamma, temperature=tau)
    ours = _value_and_grad(lambda s: loss_fn(s, teacher), student)
    official = _value_and_grad(
        lambda s: official_dist(s, teacher, beta, gamma, tau), student)
    rel = 1e-6 if dtype == torch.float32 else 1e-10
    _assert_rel(ours[0], official[0], rel)
    _assert_rel(ours[1], official[1], rel)


def test_dist_official_gradient_at_a_constant_column():
    """A class column of exactly equal student probabilities (here all
    rows the same): correlation 0, gradient b'/eps as in the official code;
    zero_grad_where_constant gives the old zero-gradient form instead."""
    teacher = rand(6, 5, seed=27)
    student = rand(1, 5, seed=28).expand(6, 5).contiguous()
    official = _value_and_grad(
        lambda s: official_dist(s, teacher, 0., 1., 1.), student)
    ours = _value_and_grad(
        lambda s: DISTLoss(beta=0., gamma=1.)(s, teacher), student)
    _assert_rel(ours[0], official[0], 1e-10)
    _assert_rel(ours[1], official[1], 1e-10)
    assert ours[1].abs().max() > 1e5  # ~1/eps
    safe = _value_and_grad(
        lambda s: DISTLoss(beta=0., gamma=1., zero_grad_where_constant=True)
        (s, teacher), student)
    torch.testing.assert_close(safe[0], ours[0])  # both: rho = 0 per column
    assert safe[1].abs().max() < 1e-12


def test_dist_dense_is_official_over_pixels_and_ignores_rows():
    """(N, C, H, W): every pixel is a row (DIST_KD's segmentation code);
    ignored pixels are as if removed."""
    student, teacher = rand(2, 5, 3, 4, seed=29), rand(2, 5, 3, 4, seed=30)

    def rows(x):
        return x.permute(0, 2, 3, 1).reshape(-1, 5)

    loss_fn = DISTLoss(beta=1., gamma=2., temperature=2.)
    ours = _value_and_grad(lambda s: loss_fn(s, teacher), student)
    official = _value_and_grad(
        lambda s: official_dist(rows(s), rows(teacher), 1., 2., 2.), student)
    _assert_rel(ours[0], official[0], 1e-10)
    _assert_rel(ours[1], official[1], 1e-10)
    labels = labels_for(24, 5, seed=31).view(2, 3, 4)
    labels[0, 1] = 255
    keep = labels.reshape(-1) != 255
    masked = DISTLoss(beta=1., gamma=2., temperature=2., ignore_index=255)
    ours = _value_and_grad(lambda s: masked(s, teacher, labels), student)
    official = _value_and_grad(
        lambda s: official_dist(rows(s)[keep], rows(teacher)[keep], 1., 2.,
                                2.), student)
    _assert_rel(ours[0], official[0], 1e-10)
    _assert_rel(ours[1], official[1], 1e-10)


def test_dist_inter_and_intra_are_separate_terms():
    student, teacher = rand(8, 10, seed=25), rand(8, 10, seed=26)
    inter = DISTLoss(beta=1., gamma=0.)(student, teacher)
    intra = DISTLoss(beta=0., gamma=1.)(student, teacher)
    assert abs(inter.item() - intra.item()) > 1e-3
    torch.testing.assert_close(
        DISTLoss(beta=2., gamma=3.)(student, teacher), 2 * inter + 3 * intra)


# ------------------------------------------- closed-form gradients
def _softmax_kl_rows(p_logits, q_logits, temperature, dim=1):
    p = torch.softmax(p_logits / temperature, dim)
    return (p * (torch.log_softmax(p_logits / temperature, dim) -
                 torch.log_softmax(q_logits / temperature, dim))).sum(dim)


GRADIENT_CASES = {
    'KDLoss': (dict(temperature=3.), lambda s, t, y: 9 * _softmax_kl_rows(
        t, s, 3.).mean()),
    'BalanceDivergenceLoss': (
        dict(forward_temperature=2., reverse_temperature=3.,
             forward_weight=0.7, reverse_weight=1.9),
        lambda s, t, y: 0.7 * 4 * _softmax_kl_rows(t, s, 2.).mean() +
        1.9 * 9 * _softmax_kl_rows(s, t, 3.).mean()),
    'BalanceDivergenceLoss/same_T': (
        dict(forward_temperature=2., reverse_temperature=2.,
             forward_weight=0.7, reverse_weight=1.9),
        lambda s, t, y: 4 * (0.7 * _softmax_kl_rows(t, s, 2.) + 1.9 *
                             _softmax_kl_rows(s, t, 2.)).mean()),
    'DKDLoss': (dict(alpha=0.5, beta=2., temperature=2.),
                lambda s, t, y: dkd_reference(s, t, y, 0.5, 2., 2.)),
}


@pytest.mark.parametrize('name', GRADIENT_CASES)
def test_fused_gradients_equal_autograd_of_the_formula(name):
    """The losses compute their gradient in closed form in the forward
    pass: it equals autograd through the written-out formula."""
    kwargs, formula = GRADIENT_CASES[name]
    student, teacher = rand(8, 10, seed=32), rand(8, 10, seed=33)
    labels = labels_for(8, 10, seed=34)
    loss_fn = MODELS.build(dict(type='mmrankkd.' + name.split('/')[0],
                                **kwargs))
    ours = _value_and_grad(lambda s: loss_fn(s, teacher, labels), student)
    reference = _value_and_grad(lambda s: formula(s, teacher, labels),
                                student)
    torch.testing.assert_close(ours[0], reference[0])
    torch.testing.assert_close(ours[1], reference[1])


def test_cwd_gradient_equals_autograd_of_mmrazor_transcription():
    student, teacher = rand(2, 4, 3, 5, seed=35), rand(2, 4, 3, 5, seed=36)
    ours = _value_and_grad(lambda s: CWDLoss(temperature=2.)(s, teacher),
                           student)
    reference = _value_and_grad(lambda s: channel_kl(teacher, s, 2.),
                                student)
    torch.testing.assert_close(ours[0], reference[0])
    torch.testing.assert_close(ours[1], reference[1])


BLOCKED_CASES = {
    'CWDLoss': dict(temperature=2.),
    'KDLoss': dict(temperature=3.),
    'BalanceDivergenceLoss': dict(forward_temperature=2.,
                                  reverse_temperature=2., reverse_weight=.7),
    'BalanceDivergenceLoss/channel': dict(
        forward_temperature=2., reverse_temperature=3., reverse_weight=.7,
        mode='channel'),
}


@pytest.mark.parametrize('ignore_index', [None, 255])
@pytest.mark.parametrize('name', BLOCKED_CASES)
def test_cpu_blocks_give_the_one_pass_values_and_gradients(
        name, ignore_index, monkeypatch):
    """On CPU, softmax_kl walks large logits in blocks of images (so that
    its temporaries are reused, not fresh pages): blocks of 2 images of 5,
    the last one short, weights and masks sliced per block, a
    channels_last student, an image with every pixel ignored."""
    from mmrankkd.models.losses import fused
    student = rand(5, 4, 3, 6, seed=40).to(
        memory_format=torch.channels_last)
    teacher = rand(5, 4, 3, 6, seed=41)
    labels = torch.randint(0, 4, (5, 3, 6),
                           generator=torch.Generator().manual_seed(42))
    labels[1] = 255
    labels[3, :2] = 255
    loss_fn = MODELS.build(dict(type='mmrankkd.' + name.split('/')[0],
                                ignore_index=ignore_index,
                                **BLOCKED_CASES[name]))
    slice_bytes = student[0].numel() * student.element_size()
    monkeypatch.setattr(fused, 'CPU_BLOCK_BYTES', 2 * slice_bytes)
    dim = -1 if 'channel' in name or name == 'CWDLoss' else 1
    assert fused._block_rows(student.flatten(2), dim) == 2
    blocked = _value_and_grad(lambda s: loss_fn(s, teacher, labels),
                              student)
    monkeypatch.setattr(fused, 'CPU_BLOCK_BYTES', 1 << 40)
    one_pass = _value_and_grad(lambda s: loss_fn(s, teacher, labels),
                               student)
    torch.testing.assert_close(blocked[0], one_pass[0], rtol=1e-12,
                               atol=0)
    torch.testing.assert_close(blocked[1], one_pass[1], rtol=1e-12,
                               atol=1e-15)
    if name == 'CWDLoss' and ignore_index is None:
        torch.testing.assert_close(blocked[0], channel_kl(teacher, student,
                                                          2.))
