"""MLKDLoss against a transcription of the authors' code (values and
gradients, saturated logits included), its LS variant, and its budgets."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from loss_profiling import aten_op_counts, host_syncs, peak_extra_bytes

from mmrankkd.models.losses import MLKDLoss
from mmrankkd.models.losses.utils import READ_CHECKS


# ------------------------------------------------------------------
# Transcription of KD_ours.forward_train (Jin-Ying/Multi-Level-Logit-
# Distillation, mdistiller/distillers/KD_ours.py) and of the LS authors'
# MLKD.py (sunshangquan/logit-standardization-KD): the loss terms it sums
# (loss_kd = weak + "strong", loss_cc weak, loss_bc weak), CE left out (the
# distiller runs the student's own CE on both views).
def _normalize(logit):
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def _kd_loss(s_in, t_in, temperature, logit_stand=False):
    s = _normalize(s_in) if logit_stand else s_in
    t = _normalize(t_in) if logit_stand else t_in
    log_pred_student = F.log_softmax(s / temperature, dim=1)
    pred_teacher = F.softmax(t / temperature, dim=1)
    loss_kd = F.kl_div(log_pred_student, pred_teacher,
                       reduction='none').sum(1).mean()
    loss_kd *= temperature**2
    return loss_kd


def _cc_loss(s, t, temperature):
    batch_size, class_num = t.shape
    pred_student = F.softmax(s / temperature, dim=1)
    pred_teacher = F.softmax(t / temperature, dim=1)
    student_matrix = torch.mm(pred_student.transpose(1, 0), pred_student)
    teacher_matrix = torch.mm(pred_teacher.transpose(1, 0), pred_teacher)
    return ((teacher_matrix - student_matrix)**2).sum() / class_num


def _bc_loss(s, t, temperature):
    batch_size, class_num = t.shape
    pred_student = F.softmax(s / temperature, dim=1)
    pred_teacher = F.softmax(t / temperature, dim=1)
    student_matrix = torch.mm(pred_student, pred_student.transpose(1, 0))
    teacher_matrix = torch.mm(pred_teacher, pred_teacher.transpose(1, 0))
    return ((teacher_matrix - student_matrix)**2).sum() / batch_size


def authors_mlkd(s_w, t_w, s_s, t_s, temperature=4.0, kd_weight=0.9,
                 logit_stand=False):
    pred_teacher_weak = F.softmax(t_w.detach(), dim=1)
    confidence, _ = pred_teacher_weak.max(dim=1)
    conf_thresh = np.percentile(confidence.cpu().numpy().flatten(), 50)
    mask = confidence.le(conf_thresh).bool()
    class_confidence = torch.sum(pred_teacher_weak, dim=0)
    class_confidence_thresh = np.percentile(
        class_confidence.cpu().numpy().flatten(), 50)
    class_conf_mask = class_confidence.le(class_confidence_thresh).bool()

    temps = (temperature, 3.0, 5.0, 2.0, 6.0)
    w = kd_weight
    loss_kd_weak = sum(
        w * ((_kd_loss(s_w, t_w, T, logit_stand) * mask).mean())
        for T in temps)
    loss_kd_strong = sum(
        w * _kd_loss(s_s, t_s, T, logit_stand) for T in temps[:3]) + sum(
            w * _kd_loss(s_w, t_w, T, logit_stand) for T in temps[3:])
    loss_cc_weak = sum(w * ((_cc_loss(s_w, t_w, T) * class_conf_mask).mean())
                       for T in temps)
    loss_bc_weak = sum(w * ((_bc_loss(s_w, t_w, T) * mask).mean())
                       for T in temps)
    return loss_kd_weak + loss_kd_strong + loss_cc_weak + loss_bc_weak


# ------------------------------------------------------------------
def views(n, c, scale=3.0, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    out = [torch.randn(n, c, generator=gen, dtype=dtype) * scale
           for _ in range(4)]
    out[0].requires_grad_()
    out[2].requires_grad_()
    return out


def ours_and_authors(inputs, **kwargs):
    ls = kwargs.pop('logit_standardization', False)
    temperature = kwargs.pop('temperature', 4.0)
    weight = kwargs.pop('kd_weight', 0.9)
    loss = MLKDLoss(temperatures=(temperature, 3., 5., 2., 6.),
                    logit_standardization=ls, loss_weight=weight)
    s_w, t_w, s_s, t_s = inputs
    ours = loss(s_w, t_w, s_s, t_s)
    g_ours = torch.autograd.grad(ours, (s_w, s_s))
    ref = authors_mlkd(s_w, t_w, s_s, t_s, temperature, weight, ls)
    g_ref = torch.autograd.grad(ref, (s_w, s_s))
    return (ours, g_ours), (ref, g_ref)


@pytest.mark.parametrize('n,c', [(8, 5), (5, 8), (7, 7), (6, 3)])
@pytest.mark.parametrize('ls', [False, True])
def test_equals_authors_code_value_and_gradient(n, c, ls):
    # n < c and n > c take both forms of the Gram gaps; odd and even
    # batch sizes both medians.
    kwargs = dict(logit_standardization=ls)
    if ls:  # the LS authors' MLKD + LS: base temperature 2, weight 9
        kwargs.update(temperature=2.0, kd_weight=9.0)
    (ours, g_ours), (ref, g_ref) = ours_and_authors(views(n, c, seed=n + c),
                                                    **kwargs)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize('ls', [False, True])
def test_equals_authors_code_saturated_float32(ls):
    # Logits of magnitude 1e4: one-hot softmaxes, teacher confidences tied
    # at 1 (the median mask then keeps every sample).
    inputs = views(8, 10, scale=1e4, seed=3, dtype=torch.float32)
    (ours, g_ours), (ref, g_ref) = ours_and_authors(
        inputs, logit_standardization=ls)
    assert torch.isfinite(ours) and all(
        torch.isfinite(g).all() for g in g_ours)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_float32_ties_at_the_median_round_as_numpy():
    # Two middle confidences one float32 step apart: numpy's midpoint rounds
    # to the upper one, so the mask keeps all four samples (not two).
    s_w, t_w, s_s, t_s = views(4, 3, seed=5, dtype=torch.float32)
    t_w = torch.tensor([[30., 0., 0.], [30., 0., 0.], [17., 0., 0.],
                        [17., 0., 0.]])
    (ours, g_ours), (ref, g_ref) = ours_and_authors((s_w, t_w, s_s, t_s))
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_zero_when_student_equals_teacher_and_named_errors():
    s_w, _, s_s, _ = views(6, 5)
    loss = MLKDLoss()(s_w, s_w.detach(), s_s, s_s.detach())
    assert abs(loss.item()) < 1e-12
    with pytest.raises(ValueError, match='dense'):
        x = torch.randn(2, 3, 4, 4)
        MLKDLoss()(x, x, x, x)
    with pytest.raises(ValueError, match='strong_kd_views'):
        MLKDLoss(strong_kd_views=('strong', 'weird', 'weak', 'weak', 'weak'))
    with pytest.raises(ValueError, match='same samples'):
        MLKDLoss()(s_w, s_w, s_s[:3], s_s[:3])


# Per-GPU logit shapes of tools/benchmark_losses.py (classification).
@pytest.mark.parametrize('shape', [(32, 1000), (256, 1000), (64, 100),
                                   (128, 100)])
@pytest.mark.parametrize('ls', [False, True])
def test_ops_and_memory_budget(shape, ls):
    s_w, t_w, s_s, t_s = views(*shape, dtype=torch.float32)
    loss_fn = MLKDLoss(logit_standardization=ls)

    def step():
        s_w.grad = s_s.grad = None
        loss_fn(s_w, t_w, s_s, t_s).backward()

    step()  # the first call reads the value checks
    counts = aten_op_counts(step)
    assert sum(counts.values()) <= 150, counts.most_common(12)
    # Memory: at most 16x the logits (one view's student logits, as for
    # every other loss, times the two views).
    logits_bytes = 2 * s_w.numel() * s_w.element_size()
    assert peak_extra_bytes(step) <= 16 * logits_bytes


def test_no_host_sync_after_the_first_call():
    s_w, t_w, s_s, t_s = views(6, 5, dtype=torch.float32)
    loss_fn = MLKDLoss(validate_interval=3)

    def step():
        loss_fn(s_w, t_w, s_s, t_s).backward()

    reads = {READ_CHECKS: 1}
    assert host_syncs(step) == reads
    assert not host_syncs(step)
    assert host_syncs(step) == reads
