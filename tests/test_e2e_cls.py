"""End to end on a tiny synthetic CIFAR-100 (real pickled layout, read by
mmpretrain's CIFAR100): tiny teacher, distillation through tools/train.py
with a config inheriting configs/cifar100/..., validation with top-1 and
agreement, student-only checkpoint, export + mmpretrain inference.

The runs go through tools/train.py with the documented path for synthetic
data: ``--cfg-options`` setting every loader's dataset type to
``mmrankkd.SyntheticCIFAR100`` (mmpretrain's CIFAR100 reader without the md5
checks of the real files), no wrapper."""
import glob
import re
import runpy
import sys
from pathlib import Path

import pytest
import torch

import mmrankkd  # noqa: F401
from conftest import CLS_DISTILL
from mmrankkd.datasets.synthetic_cifar import make_synthetic_cifar100

pytestmark = pytest.mark.slow

DATA = '''
data_root = {root!r}
train_dataloader = dict(batch_size=16, num_workers=0,
                        dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=25, num_workers=0,
                      dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
randomness = dict(seed=0)
'''

MODEL = '''dict(
    type='ImageClassifier',
    backbone=dict(type='ResNet_CIFAR', depth=18, stem_channels={w},
                  base_channels={w}, out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=100, in_channels={c},
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))'''


def _train(cfg, work_dir, name):
    argv = sys.argv
    sys.argv = ['train.py', str(cfg), '--work-dir', str(work_dir),
                '--cfg-options', f'experiment_name={name}'] + [
                    f'{loader}_dataloader.dataset.type='
                    'mmrankkd.SyntheticCIFAR100'
                    for loader in ('train', 'val', 'test')]
    try:
        runpy.run_path(str(Path(__file__).parents[1] / 'tools' /
                           'train.py'), run_name='__main__')
    finally:
        sys.argv = argv


def test_cifar100_distillation_end_to_end(tmp_path):
    root = make_synthetic_cifar100(str(tmp_path / 'cifar'), num_train=64,
                                   num_test=25)
    teacher_cfg = tmp_path / 'tiny_teacher.py'
    teacher_cfg.write_text(
        "_base_ = ['mmpretrain::resnet/resnet50_8xb16_cifar100.py']\n" +
        DATA.format(root=root) + 'model = ' + MODEL.format(w=16, c=128) +
        '\nmodel.update(_delete_=True)\n')
    _train(teacher_cfg, tmp_path / 'teacher', 'tiny_cls_teacher')
    teacher_ckpt = tmp_path / 'teacher' / 'epoch_1.pth'

    cfg = tmp_path / 'tiny_distill.py'
    cfg.write_text(
        f'_base_ = [{str(CLS_DISTILL)!r}]\n' + DATA.format(root=root) +
        'model = dict(student=' + MODEL.format(w=8, c=64) +
        f', teacher={str(teacher_cfg)!r}, '
        f'teacher_ckpt={str(teacher_ckpt)!r})\n'
        'model["student"].update(_delete_=True)\n')
    wd = tmp_path / 'distill'
    _train(cfg, wd, 'tiny_cls_distill')

    log = '\n'.join(Path(p).read_text() for p in glob.glob(f'{wd}/*/*.log'))
    train = [l for l in log.splitlines() if 'Epoch(train)' in l][-1]
    assert 'cls.loss' in train and 'distill.loss_kd' in train
    val = [l for l in log.splitlines() if 'Epoch(val)' in l and
           'accuracy/top1' in l][-1]
    for key in ('accuracy/top1', 'agreement/top1', 'agreement/kendall_tau',
                'teacher/accuracy/top1'):
        assert f'{key}:' in val, key

    ckpt = torch.load(wd / 'epoch_1.pth')
    assert all(k.startswith('student.') for k in ckpt['state_dict'])

    # The logged teacher accuracy and agreement, recomputed from the two
    # checkpoints on the 25 test images, each model with the input
    # preprocessing it trained with: the student its own (this config
    # gives it none: ClsDataPreprocessor's defaults), the teacher its
    # config's top-level data_preprocessor (which the distiller uses too).
    from mmengine.config import Config
    from mmpretrain.registry import DATASETS
    from mmpretrain.registry import MODELS as CLS_MODELS
    dataset = DATASETS.build(dict(type='mmrankkd.SyntheticCIFAR100',
                                  data_root=root, split='test',
                                  pipeline=[]))
    images = [torch.from_numpy(dataset[i]['img']).permute(2, 0, 1)
              for i in range(len(dataset))]
    labels = torch.tensor([dataset[i]['gt_label']
                           for i in range(len(dataset))])
    teacher_model = Config.fromfile(str(teacher_cfg)).model
    teacher_model.data_preprocessor = Config.fromfile(
        str(teacher_cfg)).data_preprocessor
    preds = {}
    for name, model_cfg, state in (
            ('student', Config.fromfile(str(cfg)).model.student,
             {k[len('student.'):]: v for k, v in ckpt['state_dict'].items()}),
            ('teacher', teacher_model,
             torch.load(teacher_ckpt)['state_dict'])):
        model = CLS_MODELS.build(model_cfg).eval()
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(
            k.startswith('data_preprocessor') for k in missing), name
        with torch.no_grad():
            data = model.data_preprocessor(
                dict(inputs=images, data_samples=None))
            preds[name] = model(data['inputs'], mode='tensor').argmax(1)
    logged = {key: float(re.search(rf'{key}: (\S+)', val).group(1))
              for key in ('agreement/top1', 'teacher/accuracy/top1')}
    assert logged['agreement/top1'] == pytest.approx(
        100 * (preds['student'] == preds['teacher']).float().mean().item(),
        abs=1e-3)
    assert logged['teacher/accuracy/top1'] == pytest.approx(
        100 * (preds['teacher'] == labels).float().mean().item(), abs=1e-3)

    from mmrankkd.engine import export_student
    out = tmp_path / 'export' / 'student.pth'
    res = export_student(str(wd / 'epoch_1.pth'), str(out), str(cfg))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(
        str(out)) == []
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(
        model=res['config'], pretrained=str(out), device='cpu')
    model = inferencer.model
    for k, v in model.state_dict().items():
        if k.startswith('data_preprocessor'):
            continue
        assert torch.equal(v, ckpt['state_dict']['student.' + k]), k
    import numpy as np
    img = np.random.randint(0, 255, (32, 32, 3), dtype=np.uint8)
    result = inferencer(img)[0]
    assert 0 <= result['pred_label'] < 100
