"""DeiT's distillation token: DeiTDistillationLoss against a transcription
of the DeiT authors' DistillationLoss, and a tiny distilled DeiT student
trained through the distiller (class token on the labels, distillation token
on a CNN teacher; prediction the average of the two heads)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_distiller import save_teacher, tiny_cls

from mmrankkd.models.distillers import LogitDistiller
from mmrankkd.models.distillers.distillation_token import token_logits
from mmrankkd.models.losses import DeiTDistillationLoss


def deit_distillation(outputs_kd, teacher_outputs, mode, tau):
    """facebookresearch/deit losses.py, DistillationLoss: its distillation
    term (before the alpha weighting)."""
    if mode == 'soft':
        T = tau
        return F.kl_div(
            F.log_softmax(outputs_kd / T, dim=1),
            F.log_softmax(teacher_outputs / T, dim=1),
            reduction='sum', log_target=True) * (T * T) / outputs_kd.numel()
    return F.cross_entropy(outputs_kd, teacher_outputs.argmax(dim=1))


@pytest.mark.parametrize('mode,tau', [('hard', 1.0), ('soft', 1.0),
                                      ('soft', 3.0)])
@pytest.mark.parametrize('scale', [2.0, 1e4])  # 1e4: saturated
def test_loss_equals_deit_code(mode, tau, scale):
    gen = torch.Generator().manual_seed(0)
    dtype = torch.float64 if scale < 10 else torch.float32
    student = (torch.randn(6, 7, generator=gen, dtype=dtype) *
               scale).requires_grad_()
    teacher = torch.randn(6, 7, generator=gen, dtype=dtype) * scale
    ours = DeiTDistillationLoss(mode=mode, temperature=tau,
                                loss_weight=1.0)(student, teacher)
    ref = deit_distillation(student, teacher, mode, tau)
    g_ours, = torch.autograd.grad(ours, student)
    g_ref, = torch.autograd.grad(ref, student)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(
        rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, ref, **tol)
    torch.testing.assert_close(g_ours, g_ref, **tol)
    assert torch.isfinite(g_ours).all()


def tiny_deit(num_classes=10, head_weight=0.5):
    return dict(
        _scope_='mmpretrain', type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor',
                               num_classes=num_classes),
        backbone=dict(type='DistilledVisionTransformer',
                      arch=dict(embed_dims=16, num_layers=1, num_heads=2,
                                feedforward_channels=32),
                      img_size=32, patch_size=8),
        neck=None,
        head=dict(type='DeiTClsHead', num_classes=num_classes,
                  in_channels=16,
                  loss=dict(type='CrossEntropyLoss',
                            loss_weight=head_weight)))


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return save_teacher(tiny_cls(8),
                        tmp_path_factory.mktemp('deit') / 't.pth')[0]


def batch(model, n=4):
    from mmpretrain.structures import DataSample
    gen = torch.Generator().manual_seed(1)
    samples = [DataSample().set_gt_label(i % 10) for i in range(n)]
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32), generator=gen)
                        .float() for _ in range(n)], data_samples=samples)
    return model.data_preprocessor(data, True)


@pytest.mark.parametrize('mode', ['hard', 'soft'])
def test_deit_student_trains_both_tokens(ckpt, mode):
    torch.manual_seed(0)
    model = LogitDistiller(
        student=tiny_deit(), teacher=tiny_cls(8), teacher_ckpt=ckpt,
        distill_losses=dict(loss_deit=dict(
            type='mmrankkd.DeiTDistillationLoss', mode=mode,
            temperature=2.0, loss_weight=0.5))).train()
    assert model.distillation_token
    data = batch(model)
    labels = torch.cat([ds.gt_label for ds in data['data_samples']])
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # mmpretrain's "cannot train" warning
        losses = model(**data, mode='loss')
    z_cls, z_dist = token_logits(model.student, data['inputs'])
    t_logits = model.teacher_logits(data['inputs'], data['data_samples'])
    # DeiT: 0.5 * CE(class token, labels) + 0.5 * distillation(dist token).
    torch.testing.assert_close(losses['cls.loss'],
                               0.5 * F.cross_entropy(z_cls, labels))
    torch.testing.assert_close(
        losses['distill.loss_deit'],
        0.5 * deit_distillation(z_dist, t_logits, mode, 2.0))
    model.parse_losses(losses)[0].backward()
    head = model.student.head.layers
    for layer in (head.head, head.head_dist):
        assert layer.weight.grad is not None and \
            layer.weight.grad.abs().sum() > 0
    # Prediction: mmpretrain's head, the mean of the two tokens' logits.
    model.eval()
    preds = model(**batch(model), mode='predict')
    with torch.no_grad():
        z_cls, z_dist = token_logits(model.student,
                                     batch(model)['inputs'])
    torch.testing.assert_close(
        torch.stack([p.pred_score for p in preds]),
        F.softmax((z_cls + z_dist) / 2, dim=1))


def test_deit_student_refuses_a_student_tap(ckpt):
    with pytest.raises(ValueError, match='student_tap'):
        LogitDistiller(student=tiny_deit(), teacher=tiny_cls(8),
                       teacher_ckpt=ckpt,
                       student_tap=dict(module='head.layers.head'),
                       distill_losses=dict(loss_kd=dict(
                           type='mmrankkd.KDLoss')))


def test_other_distillation_heads_still_refused(ckpt):
    levit = dict(tiny_deit(), head=dict(
        type='LeViTClsHead', num_classes=10, in_channels=16))
    with pytest.raises(ValueError, match='distillation token'):
        LogitDistiller(student=levit, teacher=tiny_cls(8), teacher_ckpt=ckpt,
                       distill_losses=dict(loss_kd=dict(
                           type='mmrankkd.KDLoss')))


def test_deit_student_without_task_loss_is_refused(ckpt):
    """Nothing would train the class-token head its predictions average."""
    with pytest.raises(ValueError, match='class-token head'):
        LogitDistiller(student=tiny_deit(), teacher=tiny_cls(8),
                       teacher_ckpt=ckpt, student_task_loss=False,
                       distill_losses=dict(loss_deit=dict(
                           type='mmrankkd.DeiTDistillationLoss')))
