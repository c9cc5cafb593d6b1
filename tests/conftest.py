"""Shared fixtures: tiny data sets in the real on-disk layouts and tiny
configs that inherit from the configs under ``configs/``."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
SEG_BASE = 'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py'
SEG_DISTILL = REPO / 'configs' / 'rkkd' / (
    'rkkd-kd_pspnet-r101-d8_pspnet-r18-d8_4xb2-80k_cityscapes-512x1024.py')
CLS_DISTILL = REPO / 'configs' / 'cifar100' / (
    'kd_resnet32x4_resnet8x4_1xb64_cifar100.py')

# Tiny Cityscapes run: 64x64 crops, 4 iterations, checkpoints at 2 and 4.
SEG_DATA = '''
data_root = {root!r}
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=4, val_interval=4)
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2))
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
'''

# A PSPNet whose ResNetV1c-18 has `width` base channels, BN (not SyncBN),
# no dropout (bit-identical resume), no pretrained backbone.
SEG_MODEL = '''
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(stem_channels={w}, base_channels={w}, norm_cfg=norm_cfg),
    decode_head=dict(in_channels={w8}, channels=16, pool_scales=(1, 2),
                     dropout_ratio=0.0, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels={w4}, channels=8, dropout_ratio=0.0,
                        norm_cfg=norm_cfg))
'''


def seg_model_config(path, root, width):
    """Write a tiny PSPNet config (inheriting mmseg's R18-D8 Cityscapes
    config) trained on ``root``."""
    Path(path).write_text(
        f'_base_ = [{SEG_BASE!r}]\n' + SEG_DATA.format(root=str(root)) +
        SEG_MODEL.format(w=width, w4=4 * width, w8=8 * width))
    return str(path)


def seg_distill_config(path, root, student, teacher, ckpt,
                       base=SEG_DISTILL, extra=''):
    """Write a tiny distillation config inheriting ``base`` (a config under
    ``configs/``), overridden to tiny data and the tiny models."""
    Path(path).write_text(
        f'_base_ = [{str(base)!r}]\n' + SEG_DATA.format(root=str(root)) +
        f'model = dict(student={student!r}, teacher={teacher!r}, '
        f'teacher_ckpt={ckpt!r})\n' + extra)
    return str(path)


def random_cifar_teacher(path, arch='resnet8', seed=1) -> str:
    """Save a randomly initialised CIFAR zoo network (configs/cifar100/
    _base_/models/<arch>.py) as a teacher checkpoint at ``path``."""
    import torch
    from mmengine.config import Config

    from mmrankkd.registry import MODELS
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(str(
        REPO / 'configs' / 'cifar100' / '_base_' / 'models' /
        f'{arch}.py')).model)
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


def resnet8_kd_config(ckpt):
    """The CIFAR-100 KD config (the CRD recipe) with a resnet8 student and
    a resnet8 teacher loaded from ``ckpt``."""
    from mmengine.config import Config
    models = REPO / 'configs' / 'cifar100' / '_base_' / 'models'
    cfg = Config.fromfile(str(CLS_DISTILL))
    cfg.model.student = Config.fromfile(str(models / 'resnet8.py')).model
    cfg.model.teacher = str(models / 'resnet8.py')
    cfg.model.teacher_ckpt = str(ckpt)
    return cfg


def train_dataset(cfg):
    """``cfg``'s training data set, built as the runner builds it (CIFAR's
    md5 check off for synthetic files)."""
    import copy

    from mmengine.registry import DATASETS, init_default_scope

    from mmrankkd.datasets.synthetic_cifar import disable_cifar100_md5_check
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    with disable_cifar100_md5_check():
        return DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))


def free_port() -> int:
    """A TCP port nobody listens on now, for torchrun's rendezvous (a fixed
    port can still be held by the previous test's processes)."""
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run_tool(args, cwd=REPO, timeout=600, env=None, check=True):
    """Run a command line (list) and return the CompletedProcess."""
    full_env = dict(os.environ, PYTHONHASHSEED='0', OMP_NUM_THREADS='1',
                    **(env or {}))
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(map(str, args))} failed ({proc.returncode}):\n'
            f'{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}')
    return proc


@pytest.fixture(scope='session')
def cityscapes_root(tmp_path_factory):
    from mmrankkd.datasets import make_synthetic_cityscapes
    root = tmp_path_factory.mktemp('cityscapes')
    make_synthetic_cityscapes(str(root), num_train=4, num_val=2, height=64,
                              width=128, seed=0)
    return root


@pytest.fixture(scope='session')
def seg_models(tmp_path_factory, cityscapes_root):
    """Tiny teacher (trained 4 iterations with tools/train.py) and student
    configs: dict(teacher_cfg, student_cfg, teacher_ckpt)."""
    d = tmp_path_factory.mktemp('seg_models')
    teacher_cfg = seg_model_config(d / 'tiny_teacher.py', cityscapes_root, 16)
    student_cfg = seg_model_config(d / 'tiny_student.py', cityscapes_root, 8)
    run_tool([PY, 'tools/train.py', teacher_cfg, '--work-dir',
              str(d / 'teacher'), '--cfg-options',
              'experiment_name=tiny_teacher'])
    ckpt = d / 'teacher' / 'iter_4.pth'
    assert ckpt.is_file()
    return dict(teacher_cfg=teacher_cfg, student_cfg=student_cfg,
                teacher_ckpt=str(ckpt), dir=d)
