# What the teacher-logit store saves, measured in one run.
#
#   python tools/benchmark_store.py [--device cpu] [--threads 1]
#       [--repeats 5] [--build-samples 2]
#
# 1. Steps (batch 64, 32x32, KD loss): the student's own train step, the
#    distill step with the live teacher, and the distill step reading the
#    teacher's logits from a store; ratios to the student step. The store
#    used for timing holds exactly the batch's views, computed by the live
#    teacher with the real builder code path (the rest of the store is
#    unbuilt: reading cost does not depend on it), and the timed step's
#    teacher logits are checked against the live teacher's.
# 2. Build: tools/build_teacher_store.py's build_store on the first
#    --build-samples synthetic images (all 162 views each) per teacher;
#    time per view, extrapolated (marked so) to CIFAR-100's 50,000 x 162
#    views; the full store's size is exact arithmetic.
# 3. Replay mode (a random pipeline: RandomResizedCrop + flip, replayed by
#    mmrankkd.ReplayDataset): a data sample with and without replay
#    (the cost of seeding the generators), and the distill step reading a
#    full and a top-10 replay store of the batch's views, as ratios to the
#    student step.
# 4. The CIFAR-100 table (11 pairs x 7 losses, 240 epochs): teacher
#    forward time spent online vs once per teacher with stores, from each
#    teacher's measured forward time.
import argparse
import copy
import os.path as osp
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import OptimWrapper

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, osp.join(REPO, 'tools'))

CIFAR = osp.join(REPO, 'configs', 'cifar100')
PAIRS = [('resnet32x4', 'resnet8x4'), ('resnet56', 'resnet20'),
         ('wrn_40_2', 'wrn_16_2')]
# The 11 CIFAR-100 pairs per teacher (configs/cifar100/*_1xb64_cifar100.py),
# each run with 7 losses.
TABLE_TEACHERS = {'resnet56': 1, 'resnet110': 1, 'resnet32x4': 3,
                  'vgg13': 2, 'wrn_40_2': 3, 'ResNet50': 1}
NUM_LOSSES, EPOCHS, TRAIN, VIEWS, CLASSES = 7, 240, 50_000, 162, 100
VIEW_PIPELINE = [
    dict(type='mmrankkd.ViewRandomCrop', crop_size=32, padding=4),
    dict(type='mmrankkd.ViewRandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs', meta_keys=('sample_idx', 'img_shape', 'flip',
                                       'flip_direction', 'teacher_view')),
]


def pair_config(teacher, student, root, ckpt):
    cfg = Config.fromfile(
        osp.join(CIFAR, f'kd_{teacher}_{student}_1xb64_cifar100.py'))
    cfg.model.teacher_ckpt = ckpt
    cfg.train_dataloader.dataset.data_root = root
    cfg.train_dataloader.dataset.pipeline = copy.deepcopy(VIEW_PIPELINE)
    return cfg


def model_of(arch):
    from mmrankkd.registry import MODELS
    cfg = Config.fromfile(osp.join(CIFAR, '_base_', 'models', f'{arch}.py'))
    return MODELS.build(cfg.model)


def timed(fns, repeats):
    """Median seconds of each function, run interleaved (one warm-up)."""
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for t, fn in zip(times, fns):
            start = time.perf_counter()
            fn()
            t.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def dataset_of(cfg):
    from mmengine.registry import DATASETS, init_default_scope
    from mmrankkd.datasets import disable_cifar100_md5_check
    init_default_scope('mmpretrain')
    with disable_cifar100_md5_check():
        return DATASETS.build(copy.deepcopy(cfg.train_dataloader.dataset))


def partial_store(cfg, batch, out):
    """A store holding the batch's views, by the live teacher."""
    from mmrankkd.datasets.transforms import view_id
    from mmrankkd.models.distillers.teacher_store import (
        TeacherStoreWriter, dataset_record, pipeline_record,
        teacher_identity)
    from mmrankkd.registry import MODELS
    distiller = MODELS.build(cfg.model)
    data = distiller.data_preprocessor(copy.deepcopy(batch), True)
    logits = distiller.teacher_source.logits(data['inputs'],
                                             data['data_samples'])
    samples = np.array([ds.sample_idx for ds in batch['data_samples']])
    views = np.array([view_id(ds.teacher_view)
                      for ds in batch['data_samples']])
    labels = np.array([int(ds.gt_label[0]) for ds in batch['data_samples']])
    writer = TeacherStoreWriter(out, int(samples.max()) + 1, [81, 2],
                                distiller.num_classes)
    writer.write(samples, views, logits, labels)
    writer.close(**teacher_identity(distiller),
                 pipeline=pipeline_record(
                     cfg.train_dataloader.dataset.pipeline),
                 dataset=dataset_record(cfg.train_dataloader.dataset))
    return logits


def step_rows(args, tmp, root, batch):
    from mmrankkd.registry import MODELS
    rows = []
    for teacher, student in PAIRS:
        ckpt = osp.join(tmp, f'{teacher}.pth')
        torch.save({'state_dict': model_of(teacher).state_dict()}, ckpt)
        cfg = pair_config(teacher, student, root, ckpt)
        store = osp.join(tmp, f'store_{teacher}_{student}')
        live_logits = partial_store(cfg, batch, store)
        torch.manual_seed(0)
        live = MODELS.build(cfg.model).to(args.device).train()
        cfg.model.teacher_store = store
        torch.manual_seed(0)
        stored = MODELS.build(cfg.model).to(args.device).train()
        data = stored.data_preprocessor(copy.deepcopy(batch), True)
        got = stored.teacher_logits(data['inputs'], data['data_samples'])
        torch.testing.assert_close(got, live_logits.to(got.device))
        student_model = live.student  # the same network, trained alone

        def opt(model):
            return OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4,
                                                momentum=0.9))

        wrappers = [opt(student_model), opt(live), opt(stored)]
        fns = [
            lambda: student_model.train_step(copy.deepcopy(batch),
                                             wrappers[0]),
            lambda: live.train_step(copy.deepcopy(batch), wrappers[1]),
            lambda: stored.train_step(copy.deepcopy(batch), wrappers[2]),
        ]
        prepared = live.data_preprocessor(copy.deepcopy(batch), True)
        fns.append(lambda: live.teacher_logits(prepared['inputs'],
                                               prepared['data_samples']))
        fns.append(lambda: stored.teacher_logits(prepared['inputs'],
                                                 prepared['data_samples']))
        s, d_live, d_store, t_fwd, t_read = timed(fns, args.repeats)
        row = dict(pair=f'{teacher} -> {student}', student_ms=s * 1e3,
                   live_ms=d_live * 1e3, store_ms=d_store * 1e3,
                   teacher_fwd_ms=t_fwd * 1e3, read_ms=t_read * 1e3,
                   live_ratio=d_live / s, store_ratio=d_store / s)
        rows.append(row)
        print('| {pair} | {student_ms:.0f} | {live_ms:.0f} | {store_ms:.0f} '
              '| {teacher_fwd_ms:.0f} | {read_ms:.2f} | {live_ratio:.2f} | '
              '{store_ratio:.3f} |'.format(**row), flush=True)
    return rows


def build_rows(args, tmp, root):
    from build_teacher_store import build_store
    from mmrankkd.datasets import disable_cifar100_md5_check
    rows = {}
    for teacher, student in PAIRS:
        ckpt = osp.join(tmp, f'{teacher}.pth')
        cfg = pair_config(teacher, student, root, ckpt)
        with disable_cifar100_md5_check():
            index = build_store(cfg, osp.join(tmp, f'build_{teacher}'),
                                batch_size=args.build_batch,
                                num_samples=args.build_samples,
                                device=args.device, log=lambda *a: None)
        views = index['num_samples'] * index['num_views']
        per_view = index['build_seconds'] / views
        share = index['teacher_forward_seconds'] / index['build_seconds']
        full_h = per_view * TRAIN * VIEWS / 3600
        rows[teacher] = per_view
        print(f'| {teacher} | {views} | {index["build_seconds"]:.1f} | '
              f'{per_view * 1e3:.2f} | '
              f'{share:.0%} | {full_h:.1f} (extrapolated) |', flush=True)
    return rows


REPLAY_PIPELINE = [
    dict(type='RandomResizedCrop', scale=32, crop_ratio_range=(0.35, 1.0)),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]


def replay_config(teacher, student, root, ckpt):
    cfg = pair_config(teacher, student, root, ckpt)
    inner = cfg.train_dataloader.dataset
    inner.type = 'mmrankkd.SyntheticCIFAR100'
    inner.pipeline = copy.deepcopy(REPLAY_PIPELINE)
    cfg.train_dataloader.dataset = dict(type='mmrankkd.ReplayDataset',
                                        seed=0, dataset=inner)
    cfg.train_dataloader.sampler = dict(
        type='mmrankkd.ReplaySampler',
        sampler=dict(type='DefaultSampler', shuffle=True))
    return cfg


def replay_rows(args, tmp, root):
    from build_teacher_store import build_store
    from mmrankkd.registry import MODELS
    for n, (teacher, student) in enumerate(PAIRS):
        ckpt = osp.join(tmp, f'{teacher}.pth')
        cfg = replay_config(teacher, student, root, ckpt)
        replay = dataset_of(cfg)
        if n == 0:
            plain = replay.dataset
            data_s = timed([lambda: [plain[i] for i in range(64)],
                            lambda: [replay[(0, i)] for i in range(64)]],
                           args.repeats)
            print(f'Data, 64 samples: plain {data_s[0] * 1e3:.1f} ms, '
                  f'replayed {data_s[1] * 1e3:.1f} ms '
                  f'({(data_s[1] - data_s[0]) / 64 * 1e6:.0f} us per sample '
                  'more with replay: seeding, handing back the generators, '
                  'metainfo; the views themselves differ too)\n')
            print('| pair | student step ms | live / student | replay store '
                  '/ student | top-10 replay store / student |\n'
                  '|---|---|---|---|---|')
        batch = pseudo_collate([replay[(0, i)] for i in range(64)])
        models = []
        for topk in (None, 10):
            out = osp.join(tmp, f'replay_{teacher}_{topk}')
            build_store(cfg, out, batch_size=64, num_samples=64, epochs=1,
                        topk=topk, device=args.device, log=lambda *a: None)
            c = copy.deepcopy(cfg)
            c.model.teacher_store = out
            torch.manual_seed(0)
            models.append(MODELS.build(c.model).to(args.device).train())
        torch.manual_seed(0)
        live = MODELS.build(cfg.model).to(args.device).train()
        data = live.data_preprocessor(copy.deepcopy(batch), True)
        want = live.teacher_logits(data['inputs'], data['data_samples'])
        got = models[0].teacher_logits(data['inputs'], data['data_samples'])
        torch.testing.assert_close(got, want)
        nets = [live.student, live] + models
        wrappers = [OptimWrapper(torch.optim.SGD(m.parameters(), lr=1e-4,
                                                 momentum=0.9))
                    for m in nets]
        fns = [(lambda m=m, w=w: m.train_step(copy.deepcopy(batch), w))
               for m, w in zip(nets, wrappers)]
        s, d_live, d_full, d_top = timed(fns, args.repeats)
        print(f'| {teacher} -> {student} | {s * 1e3:.0f} | '
              f'{d_live / s:.2f} | {d_full / s:.3f} | {d_top / s:.3f} |',
              flush=True)


def table_rows(args, batch):
    """Teacher forward ms per batch of 64 for the 6 table teachers."""
    fwd = {}
    x = torch.randn(64, 3, 32, 32, device=args.device)
    for teacher in TABLE_TEACHERS:
        model = model_of(teacher).to(args.device).eval()
        with torch.no_grad():
            fwd[teacher] = timed([lambda: model(x, mode='tensor')],
                                 max(2, args.repeats // 2))[0]
    batches = TRAIN / 64
    online = sum(n * NUM_LOSSES * EPOCHS * batches * fwd[t]
                 for t, n in TABLE_TEACHERS.items())
    once = sum(VIEWS * batches * fwd[t] for t in TABLE_TEACHERS)
    for t, n in TABLE_TEACHERS.items():
        print(f'| {t} | {n} | {fwd[t] * 1e3:.0f} | '
              f'{n * NUM_LOSSES * EPOCHS * batches * fwd[t] / 3600:.0f} | '
              f'{VIEWS * batches * fwd[t] / 3600:.0f} |', flush=True)
    print(f'| all 6 teachers | 11 pairs x {NUM_LOSSES} losses | | '
          f'{online / 3600:.0f} | {once / 3600:.0f} |')
    print(f'Teacher forward time, one seed of the table: online '
          f'{online / 3600:.0f} h, stores {once / 3600:.0f} h '
          f'({online / once:.1f}x less; k seeds: online k x '
          f'{online / 3600:.0f} h, stores still {once / 3600:.0f} h).'
          f' Store size per teacher {TRAIN * VIEWS * CLASSES * 4 / 1e9:.2f}'
          f' GB (float32), {len(TABLE_TEACHERS)} teachers '
          f'{len(TABLE_TEACHERS) * TRAIN * VIEWS * CLASSES * 4 / 1e9:.1f} '
          'GB.')


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--build-samples', type=int, default=2)
    parser.add_argument('--build-batch', type=int, default=64)
    parser.add_argument('--skip', nargs='*', default=[],
                        choices=['steps', 'build', 'replay', 'table'])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import mmrankkd  # noqa: F401
    from mmrankkd.datasets import make_synthetic_cifar100
    tmp = tempfile.mkdtemp(prefix='mmrankkd_store_bench_')
    root = make_synthetic_cifar100(osp.join(tmp, 'cifar'), num_train=64,
                                   num_test=4)
    print(f'device {args.device}, {torch.get_num_threads()} thread(s), '
          f'torch {torch.__version__}, batch 64x3x32x32, KD loss, medians of '
          f'{args.repeats} interleaved runs')
    for teacher, _ in PAIRS:
        torch.save({'state_dict': model_of(teacher).state_dict()},
                   osp.join(tmp, f'{teacher}.pth'))
    if 'steps' not in args.skip:
        cfg = pair_config(*PAIRS[0], root, '')
        dataset = dataset_of(cfg)
        np.random.seed(0)
        batch = pseudo_collate([dataset[i] for i in range(64)])
        print('\n| pair | student step ms | distill step, live teacher ms | '
              'distill step, store ms | teacher forward ms | store read ms '
              '| live / student | store / student |\n'
              '|---|---|---|---|---|---|---|---|')
        step_rows(args, tmp, root, batch)
    if 'build' not in args.skip:
        print('\n| teacher | views built | build s | ms per view | teacher '
              'forward share | 50,000 x 162 views, h |\n|---|---|---|---|'
              '---|---|')
        build_rows(args, tmp, root)
    if 'replay' not in args.skip:
        print('\nReplay mode (RandomResizedCrop + flip, replayed):')
        replay_rows(args, tmp, root)
    if 'table' not in args.skip:
        print('\n| teacher | pairs | forward ms / 64 | teacher h online (7 '
              'losses x 240 epochs) | teacher h, store (162 views) |\n'
              '|---|---|---|---|---|')
        table_rows(args, None)


if __name__ == '__main__':
    main()
