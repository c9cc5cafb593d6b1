"""The teacher-logit store (exact mode, the CIFAR recipe's 162 views).

A store built by tools/build_teacher_store.py from a tiny synthetic
CIFAR-100 (real pickled layout) must give the losses the live teacher's
logits: same loss values and same student weights over a few training
steps. A truncated, changed or mismatched store, and a training pipeline
that does not record its views, are refused with named errors."""
import copy
import glob
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper

import mmrankkd  # noqa: F401
from mmrankkd.datasets.synthetic_cifar import (disable_cifar100_md5_check,
                                               make_synthetic_cifar100)
from mmrankkd.datasets.transforms import (ViewRandomCrop, ViewRandomFlip,
                                          apply_pipeline_view, view_id)
from mmrankkd.engine import check_run_config
from mmrankkd.models.distillers.teacher_store import (MissingViewError,
                                                      StoreCorruptError,
                                                      StoreMismatchError,
                                                      TeacherStore)
from mmrankkd.registry import MODELS
from conftest import random_cifar_teacher, resnet8_kd_config, train_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'cifar100' / (
    'kd_resnet32x4_resnet8x4_1xb64_cifar100.py')
MODELS_DIR = REPO / 'configs' / 'cifar100' / '_base_' / 'models'
sys.path.insert(0, str(REPO / 'tools'))
from build_teacher_store import build_store  # noqa: E402

NUM_TRAIN = 8
VIEW_PIPELINE = [
    dict(type='mmrankkd.ViewRandomCrop', crop_size=32, padding=4),
    dict(type='mmrankkd.ViewRandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs',
         meta_keys=('sample_idx', 'img_shape', 'flip', 'teacher_view')),
]


def _config(root, ckpt, store=None):
    cfg = resnet8_kd_config(ckpt)
    if store is not None:
        cfg.model.teacher_store = store
    cfg.train_dataloader.dataset.data_root = root
    cfg.train_dataloader.dataset.pipeline = copy.deepcopy(VIEW_PIPELINE)
    return cfg


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('store')
    root = make_synthetic_cifar100(str(tmp / 'cifar'), num_train=NUM_TRAIN,
                                   num_test=4)
    ckpt = random_cifar_teacher(tmp / 'teacher.pth')
    cfg = _config(root, ckpt)
    with disable_cifar100_md5_check():
        index = build_store(cfg, str(tmp / 'store'), batch_size=512,
                            device='cpu', log=lambda *a: None)
    return dict(tmp=tmp, root=root, ckpt=ckpt, cfg=cfg,
                store=str(tmp / 'store'), index=index)


def _batches(cfg, steps, batch, seed=0):
    """Training batches drawn by the real (random) pipeline."""
    dataset = train_dataset(cfg)
    np.random.seed(seed)
    order = np.random.permutation(np.arange(steps * batch) % len(dataset))
    return [pseudo_collate([dataset[int(i)] for i in order[s:s + batch]])
            for s in range(0, steps * batch, batch)]


def test_store_matches_live_teacher_in_training(setup):
    """Store vs live teacher: same losses and student weights over four
    SGD steps on randomly augmented batches (every view looked up)."""
    batches = _batches(setup['cfg'], steps=4, batch=4)
    views = {view_id(ds.teacher_view) for b in batches
             for ds in b['data_samples']}
    assert len(views) > 4  # crops and flips vary
    runs = []
    for store in (None, setup['store']):
        torch.manual_seed(0)
        model = MODELS.build(_config(setup['root'], setup['ckpt'],
                                     store).model)
        model.train()
        wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1,
                                               momentum=0.9))
        losses = [model.train_step(copy.deepcopy(b), wrapper)
                  for b in batches]
        runs.append((model, losses))
    (live, live_losses), (stored, stored_losses) = runs
    assert type(stored.teacher_source).__name__ == 'StoredTeacher'
    for a, b in zip(live_losses, stored_losses):
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)
    assert live_losses[0]['distill.loss_kd'] > 0
    for (name, p), q in zip(live.student.state_dict().items(),
                            stored.student.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)


def test_stored_rows_are_the_teacher_on_that_view(setup):
    """Each stored row is the live teacher's logits of exactly that view
    (the view made again by the same transforms)."""
    cfg = setup['cfg']
    model = MODELS.build(cfg.model)
    store = TeacherStore(setup['store'])
    assert store.index['views_filled'] == NUM_TRAIN * 162
    dataset = train_dataset(cfg)
    transforms = dataset.pipeline.transforms
    picks = [(0, 0), (3, 161), (5, 80), (7, 1)]
    data = model.data_preprocessor(pseudo_collate([
        apply_pipeline_view(transforms, dataset.get_data_info(i), v,
                            [81, 2]) for i, v in picks]), True)
    live = model.teacher_logits(data['inputs'], data['data_samples'])
    rows = store.read(np.array([i for i, _ in picks]),
                      np.array([v for _, v in picks]))
    torch.testing.assert_close(torch.from_numpy(rows), live, rtol=1e-5,
                               atol=1e-5)
    # View 161 = crop 80 (bottom-right) flipped: differs from view 160.
    other = store.read(np.array([3]), np.array([160]))
    assert not np.allclose(other, rows[1:2])


def test_view_transforms_are_the_originals():
    """Same random draws and pixels as mmpretrain RandomCrop + mmcv
    RandomFlip; apply_view remakes the recorded view."""
    from mmcv.transforms import RandomFlip
    from mmpretrain.datasets.transforms import RandomCrop
    crop, flip = ViewRandomCrop(32, padding=4), ViewRandomFlip(
        prob=0.5, direction='horizontal')
    img = np.random.RandomState(0).randint(0, 255, (32, 32, 3), np.uint8)
    for seed in range(6):
        np.random.seed(seed)
        ours = flip(crop(dict(img=img.copy())))
        np.random.seed(seed)
        ref = RandomFlip(prob=0.5, direction='horizontal')(
            RandomCrop(32, padding=4)(dict(img=img.copy())))
        assert np.array_equal(ours['img'], ref['img'])
        assert ours['flip'] == ref['flip']
        again = apply_pipeline_view([crop, flip], dict(img=img.copy()),
                                    view_id(ours['teacher_view']), [81, 2])
        assert np.array_equal(again['img'], ours['img'])


def _copy_store(setup, name):
    import shutil
    dst = setup['tmp'] / name
    shutil.copytree(setup['store'], dst)
    return dst


def test_truncated_store_is_refused(setup):
    dst = _copy_store(setup, 'truncated')
    path = dst / 'logits.f32'
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(StoreCorruptError, match='truncated'):
        TeacherStore(str(dst))
    (dst / 'index.json').unlink()
    with pytest.raises(StoreCorruptError, match='interrupted'):
        TeacherStore(str(dst))


def test_corrupted_store_is_refused(setup):
    dst = _copy_store(setup, 'corrupt')
    data = bytearray((dst / 'logits.f32').read_bytes())
    data[12345] ^= 0x40  # sample 0, view 30 (400 bytes a view)
    (dst / 'logits.f32').write_bytes(bytes(data))
    TeacherStore(str(dst)).read(np.array([0]), np.array([29]))
    with pytest.raises(StoreCorruptError, match='view 30'):
        TeacherStore(str(dst)).read(np.array([0]), np.array([30]))
    # Unverified, the spot check still catches changed rows.
    flat = np.memmap(dst / 'logits.f32', np.float32, 'r+')
    flat[:] += 1.0
    flat.flush()
    del flat
    model = MODELS.build(_config(
        setup['root'], setup['ckpt'],
        dict(path=str(dst), verify=False, spot_check_interval=5)).model)
    batch = model.data_preprocessor(_batches(setup['cfg'], 1, 4)[0], True)
    with pytest.raises(StoreMismatchError, match='Spot check'):
        model.teacher_logits(batch['inputs'], batch['data_samples'])


def test_mismatched_store_is_refused(setup, tmp_path):
    # Another teacher checkpoint.
    torch.manual_seed(2)
    other = MODELS.build(Config.fromfile(str(MODELS_DIR / 'resnet8.py')).model)
    ckpt = tmp_path / 'other.pth'
    torch.save({'state_dict': other.state_dict()}, ckpt)
    with pytest.raises(StoreMismatchError, match='checkpoint file differs'):
        MODELS.build(_config(setup['root'], ckpt, setup['store']).model)
    # Another teacher precision.
    cfg = _config(setup['root'], setup['ckpt'], setup['store'])
    cfg.model.teacher_autocast = 'bf16'
    with pytest.raises(StoreMismatchError, match='teacher_autocast'):
        MODELS.build(cfg.model)
    # Another training pipeline (plain RandomCrop) or data set.
    cfg = _config(setup['root'], setup['ckpt'], setup['store'])
    cfg.train_dataloader.dataset.pipeline[0]['type'] = 'RandomCrop'
    with pytest.raises(StoreMismatchError, match='pipeline differs'):
        check_run_config(cfg)
    cfg = _config(setup['root'], setup['ckpt'], setup['store'])
    cfg.train_dataloader.dataset.split = 'test'
    with pytest.raises(StoreMismatchError, match='data set'):
        check_run_config(cfg)
    check_run_config(_config(setup['root'], setup['ckpt'], setup['store']))


def test_missing_views_and_unrecorded_pipelines_are_errors(setup, tmp_path):
    # A partial store: samples beyond it are an error (or, if configured,
    # served by the live teacher).
    with disable_cifar100_md5_check():
        build_store(setup['cfg'], str(tmp_path / 'part'), batch_size=512,
                    num_samples=2, device='cpu', log=lambda *a: None)
    batch = None
    for b in _batches(setup['cfg'], 4, 4):
        if any(ds.sample_idx >= 2 for ds in b['data_samples']):
            batch = b
            break
    for on_missing in ('error', 'live'):
        model = MODELS.build(_config(
            setup['root'], setup['ckpt'],
            dict(path=str(tmp_path / 'part'),
                 on_missing=on_missing)).model)
        data = model.data_preprocessor(copy.deepcopy(batch), True)
        if on_missing == 'error':
            with pytest.raises(MissingViewError, match='not in teacher'):
                model.teacher_logits(data['inputs'], data['data_samples'])
        else:
            out = model.teacher_logits(data['inputs'], data['data_samples'])
            live = model.teacher_source.live.logits(data['inputs'],
                                                    data['data_samples'])
            assert torch.equal(out, live)
            assert model.teacher_source.live_batches == 1
    # A pipeline that does not say which view a sample is.
    cfg = copy.deepcopy(setup['cfg'])
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='RandomCrop', crop_size=32, padding=4),
        dict(type='PackInputs')]
    model = MODELS.build(_config(setup['root'], setup['ckpt'],
                                 setup['store']).model)
    data = model.data_preprocessor(_batches(cfg, 1, 4)[0], True)
    with pytest.raises(MissingViewError, match='ViewRandomCrop'):
        model.teacher_logits(data['inputs'], data['data_samples'])
    with pytest.raises(ValueError, match='does not record its view'), \
            disable_cifar100_md5_check():
        build_store(cfg, str(tmp_path / 'plain'), device='cpu',
                    log=lambda *a: None)


def test_runner_trains_and_validates_with_a_store(setup, tmp_path):
    """tools/train.py with model.teacher_store: training reads the store
    (spot-checked against the live teacher on every batch), validation's
    agreement metrics use the live teacher."""
    cfg = tmp_path / 'store_cfg.py'
    cfg.write_text(
        f'_base_ = [{str(CONFIG)!r}]\n'
        f'data_root = {setup["root"]!r}\n'
        f'model = dict(student={setup["cfg"].model.student.to_dict()!r},\n'
        f'             teacher={str(MODELS_DIR / "resnet8.py")!r},\n'
        f'             teacher_ckpt={str(setup["ckpt"])!r},\n'
        f'             teacher_store=dict(path={setup["store"]!r},\n'
        '                                spot_check_interval=1,\n'
        '                                spot_check_tol=1e-5))\n'
        'model["student"].update(_delete_=True)\n'
        f'train_pipeline = {VIEW_PIPELINE!r}\n'
        'train_dataloader = dict(batch_size=4, num_workers=0, dataset=dict('
        'data_root=data_root, pipeline=train_pipeline))\n'
        'val_dataloader = dict(batch_size=4, num_workers=0, '
        'dataset=dict(data_root=data_root))\n'
        'test_dataloader = val_dataloader\n'
        'train_cfg = dict(by_epoch=True, max_epochs=1, val_interval=1)\n'
        'default_hooks = dict(logger=dict(interval=1))\n'
        'randomness = dict(seed=0)\n')
    argv = sys.argv
    sys.argv = ['train.py', str(cfg), '--work-dir', str(tmp_path / 'wd')]
    try:
        with disable_cifar100_md5_check():
            runpy.run_path(str(REPO / 'tools' / 'train.py'),
                           run_name='__main__')
    finally:
        sys.argv = argv
    log = '\n'.join(Path(p).read_text()
                    for p in glob.glob(f'{tmp_path}/wd/*/*.log'))
    assert 'Teacher logits from exact store' in log
    train = [l for l in log.splitlines() if 'Epoch(train)' in l]
    assert len(train) == NUM_TRAIN // 4
    assert all('distill.loss_kd' in l for l in train)
    val = [l for l in log.splitlines() if 'Epoch(val)' in l and
           'agreement/top1' in l]
    assert val and 'teacher/accuracy/top1' in val[-1]
