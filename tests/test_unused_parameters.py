"""student_task_loss=False: every student parameter the distillation
losses cannot train is frozen and named when the distiller is built, so
nothing silently stays untrained and DDP (find_unused_parameters=False)
never waits for a gradient that cannot come (issue 15 item 5)."""
import copy
from pathlib import Path

import pytest
import torch

import mmrankkd  # noqa: F401
from conftest import PY, SEG_DISTILL, free_port, run_tool, seg_distill_config
from mmrankkd.models.distillers import LogitDistiller, unused_parameters
from test_distiller import KD, save_teacher, tiny_seg

NORM = dict(type='BN', requires_grad=True)


def tiny_ddrnet(size=(64, 64)):
    """DDRNet (slim layout, 8 base channels): its DDRHead trains a spatial
    side branch (``decode_head.aux_head``) that its prediction never
    uses."""
    return dict(
        _scope_='mmseg', type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
            seg_pad_val=255, size=size),
        backbone=dict(type='DDRNet', in_channels=3, channels=8,
                      ppm_channels=16, norm_cfg=NORM, align_corners=False,
                      init_cfg=None),
        decode_head=dict(
            type='DDRHead', in_channels=32, channels=16, dropout_ratio=0.0,
            num_classes=19, align_corners=False, norm_cfg=NORM,
            loss_decode=[
                dict(type='OhemCrossEntropy', thres=0.9, min_kept=256,
                     loss_weight=1.0),
                dict(type='OhemCrossEntropy', thres=0.9, min_kept=256,
                     loss_weight=0.4)]),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def tiny_pointrend():
    """PointRend: the FPN head predicts, the point head only refines
    sampled points in the host's own loss."""
    cfg = tiny_seg(8)
    cfg.pop('auxiliary_head')
    cfg.update(
        type='CascadeEncoderDecoder', num_stages=2,
        neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16,
                  num_outs=4),
        decode_head=[
            dict(type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                 feature_strides=[4, 8, 16, 32], channels=16,
                 dropout_ratio=-1, num_classes=19, norm_cfg=NORM,
                 align_corners=False,
                 loss_decode=dict(type='CrossEntropyLoss')),
            dict(type='PointHead', in_channels=[16], in_index=[0],
                 channels=16, num_fcs=2, coarse_pred_each_layer=True,
                 dropout_ratio=-1, num_classes=19, align_corners=False,
                 loss_decode=dict(type='CrossEntropyLoss'))],
        train_cfg=dict(num_points=64, oversample_ratio=3,
                       importance_sample_ratio=0.75),
        test_cfg=dict(mode='whole', subdivision_steps=2,
                      subdivision_num_points=64, scale_factor=2))
    cfg['backbone'].update(dilations=(1, 1, 1, 1), strides=(1, 2, 2, 2))
    return cfg


def _batch(model, size=32):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        s = SegDataSample()
        label = torch.randint(0, 19, (1, size, size), generator=g)
        s.gt_sem_seg = PixelData(data=label)
        s.gt_edge_map = PixelData(data=(label != label.roll(1, -1)).long())
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size)))
        samples.append(s)
    inputs = [torch.randint(0, 256, (3, size, size), generator=g).float()
              for _ in range(2)]
    return model.data_preprocessor(
        dict(inputs=inputs, data_samples=samples), True)


def _no_grad_names(model, batch):
    """Trainable student parameters the distillation loss alone leaves
    without a gradient (nothing frozen beforehand)."""
    model.train()
    model.zero_grad()
    losses = model.loss(**copy.deepcopy(batch))
    sum(v for k, v in losses.items() if k.startswith('distill.')).backward()
    return {n for n, p in model.student.named_parameters()
            if p.requires_grad and p.grad is None}


@pytest.mark.parametrize('student,size', [
    (tiny_pointrend, 32), (tiny_ddrnet, 64), (lambda: tiny_seg(8), 32)],
    ids=['pointrend', 'ddrnet', 'pspnet-aux'])
def test_parameters_without_gradient_are_frozen_and_named(
        student, size, tmp_path, monkeypatch):
    ckpt, _ = save_teacher(student(), tmp_path / 't.pth')
    torch.manual_seed(0)
    reference = LogitDistiller(student=student(), teacher=student(),
                               teacher_ckpt=ckpt, distill_losses=KD)
    ref_state = copy.deepcopy(reference.student.state_dict())
    ref_random = torch.rand(3)
    batch = _batch(reference, size)
    expected = _no_grad_names(reference, batch)
    assert expected, 'the student has no side branch: nothing to test'

    logged = []
    monkeypatch.setattr(unused_parameters, 'print_log',
                        lambda msg, **kw: logged.append(msg))
    torch.manual_seed(0)
    model = LogitDistiller(student=student(), teacher=student(),
                           teacher_ckpt=ckpt, distill_losses=KD,
                           student_task_loss=False)
    assert torch.equal(torch.rand(3), ref_random)
    frozen = {n for n, p in model.student.named_parameters()
              if not p.requires_grad}
    assert frozen == expected
    assert len(logged) == 1 and all(n in logged[0] for n in expected)
    # Built in train mode, untouched by the build-time pass: same weights
    # and buffers as the reference, and the same random stream after.
    assert model.student.training
    for k, v in model.student.state_dict().items():
        assert torch.equal(v, ref_state[k]), k
    # Every parameter left trainable gets a gradient: nothing else frozen,
    # and the first-step check finds nothing more.
    assert _no_grad_names(model, batch) == set()
    assert len(logged) == 1


def test_first_step_freezes_what_the_build_missed_or_names_it_under_ddp(
        tmp_path, monkeypatch):
    """Whatever the build-time pass misses is caught on the first step:
    frozen (single process) or a named error (DDP, already wrapped)."""
    ckpt, _ = save_teacher(tiny_seg(8), tmp_path / 't.pth')
    monkeypatch.setattr(
        'mmrankkd.models.distillers.logit_distiller.'
        'probe_unreached_parameters', lambda *a: [])
    logged = []
    monkeypatch.setattr(unused_parameters, 'print_log',
                        lambda msg, **kw: logged.append(msg))

    def build():
        return LogitDistiller(student=tiny_seg(8), teacher=tiny_seg(8),
                              teacher_ckpt=ckpt, distill_losses=KD,
                              student_task_loss=False).train()

    model = build()
    assert all(p.requires_grad for p in model.student.parameters())
    model.loss(**_batch(model))
    aux = [p for p in model.student.auxiliary_head.parameters()]
    assert aux and not any(p.requires_grad for p in aux)
    assert 'first training step' in logged[0]
    assert 'auxiliary_head.conv_seg.weight' in logged[0]

    monkeypatch.setattr(unused_parameters, 'distributed_world_size',
                        lambda: 2)
    model = build()
    with pytest.raises(RuntimeError, match='DDP is waiting') as err:
        model.loss(**_batch(model))
    assert 'auxiliary_head.conv_seg.weight' in str(err.value)
    assert 'find_unused_parameters=True' in str(err.value)


def test_a_student_that_cannot_run_the_probe_batch_gets_a_named_error(
        tmp_path, monkeypatch):
    """E.g. a model built for one input size, given another: the error
    names the synthetic batch and the setting to fix."""
    ckpt, _ = save_teacher(tiny_seg(8), tmp_path / 't.pth')

    def fails(*args):
        raise RuntimeError('Input size (1x64x1x1) is too small')

    monkeypatch.setattr(unused_parameters, 'forward_to_logits', fails)
    with pytest.raises(RuntimeError, match='synthetic batch') as err:
        LogitDistiller(student=tiny_seg(8), teacher=tiny_seg(8),
                       teacher_ckpt=ckpt, distill_losses=KD,
                       student_task_loss=False)
    assert '(1, 3, 32, 32)' in str(err.value)
    assert 'too small' in str(err.value)
    assert 'data_preprocessor.size' in str(err.value)


@pytest.mark.matrix  # ~20 s (two processes start); in-process above
def test_two_gloo_ranks_train_a_ddrnet_student_without_task_loss(
        tmp_path, cityscapes_root):
    """torchrun, 2 CPU processes, DDP with find_unused_parameters=False:
    DDRNet's side branch is frozen at build time, so DDP never waits for
    its gradient; it keeps its initial weights while the rest trains."""
    ckpt, _ = save_teacher(tiny_ddrnet(), tmp_path / 't.pth')
    model = tmp_path / 'ddrnet.py'
    model.write_text(f'model = {tiny_ddrnet()!r}\n')
    cfg = seg_distill_config(tmp_path / 'cfg.py', cityscapes_root,
                             str(model), str(model), ckpt, base=SEG_DISTILL)
    wd = tmp_path / 'ddp'
    proc = run_tool([str(Path(PY).parent / 'torchrun'), '--nproc_per_node',
                     '2', '--master_port', str(free_port()),
                     'tools/train.py', cfg,
                     '--launcher', 'pytorch', '--work-dir', str(wd),
                     '--cfg-options', 'model.student_task_loss=False',
                     'train_cfg.max_iters=2', 'train_cfg.val_interval=100',
                     'default_hooks.checkpoint.interval=1'], timeout=300)
    log = proc.stdout + proc.stderr
    assert 'get no gradient and are frozen: decode_head.aux_head' in log
    # (DDP would fail at the second step's forward if it waited for them)
    first = torch.load(wd / 'iter_1.pth', map_location='cpu')['state_dict']
    last = torch.load(wd / 'iter_2.pth', map_location='cpu')['state_dict']
    side = [k for k in first if '.aux_head.' in k or '.aux_cls_seg.' in k]
    assert side and all(torch.equal(first[k], last[k]) for k in side
                        if not k.endswith(('running_mean', 'running_var',
                                           'num_batches_tracked')))
    trained = [k for k in first if k not in side and k.endswith('weight')]
    assert any(not torch.equal(first[k], last[k]) for k in trained)
