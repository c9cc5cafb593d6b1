"""LogitDistiller in-process: teacher handling, one student forward, log
keys, student-only modes, build-time errors, the shipped configs."""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import mmrankkd  # noqa: F401
from mmrankkd.engine import check_run_config
from mmrankkd.models.distillers import (LogitDistiller, build_distill_losses,
                                        build_model_from_source)

REPO = Path(__file__).resolve().parents[1]
NORM = dict(type='BN', requires_grad=True)


def tiny_seg(width, num_classes=19):
    return dict(
        _scope_='mmseg', type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255, size=(32, 32)),
        backbone=dict(
            type='ResNetV1c', depth=18, stem_channels=width,
            base_channels=width, out_indices=(0, 1, 2, 3),
            dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1), norm_cfg=NORM,
            contract_dilation=True),
        decode_head=dict(
            type='PSPHead', in_channels=8 * width, in_index=3, channels=8,
            pool_scales=(1, 2), dropout_ratio=0.0, num_classes=num_classes,
            norm_cfg=NORM, align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
        auxiliary_head=dict(
            type='FCNHead', in_channels=4 * width, in_index=2, channels=8,
            num_convs=1, concat_input=False, dropout_ratio=0.0,
            num_classes=num_classes, norm_cfg=NORM, align_corners=False,
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=0.4)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def tiny_cls(width, num_classes=10):
    return dict(
        _scope_='mmpretrain', type='ImageClassifier',
        data_preprocessor=dict(type='ClsDataPreprocessor',
                               num_classes=num_classes),
        backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels=width,
                      base_channels=width, out_indices=(3, )),
        neck=dict(type='GlobalAveragePooling'),
        head=dict(type='LinearClsHead', num_classes=num_classes,
                  in_channels=8 * width,
                  loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))


def save_teacher(cfg, path):
    model = build_model_from_source(cfg, 'teacher')
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return str(path), model


KD = dict(loss_kd=dict(type='mmrankkd.KDLoss', temperature=2.0))


@pytest.fixture(scope='module')
def seg_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp('seg')
    return save_teacher(tiny_seg(16), d / 'teacher.pth')[0]


@pytest.fixture(scope='module')
def cls_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp('cls')
    return save_teacher(tiny_cls(16), d / 'teacher.pth')[0]


def seg_distiller(ckpt, **kw):
    args = dict(student=tiny_seg(8), teacher=tiny_seg(16),
                teacher_ckpt=ckpt, distill_losses=KD)
    args.update(kw)
    return LogitDistiller(**args)


def seg_batch(model, n=2, size=32):
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    samples = []
    for i in range(n):
        s = SegDataSample()
        label = torch.randint(0, 19, (1, size, size))
        label[:, :2] = 255
        s.gt_sem_seg = PixelData(data=label)
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size),
                            pad_shape=(size, size)))
        samples.append(s)
    data = dict(inputs=[torch.randint(0, 255, (3, size, size)).float()
                        for _ in range(n)], data_samples=samples)
    return model.data_preprocessor(data, True)


def cls_batch(model, n=4):
    from mmpretrain.structures import DataSample
    samples = [DataSample().set_gt_label(i % 10) for i in range(n)]
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32)).float()
                        for _ in range(n)], data_samples=samples)
    return model.data_preprocessor(data, True)


def test_teacher_is_frozen_hidden_and_not_reinitialised(seg_ckpt):
    from mmengine.optim import build_optim_wrapper
    model = seg_distiller(seg_ckpt)
    teacher = model.teacher
    assert all(not p.requires_grad for p in teacher.parameters())
    keys = list(model.state_dict())
    assert keys and all(k.startswith(('student.', 'data_preprocessor.'))
                        for k in keys)
    teacher_ids = {id(p) for p in teacher.parameters()}
    assert not teacher_ids & {id(p) for p in model.parameters()}
    optim = build_optim_wrapper(
        model, dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)))
    in_optim = {id(p) for g in optim.optimizer.param_groups
                for p in g['params']}
    assert not teacher_ids & in_optim
    before = copy.deepcopy(teacher.state_dict())
    model.init_weights()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.train()
    assert model.student.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    model.to(torch.float64)  # .to() reaches the hidden teacher
    assert next(teacher.parameters()).dtype == torch.float64


def test_seg_loss_one_student_forward_and_log_keys(seg_ckpt):
    model = seg_distiller(seg_ckpt, distill_losses=dict(
        loss_kd=dict(type='mmrankkd.KDLoss'),
        loss_pld=dict(type='mmrankkd.PlackettLuceLoss')))
    model.train()
    data = seg_batch(model)
    calls = []
    model.student.backbone.register_forward_hook(
        lambda *a: calls.append('s'))
    model.teacher.backbone.register_forward_hook(
        lambda *a: calls.append('t'))
    losses = model(**data, mode='loss')
    assert calls.count('s') == 1 and calls.count('t') == 1
    for key in ('decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce',
                'distill.loss_kd', 'distill.loss_pld'):
        assert key in losses, key
    total, log = model.parse_losses(losses)
    assert 'distill.loss_kd' in log and 'distill.loss_pld' in log
    total.backward()
    assert model.student.decode_head.conv_seg.weight.grad is not None
    assert all(p.grad is None for p in model.teacher.parameters())


def test_seg_student_task_loss_false_freezes_aux(seg_ckpt):
    model = seg_distiller(seg_ckpt, student_task_loss=False)
    model.train()
    losses = model(**seg_batch(model), mode='loss')
    assert set(losses) == {'distill.loss_kd'}
    assert not any(p.requires_grad
                   for p in model.student.auxiliary_head.parameters())


def test_predict_and_tensor_use_the_student(seg_ckpt):
    model = seg_distiller(seg_ckpt).eval()
    data = seg_batch(model)
    out = model(data['inputs'], mode='tensor')
    assert torch.equal(out, model.student(data['inputs'], mode='tensor'))
    preds = model(data['inputs'], data['data_samples'], mode='predict')
    assert 'pred_sem_seg' in preds[0]
    assert 'teacher_pred_sem_seg' not in preds[0]


def test_teacher_logits_resized_or_refused(seg_ckpt):
    model = seg_distiller(seg_ckpt)
    s, t = torch.randn(2, 19, 8, 8), torch.randn(2, 19, 4, 4)
    assert model.match_teacher(s, t).shape == s.shape
    model.resize_teacher_logits = False
    with pytest.raises(ValueError, match='resize_teacher_logits'):
        model.match_teacher(s, t)


def test_classifier_losses_and_labels(cls_ckpt):
    model = LogitDistiller(
        student=tiny_cls(8), teacher=tiny_cls(16), teacher_ckpt=cls_ckpt,
        distill_losses=dict(
            loss_kd=dict(type='mmrankkd.KDLoss', temperature=4.0),
            loss_dkd=dict(type='mmrankkd.DKDLoss')))
    model.train()
    losses = model(**cls_batch(model), mode='loss')
    assert {'cls.loss', 'distill.loss_kd', 'distill.loss_dkd'} <= set(losses)
    model.parse_losses(losses)[0].backward()
    preds = model.eval()(**cls_batch(model), mode='predict')
    assert 'pred_label' in preds[0]


def test_plain_student_checkpoint_loads_into_distiller(seg_ckpt):
    from mmengine.runner.checkpoint import load_state_dict
    model = seg_distiller(seg_ckpt)
    plain = build_model_from_source(tiny_seg(8), 'student').state_dict()
    load_state_dict(model, copy.deepcopy(plain), strict=True)
    for k, v in plain.items():
        assert torch.equal(model.student.state_dict()[k], v)


# ---------------------------------------------------------------- errors
def test_missing_teacher_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='teacher_ckpt'):
        seg_distiller(str(tmp_path / 'nope.pth'))


def test_checkpoint_that_does_not_fit_the_teacher(seg_ckpt):
    with pytest.raises(ValueError) as e:
        LogitDistiller(student=tiny_seg(8), teacher=tiny_seg(8),
                       teacher_ckpt=seg_ckpt, distill_losses=KD)
    msg = str(e.value)
    assert 'does not fit model.teacher' in msg
    assert 'shape mismatches' in msg and 'backbone.stem.0.weight' in msg
    assert 'Fix:' in msg


def test_checkpoint_missing_and_unexpected_keys(tmp_path, seg_ckpt):
    state = torch.load(seg_ckpt)['state_dict']
    state.pop('decode_head.conv_seg.weight')
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / 'broken.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(ValueError) as e:
        seg_distiller(str(path))
    assert 'missing keys (1): decode_head.conv_seg.weight' in str(e.value)
    assert 'unexpected keys (1): extra.weight' in str(e.value)


def test_unknown_loss_type_lists_available(seg_ckpt):
    with pytest.raises(KeyError) as e:
        seg_distiller(seg_ckpt, distill_losses=dict(
            loss_x=dict(type='mmrankkd.NoSuchLoss')))
    assert 'NoSuchLoss' in str(e.value)
    assert 'KendallRankLoss' in str(e.value) and 'KDLoss' in str(e.value)


def test_class_count_mismatch_names_both(seg_ckpt):
    with pytest.raises(ValueError, match=r'teacher predicts 19 classes, '
                       r'the student 7'):
        LogitDistiller(student=tiny_seg(8, num_classes=7),
                       teacher=tiny_seg(16), teacher_ckpt=seg_ckpt,
                       distill_losses=KD)


def test_loss_name_must_start_with_loss():
    with pytest.raises(ValueError, match='"kd" must start with "loss_"'):
        build_distill_losses(dict(kd=dict(type='mmrankkd.KDLoss')))


def test_student_and_teacher_of_different_tasks(cls_ckpt):
    with pytest.raises(TypeError, match='both'):
        LogitDistiller(student=tiny_seg(8), teacher=tiny_cls(16),
                       teacher_ckpt=cls_ckpt, distill_losses=KD)


# ---------------------------------------------------------------- configs
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py')
                 if '_base_' not in p.parts and 'quickstart' not in p.parts)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_parse_and_their_losses_build(path):
    cfg = Config.fromfile(str(path))
    assert cfg.model.type == 'mmrankkd.LogitDistiller'
    assert 'mmrankkd' in cfg.custom_imports.imports
    assert cfg.model.teacher_ckpt
    check_run_config(cfg)  # loops fit the metrics; no AMP on a CPU run
    assert dict(type='mmrankkd.ExactResumeHook') in cfg.custom_hooks
    assert dict(type='mmrankkd.ValueCheckHook') in cfg.custom_hooks
    losses = build_distill_losses(cfg.model.distill_losses)
    assert len(losses) >= 1
    assert cfg.val_cfg.type == 'mmrankkd.DistillValLoop'
