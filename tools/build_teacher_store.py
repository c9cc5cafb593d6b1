# Build a teacher-logit store: run a distillation config's teacher once on
# every training view and write its class logits (or their top-k).
#
#   python tools/build_teacher_store.py CONFIG --out DIR [--batch-size 256]
#       [--num-samples N] [--epochs E] [--topk K] [--num-workers W]
#       [--device cuda] [--cfg-options ...]
#   python tools/train.py CONFIG --cfg-options model.teacher_store=DIR
#
# Exact mode: the training pipeline makes finitely many views and says
# which (mmrankkd.ViewRandomCrop / mmrankkd.ViewRandomFlip, PackInputs with
# 'sample_idx' and 'teacher_view' in meta_keys); every view is stored.
# Replay mode: the training data set is an mmrankkd.ReplayDataset (any
# random pipeline, replayed per epoch and sample from its seed); the view
# of every sample in epochs 0..E-1 is stored. docs/teacher_store.md.
import argparse
import copy
import os.path as osp
import sys
import time

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate
from torch.utils.data import DataLoader

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmrankkd  # noqa: E402,F401  (registers modules)
from mmrankkd.datasets.replay import REPLAY_KEY, ReplayDataset  # noqa: E402
from mmrankkd.datasets.transforms import (VIEW_KEY,  # noqa: E402
                                          apply_pipeline_view,
                                          pipeline_view_counts)
from mmrankkd.models.distillers.teacher_store import (  # noqa: E402
    TeacherStoreWriter, check_storable, dataset_record, pipeline_record,
    replay_passes, row_bytes, teacher_identity, training_pipeline)

#: Transforms without randomness that may sit around the view transforms.
DETERMINISTIC = {
    'PackInputs', 'LoadImageFromFile', 'Resize', 'ResizeEdge', 'CenterCrop',
    'ToTensor', 'Transpose', 'ImageToTensor', 'Normalize', 'Collect',
    'ToNumpy', 'PackClsInputs', 'PackSegInputs', 'LoadAnnotations'
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Run a distillation config\'s teacher once on every '
        'view of every training image and store its logits.')
    parser.add_argument('config', help='distillation config')
    parser.add_argument('--out', required=True, help='store directory')
    parser.add_argument('--batch-size', type=int, default=256,
                        help='views per teacher forward (default 256)')
    parser.add_argument('--num-samples', type=int, default=None,
                        help='only the first N training samples (a partial '
                        'store: training on more samples is refused)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='replay mode: the epochs to store (default: '
                        'train_cfg.max_epochs, or the passes max_iters '
                        'draws on --gpus processes)')
    parser.add_argument('--gpus', type=int, default=1,
                        help='replay mode, iteration-based configs: the '
                        'GPUs (processes) training will use, which decide '
                        'how many passes max_iters draws (default 1)')
    parser.add_argument('--topk', type=int, default=None,
                        help='keep only the top-k logits of each view (an '
                        'approximation that only some losses accept)')
    parser.add_argument('--num-workers', type=int, default=0,
                        help='replay mode: data loader workers (default 0)')
    parser.add_argument('--device', default=None,
                        help='default: cuda if available, else cpu')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as tools/train.py')
    return parser.parse_args(argv)


def _check_pipeline(transforms) -> None:
    for t in transforms:
        name = type(t).__name__
        if hasattr(t, 'apply_view') or name in DETERMINISTIC:
            continue
        raise ValueError(
            f'The training pipeline has {name}, which is random (or not '
            'known to be deterministic) and does not record its view: the '
            'store could not give each training view its own logits. Fix: '
            'use mmrankkd.ViewRandomCrop / mmrankkd.ViewRandomFlip for the '
            'random steps (finitely many views), or replay mode: wrap the '
            "data set in dict(type='mmrankkd.ReplayDataset', dataset=...) "
            "and the sampler in dict(type='mmrankkd.ReplaySampler', "
            'sampler=...) (docs/teacher_store.md).')


#: Wrappers whose samples are their inner data set's (``sample_idx`` is
#: the inner index): exact mode builds the inner data set.
SAME_SAMPLES = ('RepeatDataset', 'ClassBalancedDataset')


def _inner_dataset(dataset):
    """The data set whose pipeline and indices exact mode enumerates."""
    while type(dataset).__name__ in SAME_SAMPLES:
        dataset = dataset.dataset
    if not hasattr(dataset, 'pipeline') or not hasattr(dataset,
                                                       'get_data_info'):
        raise ValueError(
            f'Exact mode enumerates the views of one data set; '
            f'{type(dataset).__name__} is not one (a ConcatDataset\'s '
            'samples repeat indices across its parts). Fix: one data set '
            '(RepeatDataset / ClassBalancedDataset around it are fine), or '
            'replay mode (mmrankkd.ReplayDataset around any data set).')
    return dataset


def _labels(data_samples) -> np.ndarray:
    """Each sample's class label (-1 for samples without one: dense)."""
    return np.asarray([int(ds.gt_label.reshape(-1)[0])
                       if 'gt_label' in ds else -1 for ds in data_samples])


def _exact_batches(dataset, n: int, batch_size: int):
    """(samples, views, packed batch) over every view of samples 0..n-1;
    also the view counts."""
    transforms = dataset.pipeline.transforms
    _check_pipeline(transforms)
    counts = pipeline_view_counts(transforms, dataset.get_data_info(0))
    if not counts:
        raise ValueError('The training pipeline has no view transform '
                         '(mmrankkd.ViewRandomCrop / ViewRandomFlip).')
    num_views = int(np.prod(counts))

    def batches():
        total_views = n * num_views
        infos = {}
        for b in range(0, total_views, batch_size):
            chunk = [divmod(k, num_views)
                     for k in range(b, min(b + batch_size, total_views))]
            packed = []
            for i, v in chunk:
                if i not in infos:
                    infos.clear()
                    infos[i] = dataset.get_data_info(i)
                    got = pipeline_view_counts(transforms, infos[i])
                    if got != counts:
                        raise ValueError(
                            f'Sample {i} has {got} views, sample 0 '
                            f'{counts}: images differ in size.')
                packed.append(apply_pipeline_view(transforms, infos[i], v,
                                                  counts))
            yield (np.asarray([i for i, _ in chunk]),
                   np.asarray([v for _, v in chunk]), pseudo_collate(packed))
    return counts, batches()


def _replay_batches(dataset: ReplayDataset, n: int, epochs: int,
                    batch_size: int, num_workers: int):
    """(samples, epochs, packed batch) over samples 0..n-1 of epochs
    0..epochs-1, made by the replay data set itself."""
    keys = [(e, i) for e in range(epochs) for i in range(n)]
    loader = DataLoader(dataset, batch_size=batch_size, sampler=keys,
                        num_workers=num_workers, collate_fn=pseudo_collate)
    for b, batch in zip(range(0, len(keys), batch_size), loader):
        chunk = keys[b:b + batch_size]
        yield (np.asarray([i for _, i in chunk]),
               np.asarray([e for e, _ in chunk]), batch)


def _check_one_size(inputs, samples, views, shape):
    """A classifier's data preprocessor pads a batch to its largest image,
    so a view's teacher input would depend on the batch it is in: every
    view must have one size. Returns that size."""
    for tensor, i, v in zip(inputs, samples, views):
        if shape is None:
            shape = tuple(tensor.shape)
        elif tuple(tensor.shape) != shape:
            raise ValueError(
                f'Sample {i}, view {v} is {tuple(tensor.shape)}, other views '
                f'{shape}: the data preprocessor pads a batch to its largest '
                'image, so this view\'s teacher logits would depend on its '
                'batch. Fix: a pipeline whose views have one size (a fixed '
                'crop or resize).')
    return shape


def build_store(cfg: Config, out: str, batch_size: int = 256,
                num_samples=None, device=None, log=print, epochs=None,
                topk=None, num_workers: int = 0, gpus: int = 1) -> dict:
    """Build the store of ``cfg``'s teacher and training pipeline in
    ``out``; returns its index (with ``build_seconds``)."""
    from mmengine.registry import DATASETS, init_default_scope
    from mmrankkd.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('teacher_store', None)
    distiller = MODELS.build(model_cfg).to(device)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset = DATASETS.build(copy.deepcopy(dataset_cfg))
    replay = isinstance(dataset, ReplayDataset)
    check_storable(distiller, 'replay' if replay else 'exact')
    if replay:
        if dataset.views_sha256 is None:
            raise ValueError(
                'The ReplayDataset wraps a built data set, so its pipeline '
                'cannot be recorded. Fix: give it the data set config.')
        total = len(dataset)
        epochs = epochs or replay_passes(cfg, total, gpus)
        if not epochs:
            raise ValueError(
                'Replay mode stores one view per epoch and sample, and the '
                'config has neither train_cfg.max_epochs nor max_iters. '
                'Fix: --epochs E.')
    else:
        if epochs:
            raise ValueError('--epochs is for replay mode (an '
                             'mmrankkd.ReplayDataset training set).')
        dataset = _inner_dataset(dataset)
        total = len(dataset)
    n = total if num_samples is None else min(int(num_samples), total)
    if replay:
        counts = [int(epochs)]
        batches = _replay_batches(dataset, n, int(epochs), batch_size,
                                  num_workers)
        key = REPLAY_KEY
    else:
        counts, batches = _exact_batches(dataset, n, batch_size)
        key = VIEW_KEY
    num_views = int(np.prod(counts))
    what = (f'{num_views} epochs (replayed, seed {dataset.seed})' if replay
            else f'{num_views} views ({" x ".join(map(str, counts))})')
    total_views = n * num_views
    writer, shape = None, None
    start = time.perf_counter()
    forward_s, done = 0.0, 0
    for step, (samples, views, batch) in enumerate(batches):
        if distiller.kind == 'cls':
            shape = _check_one_size(batch['inputs'], samples, views, shape)
        data = distiller.data_preprocessor(batch, True)
        for i, ds in zip(samples, data['data_samples']):
            meta = ds.metainfo
            if meta.get('sample_idx') != i or key not in meta:
                raise ValueError(
                    f'The packed samples lack sample_idx / {key}. Fix: '
                    + (f"PackInputs(meta_keys=(..., 'sample_idx', "
                       f"'{VIEW_KEY}'))." if not replay else
                       'a data set whose items carry data_samples.'))
        t0 = time.perf_counter()
        logits = distiller.teacher_source.logits(data['inputs'],
                                                 data['data_samples'])
        forward_s += time.perf_counter() - t0
        if writer is None:  # the first batch gives dense logits' size
            writer = TeacherStoreWriter(
                out, n, counts, distiller.num_classes, topk=topk,
                mode='replay' if replay else 'exact',
                replay_seed=dataset.seed if replay else None,
                spatial=tuple(logits.shape[2:]))
            per_view = row_bytes(writer.index)
            log(f'Teacher store {out}: {n} of {total} samples x {what} x '
                f'{tuple(logits.shape[1:])} logits' +
                (f', top-{topk} kept' if topk else '') +
                f', {total_views * per_view / 1e9:.3f} GB')
        writer.write(samples, views, logits, _labels(data['data_samples']))
        done += len(samples)
        if step % 50 == 0:
            log(f'  {done}/{total_views} views, '
                f'{time.perf_counter() - start:.1f} s')
    if writer is None:
        raise ValueError(f'No samples to store (--num-samples {n}).')
    build_s = time.perf_counter() - start
    index = writer.close(
        **teacher_identity(distiller),
        pipeline=pipeline_record(training_pipeline(dataset_cfg)),
        dataset=dataset_record(dataset_cfg), dataset_len=total,
        build_seconds=build_s, teacher_forward_seconds=forward_s,
        build_device=str(device), build_batch_size=batch_size,
        replay_views_sha256=dataset.views_sha256 if replay else None)
    log(f'Built in {build_s:.1f} s ({forward_s:.1f} s teacher forward), '
        f'{total_views / build_s:.1f} views/s.')
    return index


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    build_store(cfg, args.out, args.batch_size, args.num_samples,
                args.device, epochs=args.epochs, topk=args.topk,
                num_workers=args.num_workers, gpus=args.gpus)


if __name__ == '__main__':
    main()
