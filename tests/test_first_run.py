"""What a new user hits on a first run: early, named errors (offline
teacher URL, --amp without a GPU, agreement metric with a plain loop),
SyncBN configs under CPU distributed training, and classification samples
of class 255 that must train."""
import pytest
import torch
import torch.nn as nn

import mmrankkd  # noqa: F401
from conftest import PY, REPO, run_tool
from mmrankkd.models.distillers import LogitDistiller
from test_distiller import KD, save_teacher, tiny_cls

QUICK = REPO / 'configs' / 'quickstart'
DISTILL = QUICK / 'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py'
STUDENT = QUICK / 'student_pspnet_r18-d8-w16_synthcity-64x128.py'


def test_unreachable_teacher_url_fails_before_any_model_is_built(
        monkeypatch):
    from mmrankkd.models.distillers import logit_distiller
    built = []
    monkeypatch.setattr(logit_distiller, 'build_resolved',
                        lambda *a: built.append(a))
    url = 'http://127.0.0.1:9/pspnet_r101.pth'  # discard port: refused
    with pytest.raises(FileNotFoundError) as err:
        LogitDistiller(student=tiny_cls(8), teacher=tiny_cls(16),
                       teacher_ckpt=url, distill_losses=KD)
    message = str(err.value)
    assert url in message and 'model.teacher_ckpt=' in message
    assert 'pspnet_r101.pth' in message.split('Fix:')[1]
    assert built == []


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU behaviour')
def test_amp_without_gpu_fails_at_start_with_a_named_error():
    proc = run_tool([PY, 'tools/train.py', str(STUDENT), '--amp'],
                    check=False, timeout=120)
    assert proc.returncode != 0
    assert 'needs a CUDA GPU' in proc.stderr and 'drop --amp' in proc.stderr
    assert 'AssertionError' not in proc.stderr


@pytest.mark.parametrize('stage', ['val', 'test'])
def test_agreement_metric_with_a_plain_loop_fails_at_start(stage):
    tool = 'train.py' if stage == 'val' else 'test.py'
    args = [PY, f'tools/{tool}', str(DISTILL)]
    if stage == 'test':
        args.append('missing.pth')
    args += ['--cfg-options', f'{stage}_cfg.type={stage.capitalize()}Loop']
    proc = run_tool(args, check=False, timeout=120)
    assert proc.returncode != 0
    assert f"{stage}_cfg=dict(type='mmrankkd.Distill" in proc.stderr


def test_cpu_ddp_wrapper_turns_sync_bn_into_bn(tmp_path):
    import torch.distributed as dist

    from mmengine.model import MMDistributedDataParallel

    from mmrankkd.engine import CPUDistributedDataParallel
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4))
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store',
                            rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match='SyncBatchNorm'):
            # what dist_train.sh on a CPU machine hit
            MMDistributedDataParallel(module=model, device_ids=None)
        wrapped = CPUDistributedDataParallel(model, device_ids=[0])
        assert not any(isinstance(m, nn.SyncBatchNorm)
                       for m in wrapped.modules())
        assert any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                   for m in wrapped.modules())
        wrapped(torch.randn(2, 3, 8, 8)).sum().backward()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('loss', [
    dict(type='mmrankkd.PlackettLuceLoss'),
    dict(type='mmrankkd.DKDLoss'),
])
def test_classification_class_255_trains(loss, tmp_path):
    """ImageNet has a class 255: its samples get a gradient from the
    label-using losses (no ignore label in classification)."""
    from mmpretrain.structures import DataSample
    ckpt, _ = save_teacher(tiny_cls(16, num_classes=1000),
                           tmp_path / 't.pth')
    model = LogitDistiller(student=tiny_cls(8, num_classes=1000),
                           teacher=tiny_cls(16, num_classes=1000),
                           teacher_ckpt=ckpt,
                           distill_losses=dict(loss_x=loss),
                           student_task_loss=False)
    assert model.distill_losses['loss_x'].ignore_index is None
    labels = [255, 3, 255, 7]
    data = dict(inputs=[torch.randint(0, 255, (3, 32, 32)).float()
                        for _ in labels],
                data_samples=[DataSample().set_gt_label(y) for y in labels])
    batch = model.data_preprocessor(data, True)
    captured = {}

    def keep(module, args, output):
        output.retain_grad()
        captured['logits'] = output

    model.student.head.fc.register_forward_hook(keep)
    model.loss(**batch)['distill.loss_x'].backward()
    row_grad = captured['logits'].grad.norm(dim=1)
    assert (row_grad[[0, 2]] > 1e-6).all(), row_grad


def test_classification_loss_with_an_ignore_index_is_refused(tmp_path):
    ckpt, _ = save_teacher(tiny_cls(16), tmp_path / 't.pth')
    with pytest.raises(ValueError, match='no ignore value'):
        LogitDistiller(student=tiny_cls(8), teacher=tiny_cls(16),
                       teacher_ckpt=ckpt, distill_losses=dict(
                           loss_pld=dict(type='mmrankkd.PlackettLuceLoss',
                                         ignore_index=255)))
