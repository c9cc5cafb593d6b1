"""Replay mode of the teacher store, top-k stores, wrapped data sets, DDP.

Replay: a random pipeline (RandomResizedCrop, flip, colour jitter) run by
mmrankkd.ReplayDataset makes the same view of sample i in epoch e wherever
it is made (in the builder, in a data loader worker during training), so
the stored logits are the live teacher's on the very view training makes.
Top-k stores give the losses that accept them the top-k rows and refuse
the others by name."""
import copy
import glob
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, InfiniteSampler, pseudo_collate
from mmengine.optim import OptimWrapper
from torch.utils.data import DataLoader

import mmrankkd  # noqa: F401
from mmrankkd.datasets import ReplaySampler
from mmrankkd.datasets.synthetic_cifar import (disable_cifar100_md5_check,
                                               make_synthetic_cifar100)
from mmrankkd.engine import check_run_config
from mmrankkd.models.distillers.teacher_store import (MissingViewError,
                                                      StoreMismatchError,
                                                      TeacherStore,
                                                      expand_topk, topk_rows)
from mmrankkd.registry import MODELS
from conftest import (PY, free_port, random_cifar_teacher,
                      resnet8_kd_config, run_tool, train_dataset)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / 'cifar100' / (
    'kd_resnet32x4_resnet8x4_1xb64_cifar100.py')
MODELS_DIR = REPO / 'configs' / 'cifar100' / '_base_' / 'models'
sys.path.insert(0, str(REPO / 'tools'))
from build_teacher_store import build_store  # noqa: E402

NUM_TRAIN = 8
EPOCHS = 2
SEED = 3
RANDOM_PIPELINE = [
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.3, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4),
    dict(type='PackInputs'),
]
REPLAY_SAMPLER = dict(type='mmrankkd.ReplaySampler',
                      sampler=dict(type='DefaultSampler', shuffle=True))


def _config(root, ckpt, store=None, losses=None):
    cfg = resnet8_kd_config(ckpt)
    if store is not None:
        cfg.model.teacher_store = store
    if losses is not None:
        cfg.model.distill_losses = losses
    inner = cfg.train_dataloader.dataset
    inner.type = 'mmrankkd.SyntheticCIFAR100'
    inner.data_root = root
    inner.pipeline = copy.deepcopy(RANDOM_PIPELINE)
    cfg.train_dataloader.dataset = dict(type='mmrankkd.ReplayDataset',
                                        seed=SEED, dataset=inner)
    cfg.train_dataloader.sampler = copy.deepcopy(REPLAY_SAMPLER)
    cfg.train_cfg.max_epochs = EPOCHS
    return cfg


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('replay')
    root = make_synthetic_cifar100(str(tmp / 'cifar'), num_train=NUM_TRAIN,
                                   num_test=4)
    ckpt = random_cifar_teacher(tmp / 'teacher.pth')
    cfg = _config(root, ckpt)
    stores = {}
    with disable_cifar100_md5_check():
        for name, topk in (('full', None), ('top5', 5)):
            stores[name] = str(tmp / name)
            build_store(cfg, stores[name], batch_size=6, device='cpu',
                        topk=topk, num_workers=2 if topk else 0,
                        log=lambda *a: None)
    return dict(tmp=tmp, root=root, ckpt=ckpt, cfg=cfg, **stores)


def _epoch_batches(dataset, epoch, batch, num_workers=0):
    """One epoch of training batches as the runner's data loader makes
    them: ReplaySampler keys, workers, collate."""
    sampler = ReplaySampler(dataset, REPLAY_SAMPLER['sampler'], seed=epoch)
    sampler.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler,
                        num_workers=num_workers, collate_fn=pseudo_collate)
    return list(loader)


def test_replayed_views_are_bit_identical(setup):
    """(epoch, i) makes one view wherever it is made (workers or not, any
    order), epochs differ; outside the samples torch's generator is as it
    was and numpy's goes on deterministically."""
    dataset = train_dataset(setup['cfg'])
    after = []
    for _ in range(2):
        np.random.seed(0)
        torch_state = torch.get_rng_state()
        here = {(e, i): dataset[(e, i)]['inputs']
                for e in (1, 0) for i in reversed(range(NUM_TRAIN))}
        assert torch.equal(torch.get_rng_state(), torch_state)
        after.append(np.random.rand())
    assert after[0] == after[1]
    for batch in _epoch_batches(dataset, 1, 3, num_workers=2):
        for inputs, ds in zip(batch['inputs'], batch['data_samples']):
            assert ds.replay_view[:2] == (SEED, 1)
            assert torch.equal(inputs, here[(1, ds.sample_idx)])
    assert not torch.equal(here[(0, 2)], here[(1, 2)])
    with pytest.raises(TypeError, match='ReplaySampler'):
        dataset[2]


def test_replay_wraps_mmseg_and_concat_data_sets(cityscapes_root):
    """mmseg's Cityscapes with its random resize, crop (category-ratio
    retries), flip and photometric distortion, and a ConcatDataset: one
    view per (epoch, i), image and label alike."""
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope('mmseg')
    inner = dict(
        type='CityscapesDataset', data_root=str(cityscapes_root),
        data_prefix=dict(img_path='leftImg8bit/train',
                         seg_map_path='gtFine/train'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadAnnotations'),
                  dict(type='RandomResize', scale=(128, 64),
                       ratio_range=(0.5, 2.0), keep_ratio=True),
                  dict(type='RandomCrop', crop_size=(32, 64),
                       cat_max_ratio=0.75),
                  dict(type='RandomFlip', prob=0.5),
                  dict(type='PhotoMetricDistortion'),
                  dict(type='PackSegInputs')])
    dataset = DATASETS.build(dict(
        type='mmrankkd.ReplayDataset', seed=1,
        dataset=dict(type='ConcatDataset', datasets=[inner, inner])))
    assert len(dataset) == 8
    views = {}
    for key in [(0, 5), (1, 5), (0, 1), (0, 5)]:
        out = dataset[key]
        assert out['data_samples'].replay_view[:2] == (1, key[0])
        pair = (out['inputs'], out['data_samples'].gt_sem_seg.data)
        if key in views:
            assert all(torch.equal(a, b) for a, b in zip(pair, views[key]))
        views[key] = pair
    assert not torch.equal(views[(0, 5)][0], views[(1, 5)][0])


def test_replay_sampler_keys():
    """Finite samplers: (set epoch, index); a pass started and dropped
    (prefetching workers, an iterator restarted on resume) may start
    again, a second full pass in one epoch is refused. Infinite samplers:
    (pass, index) from each rank's share of the global stream, every pair
    drawn once across ranks. Other samplers and other data sets are
    refused by name."""
    from mmrankkd.datasets import ReplayDataset
    data = ReplayDataset(list(range(10)))
    sampler = ReplaySampler(data, dict(type='DefaultSampler'), seed=0)
    sampler.set_epoch(4)
    next(iter(sampler))  # started, dropped
    keys = list(sampler)
    assert sorted(keys) == [(4, i) for i in range(10)]
    with pytest.raises(RuntimeError, match='second full pass'):
        list(sampler)
    with pytest.raises(TypeError, match='DefaultSampler or'):
        ReplaySampler(data, torch.utils.data.SequentialSampler(data))
    with pytest.raises(TypeError, match='outermost'):
        ReplaySampler(list(range(10)), dict(type='DefaultSampler'), seed=0)
    drawn = []
    for rank in range(2):
        inner = InfiniteSampler(data, seed=5)
        inner.rank, inner.world_size = rank, 2
        inner.indices = inner._indices_of_rank()
        replay = ReplaySampler(data, inner)
        stream = iter(replay)
        drawn += [next(stream) for _ in range(15)]  # 3 passes over 2 ranks
    assert sorted(drawn) == [(p, i) for p in range(3) for i in range(10)]
    assert isinstance(ReplaySampler(data, None, seed=0).sampler,
                      DefaultSampler)


def test_replay_refuses_cached_transforms():
    from mmrankkd.datasets import ReplayDataset

    class CachedMosaic:
        pass

    class Data(list):
        pipeline = type('Compose', (), {'transforms': [CachedMosaic()]})()

    with pytest.raises(ValueError, match='CachedMosaic'):
        ReplayDataset(Data([1, 2]))


def _train(cfg, batches, store):
    torch.manual_seed(0)
    if store is not None:
        cfg = copy.deepcopy(cfg)
        cfg.model.teacher_store = store
    model = MODELS.build(cfg.model)
    model.train()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1,
                                           momentum=0.9))
    losses = [model.train_step(copy.deepcopy(b), wrapper) for b in batches]
    return model, losses


def test_replay_store_matches_live_teacher_in_training(setup):
    """Two epochs of replayed batches: the full replay store gives the
    live teacher's losses and student weights."""
    dataset = train_dataset(setup['cfg'])
    batches = (_epoch_batches(dataset, 0, 4) +
               _epoch_batches(dataset, 1, 4))
    (live, a), (stored, b) = (_train(setup['cfg'], batches, s)
                              for s in (None, setup['full']))
    assert type(stored.teacher_source).__name__ == 'StoredTeacher'
    for x, y in zip(a, b):
        for key in x:
            torch.testing.assert_close(y[key], x[key], rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(live.student.state_dict().items(),
                            stored.student.state_dict().values()):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    # Past the stored epochs: a named error, not a silent live fallback.
    late = _epoch_batches(dataset, EPOCHS, 4)[0]
    data = stored.data_preprocessor(late, True)
    with pytest.raises(MissingViewError, match='--epochs'):
        stored.teacher_logits(data['inputs'], data['data_samples'])


def test_topk_store_rows_and_loss_gate(setup):
    """A top-5 store: each row is the live logits' top-5 (values, classes)
    with the rest's mass spread evenly; KD takes it (approximate), Kendall
    with topk <= 5 takes it exactly, DIST / Plackett-Luce / Kendall over
    all pairs are refused by name."""
    dataset = train_dataset(setup['cfg'])
    batch = _epoch_batches(dataset, 1, NUM_TRAIN)[0]
    model = MODELS.build(setup['cfg'].model)
    data = model.data_preprocessor(batch, True)
    live = model.teacher_logits(data['inputs'], data['data_samples'])
    samples = np.asarray([ds.sample_idx for ds in data['data_samples']])
    store = TeacherStore(setup['top5'])
    rows = torch.from_numpy(store.read(samples, np.ones_like(samples)))
    order = live.argsort(dim=1, descending=True)[:, :5]
    torch.testing.assert_close(rows.gather(1, order), live.gather(1, order))
    mass = live.softmax(1).gather(1, order).sum(1)
    rest = rows.softmax(1)
    rest.scatter_(1, order, 0.0)
    torch.testing.assert_close(rest.sum(1), 1 - mass, rtol=1e-4, atol=1e-6)
    assert (rest.amax(1) - rest.scatter(1, order, 1.0).amin(1)).abs().max() \
        < 1e-6  # spread evenly
    # Kendall (hard teacher signs, top-3 pairs) is exact on the top-5 rows.
    from mmrankkd.models.losses import KendallRankLoss
    kendall = KendallRankLoss(topk=3, steepness=5.0)
    grads = []
    for teacher in (rows, live):
        student = torch.randn(live.shape, generator=torch.Generator()
                              .manual_seed(0), requires_grad=True)
        value = kendall(student, teacher)
        value.backward()
        grads.append((value.detach(), student.grad))
    torch.testing.assert_close(grads[0], grads[1])
    assert kendall.teacher_topk(5) == 'exact'
    assert KendallRankLoss(topk=6).teacher_topk(5) == 'refused'
    # The gate at build time.
    kd = dict(loss_kd=dict(type='mmrankkd.KDLoss', temperature=4.0))
    model = MODELS.build(_config(setup['root'], setup['ckpt'], setup['top5'],
                                 kd).model)
    out = model.teacher_logits(data['inputs'], data['data_samples'])
    torch.testing.assert_close(out, rows)
    for loss in ('DISTLoss', 'PlackettLuceLoss', 'KendallRankLoss'):
        cfg = _config(setup['root'], setup['ckpt'], setup['top5'],
                      dict(loss_x=dict(type=f'mmrankkd.{loss}')))
        with pytest.raises(StoreMismatchError, match=f'loss_x \\({loss}: '):
            MODELS.build(cfg.model)
    # Spot check compares the top-5 (passes on a top-k store).
    model = MODELS.build(_config(
        setup['root'], setup['ckpt'],
        dict(path=setup['top5'], spot_check_interval=1), kd).model)
    model.teacher_logits(data['inputs'], data['data_samples'])
    assert model.teacher_source.spot_checks == 1


def test_topk_expansion_keeps_ranking_and_mass():
    """Kept values exact, total mass exact, no dropped class above a kept
    one; k == C gives the row back; the int32 class index of a store with
    more than 32,767 classes round-trips."""
    logits = torch.randn(6, 50) * 3
    values, indices, rest = topk_rows(logits, 7)
    full = torch.from_numpy(expand_topk(values.numpy(), indices.numpy(),
                                        rest.numpy(), 50))
    torch.testing.assert_close(full.logsumexp(1), logits.logsumexp(1))
    assert torch.equal(full.argsort(1, descending=True)[:, :7], indices)
    assert (full.gather(1, indices).amin(1) >=
            full.scatter(1, indices, -1e9).amax(1)).all()
    values, indices, rest = topk_rows(logits, 50)
    assert torch.isinf(rest).all()
    torch.testing.assert_close(torch.from_numpy(expand_topk(
        values.numpy(), indices.numpy(), rest.numpy(), 50)), logits)
    from mmrankkd.models.distillers.teacher_store import layout
    index = dict(num_samples=2, num_views=1, num_classes=40000, topk=3)
    assert layout(index)['indices'][1] == np.int32
    wide = torch.randn(2, 40000)
    wide[:, 39999] = 50.0
    values, indices, rest = topk_rows(wide, 3)
    stored = indices.numpy().astype(layout(index)['indices'][1])
    assert (expand_topk(values.numpy(), stored, rest.numpy(),
                        40000).argmax(1) == 39999).all()


def test_replay_run_refusals(setup):
    """Start-up checks: the replay sampler is needed, and no more epochs
    than the store holds; a mismatched replay seed is refused per batch."""
    cfg = _config(setup['root'], setup['ckpt'], setup['full'])
    check_run_config(cfg)
    bad = copy.deepcopy(cfg)
    bad.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=True)
    with pytest.raises(StoreMismatchError, match='ReplaySampler'):
        check_run_config(bad)
    bad = copy.deepcopy(cfg)
    bad.train_cfg.max_epochs = EPOCHS + 1
    with pytest.raises(StoreMismatchError, match='--epochs 3'):
        check_run_config(bad)
    # Iteration loops: DefaultSampler, one batch (of 64) per pass of 8
    # samples; InfiniteSampler, 64 / 8 = 8 passes per batch.
    bad = copy.deepcopy(cfg)
    bad.train_cfg = dict(by_epoch=False, max_iters=2)
    check_run_config(bad)
    bad.train_cfg = dict(by_epoch=False, max_iters=3)
    with pytest.raises(StoreMismatchError, match='--epochs 3'):
        check_run_config(bad)
    bad.train_cfg = dict(by_epoch=False, max_iters=1)
    bad.train_dataloader.sampler.sampler = dict(type='InfiniteSampler')
    with pytest.raises(StoreMismatchError, match='--epochs 8'):
        check_run_config(bad)
    model = MODELS.build(cfg.model)
    bad = copy.deepcopy(cfg)
    bad.train_dataloader.dataset.seed = SEED + 1
    with pytest.raises(StoreMismatchError, match='data set'):
        check_run_config(bad)
    data = model.data_preprocessor(
        _epoch_batches(train_dataset(bad), 0, 4)[0], True)
    with pytest.raises(StoreMismatchError, match=f'seed to {SEED}'):
        model.teacher_logits(data['inputs'], data['data_samples'])
    # Another pipeline with the same seed: refused per batch too (a run
    # that skips the start-up check, e.g. Runner.from_cfg).
    bad = copy.deepcopy(cfg)
    bad.train_dataloader.dataset.dataset.pipeline[0]['crop_ratio_range'] = (
        0.5, 1.0)
    data = model.data_preprocessor(
        _epoch_batches(train_dataset(bad), 0, 4)[0], True)
    with pytest.raises(StoreMismatchError, match='pipelines'):
        model.teacher_logits(data['inputs'], data['data_samples'])
    # Views of several sizes: a classifier's batch padding would make a
    # view's teacher input depend on its batch.
    bad.train_dataloader.dataset.dataset.pipeline[0] = dict(
        type='RandomResizedCrop', scale=32)
    bad.train_dataloader.dataset.dataset.pipeline.insert(1, dict(
        type='mmcv.RandomResize', scale=(32, 32), ratio_range=(0.5, 1.0)))
    with pytest.raises(ValueError, match='one size'):
        build_store(bad, str(setup['tmp'] / 'sizes'), epochs=1,
                    device='cpu', log=lambda *a: None)


VIEW_PIPELINE = [
    dict(type='mmrankkd.ViewRandomCrop', crop_size=32, padding=4),
    dict(type='mmrankkd.ViewRandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', meta_keys=('sample_idx', 'teacher_view')),
]


def _write_run_config(setup, path, store, extra='', replay=True):
    """A tools/train.py config: two workers per process (persistent),
    batch 2, a spot check of the store on every batch."""
    cfg = setup['cfg']
    inner = cfg.train_dataloader.dataset.dataset.to_dict()
    if replay:
        train = (f'    sampler={REPLAY_SAMPLER!r},\n'
                 '    dataset=dict(_delete_=True, type="mmrankkd.'
                 f'ReplayDataset", seed={SEED}, dataset=inner))\n')
    else:
        inner['pipeline'] = VIEW_PIPELINE
        train = '    dataset=dict(_delete_=True, **inner))\n'
    path.write_text(
        f'_base_ = [{str(CONFIG)!r}]\n'
        f'data_root = {setup["root"]!r}\n'
        f'model = dict(student={cfg.model.student.to_dict()!r},\n'
        f'             teacher={str(MODELS_DIR / "resnet8.py")!r},\n'
        f'             teacher_ckpt={str(setup["ckpt"])!r},\n'
        f'             teacher_store=dict(path={store!r},\n'
        '                                spot_check_interval=1,\n'
        '                                spot_check_tol=1e-5))\n'
        'model["student"].update(_delete_=True)\n'
        f'inner = {inner!r}\n'
        'train_dataloader = dict(batch_size=2, num_workers=2, '
        'persistent_workers=True,\n' + train +
        'val_dataloader = dict(batch_size=4, num_workers=0, dataset=dict('
        'type="mmrankkd.SyntheticCIFAR100", data_root=data_root))\n'
        'test_dataloader = val_dataloader\n'
        f'train_cfg = dict(by_epoch=True, max_epochs={EPOCHS}, '
        'val_interval=1)\n'
        'default_hooks = dict(logger=dict(interval=1))\n'
        'randomness = dict(seed=0)\n' + extra)
    return path


def test_runner_trains_from_a_replay_store(setup, tmp_path):
    """tools/train.py, two epochs, views made in two persistent workers:
    every training batch is spot-checked against the live teacher on the
    batch the workers made (tolerance 1e-5), so the builder's views are
    training's."""
    cfg = _write_run_config(setup, tmp_path / 'replay_cfg.py', setup['full'])
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
    assert 'Teacher logits from replay store' in log
    train = [l for l in log.splitlines() if 'Epoch(train)' in l]
    assert len(train) == EPOCHS * NUM_TRAIN // 2
    assert all('distill.loss_kd' in l for l in train)


@pytest.mark.parametrize('wrapper', [
    dict(type='RepeatDataset', times=3),
    dict(type='ClassBalancedDataset', oversample_thr=1.0)])
def test_wrapped_data_set_exact_store(tmp_path, wrapper):
    """Exact mode through RepeatDataset / ClassBalancedDataset: the
    builder enumerates the inner data set (sample_idx is the inner index),
    training reads it."""
    root = make_synthetic_cifar100(str(tmp_path / 'cifar'), num_train=4,
                                   num_test=2)
    ckpt = random_cifar_teacher(tmp_path / 'teacher.pth')
    cfg = resnet8_kd_config(ckpt)
    inner = cfg.train_dataloader.dataset
    inner.data_root = root
    cfg.train_dataloader.dataset = dict(wrapper, dataset=inner)
    with disable_cifar100_md5_check():
        index = build_store(cfg, str(tmp_path / 'store'), batch_size=512,
                            device='cpu', log=lambda *a: None)
    assert index['num_samples'] == 4 and index['views_filled'] == 4 * 162
    assert index['dataset']['dataset']['type'] == 'CIFAR100'
    cfg.model.teacher_store = dict(path=str(tmp_path / 'store'),
                                   spot_check_interval=1,
                                   spot_check_tol=1e-5)
    check_run_config(cfg)
    dataset = train_dataset(cfg)
    assert len(dataset) > 4  # repeated / oversampled
    model = MODELS.build(cfg.model)
    data = model.data_preprocessor(pseudo_collate(
        [dataset[i] for i in (0, 3, len(dataset) - 1)]), True)
    model.teacher_logits(data['inputs'], data['data_samples'])
    assert model.teacher_source.spot_checks == 1
    cfg.train_dataloader.dataset = dict(type='ConcatDataset',
                                        datasets=[inner, inner])
    with pytest.raises(ValueError, match='ConcatDataset'), \
            disable_cifar100_md5_check():
        build_store(cfg, str(tmp_path / 'concat'), device='cpu',
                    log=lambda *a: None)


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['replay', 'exact'])
def test_two_gloo_ranks_read_their_own_samples(setup, tmp_path, mode):
    """torchrun, 2 gloo ranks with two data loader workers each, an exact
    or a replay store: each rank's batches (its share of each epoch) are
    spot-checked against the live teacher on every step, so a rank that
    read another sample's or view's row fails the run."""
    store = setup['full']
    if mode == 'exact':
        exact = copy.deepcopy(setup['cfg'])
        exact.train_dataloader.dataset = exact.train_dataloader.dataset.dataset
        exact.train_dataloader.dataset.pipeline = VIEW_PIPELINE
        store = str(tmp_path / 'exact')
        build_store(exact, store, batch_size=512, device='cpu',
                    log=lambda *a: None)
    cfg = _write_run_config(setup, tmp_path / 'ddp_cfg.py', store,
                            replay=mode == 'replay')
    proc = run_tool([str(Path(PY).parent / 'torchrun'), '--nproc_per_node',
                     '2', '--master_port', str(free_port()), 'tools/train.py',
                     str(cfg), '--launcher', 'pytorch', '--work-dir',
                     str(tmp_path / 'wd')])
    log = '\n'.join(Path(p).read_text()
                    for p in glob.glob(f'{tmp_path}/wd/*/*.log'))
    assert f'Teacher logits from {mode} store' in log, proc.stdout[-2000:]
    train = [l for l in log.splitlines() if 'Epoch(train)' in l]
    # 8 samples / (2 ranks x batch 2) = 2 iterations per epoch (one rank
    # would run 4).
    assert len(train) == EPOCHS * 2


def _tiny_imagenet(root: Path, num: int = 4) -> str:
    """ImageNet's layout (train/<wnid>/*.JPEG, meta/train.txt) with a few
    random 64x80 images, read by mmpretrain's ImageNet class."""
    import cv2
    rng = np.random.RandomState(0)
    lines = []
    for i in range(num):
        rel = f'n{i:08d}/img_{i}.JPEG'
        (root / 'train' / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / 'train' / rel),
                    rng.randint(0, 255, (64, 80, 3), np.uint8))
        lines.append(f'{rel} {i * 7}')
    (root / 'meta').mkdir(parents=True, exist_ok=True)
    (root / 'meta' / 'train.txt').write_text('\n'.join(lines) + '\n')
    return str(root)


@pytest.mark.slow
def test_shipped_imagenet_replay_config(tmp_path):
    """configs/imagenet/kd-replay_...: its replayed training set builds a
    top-10 store (ResNet-34 teacher at 224), and the ResNet-18 distiller
    with that store reads the top-10 of the live teacher's logits on the
    views the data loader makes (spot check on the batch)."""
    cfg = Config.fromfile(str(
        REPO / 'configs' / 'imagenet' /
        'kd-replay_resnet34_resnet18_8xb32_in1k.py'))
    cfg.train_dataloader.dataset.dataset.data_root = _tiny_imagenet(
        tmp_path / 'imagenet')
    torch.manual_seed(0)
    from mmengine.hub import get_config
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        teacher = MODELS.build(get_config(
            'mmpretrain::resnet/resnet34_8xb32_in1k.py').model)
    torch.save({'state_dict': teacher.state_dict()}, tmp_path / 't.pth')
    cfg.model.teacher_ckpt = str(tmp_path / 't.pth')
    index = build_store(cfg, str(tmp_path / 'store'), batch_size=4,
                        epochs=2, topk=10, device='cpu',
                        log=lambda *a: None)
    assert index['mode'] == 'replay' and index['topk'] == 10
    assert index['views_filled'] == 4 * 2 and index['num_classes'] == 1000
    cfg.model.teacher_store = dict(path=str(tmp_path / 'store'),
                                   spot_check_interval=1)
    cfg.train_cfg.max_epochs = 2
    check_run_config(cfg)
    dataset = train_dataset(cfg)
    batch = _epoch_batches(dataset, 1, 4)[0]
    model = MODELS.build(cfg.model)
    data = model.data_preprocessor(batch, True)
    assert data['inputs'].shape == (4, 3, 224, 224)
    rows = model.teacher_logits(data['inputs'], data['data_samples'])
    assert model.teacher_source.spot_checks == 1 and rows.shape == (4, 1000)


SEG_REPLAY = '''
replay_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.5, 2.0),
         keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    num_workers=2, persistent_workers=True,
    sampler=dict(type='mmrankkd.ReplaySampler',
                 sampler=dict(type='InfiniteSampler', shuffle=True)),
    dataset=dict(_delete_=True, type='mmrankkd.ReplayDataset', seed=2,
                 dataset=dict(type='CityscapesDataset', data_root=data_root,
                              data_prefix=dict(
                                  img_path='leftImg8bit/train',
                                  seg_map_path='gtFine/train'),
                              pipeline=replay_pipeline)))
'''


@pytest.mark.slow
def test_dense_replay_store(seg_models, cityscapes_root, tmp_path):
    """A PSPNet teacher's dense logits in a replay store (random resize,
    crop, flip, photometric distortion; iteration loop, InfiniteSampler):
    tools/train.py reads them with a spot check against the live teacher
    on every batch (two persistent workers make the views). Exact mode
    and top-k are refused for dense logits."""
    from conftest import seg_distill_config
    path = seg_distill_config(
        tmp_path / 'replay.py', cityscapes_root, seg_models['student_cfg'],
        seg_models['teacher_cfg'], seg_models['teacher_ckpt'],
        extra=SEG_REPLAY)
    cfg = Config.fromfile(path)
    # 4 iterations x 2 images over 4 images: 2 passes (the builder's
    # default for this iteration-based config).
    index = build_store(cfg, str(tmp_path / 'store'), batch_size=3,
                        device='cpu', log=lambda *a: None)
    assert index['mode'] == 'replay' and index['spatial'] == [8, 8]
    assert index['views_filled'] == 4 * 2
    with pytest.raises(ValueError, match='top-k store of dense'):
        build_store(cfg, str(tmp_path / 'topk'), epochs=2, topk=5,
                    device='cpu', log=lambda *a: None)
    plain = Config.fromfile(seg_distill_config(
        tmp_path / 'plain.py', cityscapes_root, seg_models['student_cfg'],
        seg_models['teacher_cfg'], seg_models['teacher_ckpt']))
    with pytest.raises(ValueError, match='replay mode'):
        build_store(plain, str(tmp_path / 'exact'), device='cpu',
                    log=lambda *a: None)
    run_tool([PY, 'tools/train.py', path, '--work-dir', str(tmp_path / 'wd'),
              '--cfg-options', f'model.teacher_store.path={tmp_path}/store',
              'model.teacher_store.spot_check_interval=1',
              'model.teacher_store.spot_check_tol=1e-5'])
    log = '\n'.join(Path(p).read_text()
                    for p in glob.glob(f'{tmp_path}/wd/*/*.log'))
    assert 'Teacher logits from replay store' in log
    train = [l for l in log.splitlines() if 'Iter(train)' in l]
    assert len(train) == 4 and all('distill.' in l for l in train)
