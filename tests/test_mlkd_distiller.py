"""Two-view distillation (MLKD): the pipeline yields a weak and a strong view
of each image, the distiller preprocesses each, runs the student's own loss
and the teacher on both, and hands MLKD the logits of the right views."""
import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope
from mmpretrain.registry import TRANSFORMS
from test_distiller import save_teacher, tiny_cls

from mmrankkd.models.distillers import LogitDistiller

MLKD = dict(loss_mlkd=dict(type='mmrankkd.MLKDLoss', loss_weight=0.9))
WEAK = [dict(type='RandomCrop', crop_size=32, padding=4),
        dict(type='RandomFlip', prob=0.5, direction='horizontal')]
TWO_VIEWS = [
    dict(type='MultiView', num_views=[1, 1],
         transforms=[WEAK, WEAK + [dict(type='mmrankkd.MLKDRandAugment')]]),
    dict(type='PackInputs'),
]


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return save_teacher(tiny_cls(8),
                        tmp_path_factory.mktemp('mlkd') / 't.pth')[0]


def batch(pipeline, n=4, seed=0):
    """A collated batch of ``n`` random RGB images through ``pipeline``."""
    rng = np.random.RandomState(seed)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        transform = TRANSFORMS.build(
            dict(type='Compose', transforms=pipeline))
    items = [transform(dict(img=rng.randint(0, 256, (32, 32, 3), np.uint8),
                            gt_label=i % 10)) for i in range(n)]
    return pseudo_collate(items)


def distiller(ckpt, losses=MLKD):
    model = LogitDistiller(student=tiny_cls(4), teacher=tiny_cls(8),
                           teacher_ckpt=ckpt, distill_losses=losses)
    return model.train()


def record_calls(module, store):
    """Forward hook appending (input, output) of each call (a tuple
    output: its first tensor)."""

    def hook(m, args, out):
        out = out[0] if isinstance(out, tuple) else out
        store.append((args[0].detach(), out.detach()))

    return module.register_forward_hook(hook)


def test_both_views_through_student_and_teacher(ckpt):
    torch.manual_seed(0)
    model = distiller(ckpt)
    data = batch(TWO_VIEWS)
    assert len(data['inputs']) == 2  # [weak images], [strong images]
    expected = [model.data_preprocessor(
        dict(inputs=view, data_samples=data['data_samples']),
        True)['inputs'] for view in data['inputs']]
    assert not torch.equal(expected[0], expected[1])
    s_calls, t_calls, loss_args = [], [], []
    record_calls(model.student.backbone, s_calls)
    record_calls(model.teacher.backbone, t_calls)
    s_fc, t_fc = [], []
    record_calls(model.student.head.fc, s_fc)
    record_calls(model.teacher.head.fc, t_fc)
    mlkd = model.distill_losses['loss_mlkd']
    mlkd.register_forward_pre_hook(
        lambda m, args: loss_args.append([a.detach() for a in args]))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.student.parameters()]
    log = model.train_step(data, optim)
    # Student and teacher: one forward per view, weak first.
    assert len(s_calls) == len(t_calls) == 2
    for calls in (s_calls, t_calls):
        for (inputs, _), view in zip(calls, expected):
            torch.testing.assert_close(inputs, view)
    # MLKD got (s_weak, t_weak, s_strong, t_strong) from those forwards.
    assert len(loss_args) == 1 and len(loss_args[0]) == 4
    got = loss_args[0]
    for arg, logits in zip(got, [s_fc[0][1], t_fc[0][1], s_fc[1][1],
                                 t_fc[1][1]]):
        torch.testing.assert_close(arg, logits)
    # The student's CE on both views, MLKD, and a step taken.
    assert {'cls.loss', 'cls.strong.loss', 'distill.loss_mlkd'} <= set(log)
    log = {k: float(v.detach()) for k, v in log.items()}
    assert log['loss'] == pytest.approx(
        log['cls.loss'] + log['cls.strong.loss'] + log['distill.loss_mlkd'],
        rel=1e-5)
    assert any(not torch.equal(a, b)
               for a, b in zip(before, model.student.parameters()))
    # Validation stays single-view and student-only.
    model.eval()
    preds = model.val_step(batch([dict(type='PackInputs')]))
    assert len(preds) == 4 and 'pred_label' in preds[0]


def test_one_view_batch_or_one_view_losses_are_named_errors(ckpt):
    model = distiller(ckpt)
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    with pytest.raises(ValueError, match='MultiView'):
        model.train_step(batch([dict(type='PackInputs')]), optim)
    with pytest.raises(ValueError, match='two views|2 views'):
        model(torch.rand(2, 3, 32, 32), [], mode='loss')
    kd_only = distiller(
        ckpt, dict(loss_kd=dict(type='mmrankkd.KDLoss', temperature=4.0)))
    with pytest.raises(ValueError, match='no distill loss takes more'):
        kd_only.train_step(batch(TWO_VIEWS), optim)


def test_one_view_losses_beside_mlkd_get_the_weak_view(ckpt):
    torch.manual_seed(0)
    model = distiller(ckpt, dict(
        loss_mlkd=dict(type='mmrankkd.MLKDLoss'),
        loss_kd=dict(type='mmrankkd.KDLoss', temperature=4.0)))
    args = {}
    for name, loss in model.distill_losses.items():
        loss.register_forward_pre_hook(
            lambda m, a, name=name: args.__setitem__(name, a))
    optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0))
    model.train_step(batch(TWO_VIEWS), optim)
    assert len(args['loss_kd']) == 2
    for a, b in zip(args['loss_kd'], args['loss_mlkd'][:2]):
        assert torch.equal(a, b)


def test_strong_view_ops_and_cutout():
    from PIL import Image

    from mmrankkd.datasets.transforms.randaugment import CUTOUT_FILL, OPS, cutout
    rng = np.random.RandomState(0)
    img = Image.fromarray(rng.randint(0, 256, (32, 32, 3), np.uint8))
    assert len(OPS) == 14  # the authors' augment_list
    for name, op, low, high in OPS:
        for v in (low, high):
            out = np.asarray(op(img, v))
            assert out.shape == (32, 32, 3) and out.dtype == np.uint8, name
    # A cutout of the full width fills a square with the authors' colour.
    np.random.seed(0)
    out = np.asarray(cutout(img, 0.5))
    filled = (out == np.array(CUTOUT_FILL, np.uint8)).all(-1)
    assert 0 < filled.sum() <= 17 * 17
    with pytest.raises(ValueError, match='uint8 RGB'):
        TRANSFORMS.build(dict(type='mmrankkd.MLKDRandAugment'))(
            dict(img=np.zeros((32, 32), np.float32)))


def test_teacher_store_with_two_view_losses_is_refused(ckpt, tmp_path):
    """Both views of a MultiView sample share its store keys: the strong
    view would get the weak view's logits."""
    with pytest.raises(ValueError, match='teacher_store with a two-view'):
        LogitDistiller(student=tiny_cls(4), teacher=tiny_cls(8),
                       teacher_ckpt=ckpt, distill_losses=MLKD,
                       teacher_store=str(tmp_path))
