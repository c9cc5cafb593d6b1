"""What the distiller hands the losses and the loops under the conditions
users train in: mixed precision, EMA copies, custom logit taps, teacher
URLs, validation with teacher predictions."""
import copy

import pytest
import torch
import torch.nn as nn

import mmrankkd  # noqa: F401
from mmrankkd.engine.loops import _follow_student_ignore_index
from mmrankkd.evaluation import TeacherStudentAgreement
from mmrankkd.models.distillers import LogitDistiller
from test_distiller import (KD, cls_batch, save_teacher, seg_batch,
                            seg_distiller, tiny_cls)


class Recorder(nn.Module):
    """A 'loss' that keeps what the distiller passes it."""
    requires_labels = False

    def forward(self, student, teacher, labels=None):
        self.seen = (student.detach().clone(), teacher.clone())
        return student.float().sum() * 0


@pytest.fixture(scope='module')
def cls_pair(tmp_path_factory):
    d = tmp_path_factory.mktemp('cls_rt')
    return save_teacher(tiny_cls(16), d / 'teacher.pth')[0]


@pytest.mark.parametrize('teacher_autocast', [None, 'bf16'])
@pytest.mark.parametrize('kind', ['cls', 'seg'])
def test_losses_get_float32_teacher_logits_under_autocast(
        kind, teacher_autocast, cls_pair, tmp_path):
    if kind == 'cls':
        model = LogitDistiller(
            student=tiny_cls(8), teacher=tiny_cls(16), teacher_ckpt=cls_pair,
            distill_losses=dict(loss_rec=Recorder()),
            teacher_autocast=teacher_autocast)
        batch = cls_batch(model)
    else:
        from test_distiller import tiny_seg
        ckpt = save_teacher(tiny_seg(16), tmp_path / 't.pth')[0]
        model = seg_distiller(ckpt, distill_losses=dict(loss_rec=Recorder()),
                              teacher_autocast=teacher_autocast)
        batch = seg_batch(model)
    model.eval()  # deterministic BN for the comparison
    # The teacher's own logits, outside the training step's autocast.
    with torch.no_grad():
        expected = model.teacher_logits(batch['inputs'],
                                        batch['data_samples'])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        model.loss(batch['inputs'], batch['data_samples'])
    student, teacher = model.distill_losses['loss_rec'].seen
    assert student.dtype == torch.float32
    assert teacher.dtype == torch.float32
    if kind == 'seg' and teacher.shape != expected.shape:
        expected = model.match_teacher(student, expected)
    # Exactly the teacher's float32 logits: never rounded to the student's
    # bf16 (which turns close class pairs into ties).
    assert torch.equal(teacher, expected)


def test_ema_copy_shares_the_teacher(cls_pair):
    from mmengine.model import ExponentialMovingAverage
    model = LogitDistiller(student=tiny_cls(8), teacher=tiny_cls(16),
                           teacher_ckpt=cls_pair, distill_losses=KD)
    teacher_params = {id(p) for p in model.teacher.parameters()}
    ema = ExponentialMovingAverage(model)  # deep-copies the model
    copied = ema.module
    assert copied.teacher is model.teacher
    assert copied.teacher_source is model.teacher_source
    # The student is a real copy, averaged on its own.
    assert copied.student is not model.student
    student_params = {id(p) for p in copied.student.parameters()}
    assert not student_params & {id(p) for p in model.student.parameters()}
    assert not {id(p) for p in copied.parameters()} & teacher_params
    # The copy still distils.
    batch = cls_batch(copied)
    losses = copied.loss(batch['inputs'], batch['data_samples'])
    assert torch.isfinite(losses['distill.loss_kd'])
    # Memory: the copy adds the student's parameters, not the teacher's.
    plain = copy.deepcopy(model.student)
    n_copy = sum(p.numel() for p in plain.parameters())
    assert n_copy == sum(p.numel() for p in copied.parameters())


def test_ignore_index_comes_from_the_decode_head_whatever_the_tap(tmp_path):
    from test_distiller import tiny_seg
    student = tiny_seg(8)
    student['decode_head']['ignore_index'] = 7
    student['auxiliary_head']['ignore_index'] = 7
    ckpt = save_teacher(tiny_seg(16), tmp_path / 't.pth')[0]
    model = seg_distiller(
        ckpt, student=student,
        student_tap=dict(module='decode_head.conv_seg'))
    assert model.ignore_index == 7
    assert model.distill_losses['loss_kd'].ignore_index == 7
    metric = TeacherStudentAgreement()
    _follow_student_ignore_index([metric], model)
    assert metric.ignore_index == 7
    wrong = TeacherStudentAgreement(ignore_index=255)
    with pytest.raises(ValueError, match='student ignores 7'):
        _follow_student_ignore_index([wrong], model)


def test_teacher_url_is_read_once_with_the_downloading_request(
        monkeypatch, cls_pair):
    from mmengine.runner.checkpoint import CheckpointLoader
    state = torch.load(cls_pair, weights_only=False)
    calls = []

    def fake_load(filename, map_location=None, logger=None):
        calls.append(filename)
        return copy.deepcopy(state)

    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint', fake_load)
    url = 'https://example.invalid/teacher.pth'
    model = LogitDistiller(student=tiny_cls(8), teacher=tiny_cls(16),
                           teacher_ckpt=url, distill_losses=KD)
    assert calls == [url]
    ref = torch.load(cls_pair, weights_only=False)['state_dict']
    for k, v in model.teacher.state_dict().items():
        assert torch.equal(v, ref[k])


def test_teacher_predicts_on_metainfo_copies(cls_pair):
    model = LogitDistiller(student=tiny_cls(8), teacher=tiny_cls(16),
                           teacher_ckpt=cls_pair, distill_losses=KD)
    model.eval()
    batch = cls_batch(model)
    samples = batch['data_samples']
    samples[0].set_field(torch.zeros(10_000), 'big_tensor')
    preds = model.predict_teacher(batch['inputs'], samples)
    assert 'big_tensor' not in preds[0] and 'gt_label' not in preds[0]
    assert 'pred_score' in preds[0] and 'pred_score' not in samples[0]


def test_models_do_not_import_engine():
    """The dependency runs one way: engine (loops, hooks, export) uses
    models; models, evaluation and datasets never import engine."""
    import ast
    from pathlib import Path
    root = Path(mmrankkd.__file__).parent
    offenders = []
    for pkg in ('models', 'evaluation', 'datasets'):
        for path in (root / pkg).rglob('*.py'):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = [('.' * node.level) + (node.module or '')]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                offenders += [f'{path.relative_to(root)}: {n}' for n in names
                              if 'engine' in n.split('.')]
    assert offenders == []


def test_val_loop_leaves_the_model_predicting_student_only(cls_pair):
    """After DistillValLoop the distiller predicts with the student alone
    again (no teacher forward in later predict calls), also when the loop
    fails."""
    from types import SimpleNamespace

    from mmengine.dataset import pseudo_collate
    from mmengine.evaluator import Evaluator
    from mmpretrain.structures import DataSample
    from torch.utils.data import DataLoader

    from mmrankkd.engine import DistillValLoop
    model = LogitDistiller(student=tiny_cls(8), teacher=tiny_cls(16),
                           teacher_ckpt=cls_pair, distill_losses=KD)
    data = [dict(inputs=torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8),
                 data_samples=DataSample().set_gt_label(i % 10))
            for i in range(4)]
    loader = DataLoader(data, batch_size=2, collate_fn=pseudo_collate)
    runner = SimpleNamespace(model=model, call_hook=lambda *a, **k: None)
    loop = DistillValLoop(runner, loader,
                          Evaluator([TeacherStudentAgreement()]))
    calls = []
    model.teacher_source.predict = lambda *a: calls.append(1) or []
    with pytest.raises(Exception):
        loop.run()  # the stubbed teacher predicts nothing: the loop fails
    assert calls and model.predict_with_teacher is False
    calls.clear()
    model.val_step(pseudo_collate(data[:2]))
    assert calls == []


def test_a_distiller_preprocessor_must_keep_the_students_mixup(cls_pair):
    """mmpretrain puts train_cfg.augments (Mixup/CutMix) into the
    classifier's data preprocessor; a top-level model.data_preprocessor
    replaces it and would silently train without mixing."""
    student = tiny_cls(8)
    student['train_cfg'] = dict(augments=dict(type='Mixup', alpha=0.8))
    plain = dict(type='ClsDataPreprocessor', num_classes=10)
    with pytest.raises(ValueError, match='silently drop the mixing'):
        LogitDistiller(student=student, teacher=tiny_cls(16),
                       teacher_ckpt=cls_pair, distill_losses=KD,
                       data_preprocessor=plain)
    kept = dict(plain, batch_augments=dict(
        augments=dict(type='Mixup', alpha=0.8)))
    for pre in (None, kept):  # the student's own, or one that keeps it
        model = LogitDistiller(student=student, teacher=tiny_cls(16),
                               teacher_ckpt=cls_pair, distill_losses=KD,
                               data_preprocessor=pre)
        assert model.data_preprocessor.batch_augments is not None
