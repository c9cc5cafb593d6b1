"""TeacherStudentAgreement's values on cases whose agreement and Kendall tau
are known, fed the way validation feeds it: data samples with the teacher's
predictions attached (as DistillValLoop does), through mmengine's
Evaluator (process, then evaluate)."""
import numpy as np
import pytest
import torch
from mmengine.evaluator import Evaluator
from mmengine.structures import PixelData

from mmrankkd.evaluation import TeacherStudentAgreement

C, H, W = 5, 4, 6


def seg_sample(s_logits, t_logits, gt=None, s_pred=None, t_pred=None):
    """A SegDataSample as mmseg's predict returns it, with the teacher's
    prediction attached as ``attach_teacher_predictions`` does."""
    from mmseg.structures import SegDataSample
    sample = SegDataSample()
    s_pred = s_logits.argmax(0, keepdim=True) if s_pred is None else s_pred
    t_pred = t_logits.argmax(0, keepdim=True) if t_pred is None else t_pred
    sample.pred_sem_seg = PixelData(data=s_pred)
    sample.seg_logits = PixelData(data=s_logits)
    sample.set_field(PixelData(data=t_pred), 'teacher_pred_sem_seg')
    sample.set_field(PixelData(data=t_logits), 'teacher_seg_logits')
    if gt is not None:
        sample.gt_sem_seg = PixelData(data=gt)
    return sample


def cls_sample(s_score, t_score):
    from mmpretrain.structures import DataSample
    sample = DataSample().set_pred_score(s_score).set_pred_label(
        s_score.argmax().view(1))
    sample.set_field(t_score, 'teacher_pred_score')
    sample.set_field(t_score.argmax().view(1), 'teacher_pred_label')
    return sample


def evaluate(samples, **kwargs):
    kwargs.setdefault('ignore_index', 255)  # DistillValLoop sets the student's
    evaluator = Evaluator([TeacherStudentAgreement(**kwargs)])
    evaluator.process(data_samples=samples, data_batch=None)
    return evaluator.evaluate(len(samples))


def tau_a(a, b):
    """Kendall's tau-a by counting pairs: (concordant - discordant) / all."""
    n = len(a)
    total = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
                for i in range(n) for j in range(i + 1, n))
    return total / (n * (n - 1) / 2)


def logits(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_identical_logits_agree_fully():
    x = logits(0, C, H, W)
    res = evaluate([seg_sample(x, x.clone())])
    assert res == {'agreement/top1': pytest.approx(100.0),
                   'agreement/kendall_tau': pytest.approx(1.0)}


def test_reversed_ranking_gives_tau_minus_one():
    x = logits(1, C, H, W)
    res = evaluate([seg_sample(x, -x)])
    # argmax of -x is the argmin of x: no pixel agrees
    assert res['agreement/top1'] == pytest.approx(0.0)
    assert res['agreement/kendall_tau'] == pytest.approx(-1.0)


def test_half_of_the_pixels_disagreeing():
    x = logits(2, C, H, W)
    s_pred = x.argmax(0, keepdim=True)
    t_pred = s_pred.clone()
    t_pred[:, :, :W // 2] = (t_pred[:, :, :W // 2] + 1) % C
    res = evaluate([seg_sample(x, x.clone(), s_pred=s_pred, t_pred=t_pred)])
    assert res['agreement/top1'] == pytest.approx(50.0)


def test_ignored_pixels_are_left_out_of_agreement_and_tau():
    x = logits(3, C, H, W)
    t = x.clone()
    gt = torch.zeros(1, H, W, dtype=torch.long)
    # The left half is ignored; there the teacher's ranking is reversed, so
    # counting those pixels would give 50 % and tau 0.
    gt[:, :, :W // 2] = 255
    t[:, :, :W // 2] = -x[:, :, :W // 2]
    res = evaluate([seg_sample(x, t, gt=gt)])
    assert res['agreement/top1'] == pytest.approx(100.0)
    assert res['agreement/kendall_tau'] == pytest.approx(1.0)
    # without ground truth every pixel counts
    res = evaluate([seg_sample(x, t)])
    assert res['agreement/top1'] == pytest.approx(50.0)
    assert res['agreement/kendall_tau'] == pytest.approx(0.0)
    # a custom ignore index
    gt[:, :, :W // 2] = 7
    res = evaluate([seg_sample(x, t, gt=gt)], ignore_index=7)
    assert res['agreement/kendall_tau'] == pytest.approx(1.0)


def test_pixel_tau_is_the_mean_of_per_pixel_kendall_tau():
    stats = pytest.importorskip('scipy.stats')
    s, t = logits(4, C, H, W), logits(5, C, H, W)
    gt = torch.zeros(1, H, W, dtype=torch.long)
    gt[0, 0, :] = 255
    res = evaluate([seg_sample(s, t, gt=gt)])
    valid = (gt[0] != 255).flatten()
    s_rows = s.flatten(1).t()[valid].numpy()
    t_rows = t.flatten(1).t()[valid].numpy()
    expected = np.mean([stats.kendalltau(a, b)[0]
                        for a, b in zip(s_rows, t_rows)])
    assert res['agreement/kendall_tau'] == pytest.approx(expected, abs=1e-6)
    agree = (s.argmax(0) == t.argmax(0)).flatten()[valid].float().mean()
    assert res['agreement/top1'] == pytest.approx(100.0 * float(agree))


def test_agreement_is_pixel_weighted_over_images():
    # image 1: 4 valid pixels, all agree; image 2: 24 pixels, none agree
    x = logits(6, C, H, W)
    gt = torch.full((1, H, W), 255, dtype=torch.long)
    gt[0, 0, :4] = 0
    res = evaluate([seg_sample(x, x.clone(), gt=gt), seg_sample(x, -x)])
    assert res['agreement/top1'] == pytest.approx(100.0 * 4 / (4 + H * W))
    assert res['agreement/kendall_tau'] == pytest.approx(
        (4 * 1.0 + H * W * -1.0) / (4 + H * W))


def test_pixel_sampling_is_bounded_and_seeded():
    s, t = logits(7, C, 16, 16), logits(8, C, 16, 16)
    first = evaluate([seg_sample(s, t)], max_pixels=10)
    again = evaluate([seg_sample(s, t)], max_pixels=10)
    full = evaluate([seg_sample(s, t)])
    assert first == again
    # agreement always counts every pixel; tau only the sampled ones
    assert first['agreement/top1'] == full['agreement/top1']
    assert first['agreement/kendall_tau'] != full['agreement/kendall_tau']
    same = evaluate([seg_sample(s, s.clone())], max_pixels=10)
    assert same['agreement/kendall_tau'] == pytest.approx(1.0)


def test_classification_top1_and_tau_against_scipy():
    stats = pytest.importorskip('scipy.stats')
    num = 10
    scores = [(logits(10 + i, num).softmax(0), logits(30 + i, num).softmax(0))
              for i in range(6)]
    # the first two samples: the teacher is the student, so they agree
    scores[0] = (scores[0][0], scores[0][0].clone())
    scores[1] = (scores[1][0], scores[1][0].clone())
    res = evaluate([cls_sample(s, t) for s, t in scores])
    agree = [int(s.argmax() == t.argmax()) for s, t in scores]
    taus = [stats.kendalltau(s.numpy(), t.numpy())[0] for s, t in scores]
    assert res['agreement/top1'] == pytest.approx(100.0 * np.mean(agree))
    assert res['agreement/kendall_tau'] == pytest.approx(np.mean(taus),
                                                         abs=1e-6)
    assert taus[0] == pytest.approx(1.0)


def test_tau_is_tau_a_with_ties():
    """With tied scores the metric is tau-a (tied pairs count as neither
    concordant nor discordant, the denominator stays C (C-1) / 2)."""
    s = torch.tensor([1., 1., 2., 3.])
    t = torch.tensor([1., 2., 2., 0.])
    res = evaluate([cls_sample(s, t)])
    assert res['agreement/kendall_tau'] == pytest.approx(
        tau_a(s.numpy(), t.numpy()))
    same = evaluate([cls_sample(s, s.clone())])
    assert same['agreement/kendall_tau'] == pytest.approx(5 / 6)


def test_missing_teacher_predictions_name_the_fix():
    from mmseg.structures import SegDataSample
    sample = SegDataSample()
    sample.pred_sem_seg = PixelData(data=torch.zeros(1, H, W,
                                                     dtype=torch.long))
    with pytest.raises(ValueError, match='DistillValLoop'):
        evaluate([sample])
