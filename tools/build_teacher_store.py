# Build a teacher-logit store: run a distillation config's teacher once on
# every view of every training image and write its float32 class logits.
#
#   python tools/build_teacher_store.py CONFIG --out DIR [--batch-size 256]
#       [--num-samples N] [--device cuda] [--cfg-options ...]
#   python tools/train.py CONFIG --cfg-options model.teacher_store=DIR
#
# The training pipeline must make finitely many views and say which
# (mmrankkd.ViewRandomCrop / mmrankkd.ViewRandomFlip, PackInputs with
# 'sample_idx' and 'teacher_view' in meta_keys): docs/teacher_store.md.
import argparse
import copy
import os.path as osp
import sys
import time

import numpy as np
import torch
from mmengine.config import Config, DictAction
from mmengine.dataset import pseudo_collate

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import mmrankkd  # noqa: E402,F401  (registers modules)
from mmrankkd.datasets.transforms import (VIEW_KEY,  # noqa: E402
                                          apply_pipeline_view,
                                          pipeline_view_counts)
from mmrankkd.models.distillers.teacher_store import (  # noqa: E402
    TeacherStoreWriter, check_storable, dataset_record, pipeline_record,
    teacher_identity)

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
            'random steps (finitely many views); continuous augmentations '
            'need replay mode (docs/teacher_store.md).')


def build_store(cfg: Config, out: str, batch_size: int = 256,
                num_samples=None, device=None, log=print) -> dict:
    """Build the store of ``cfg``'s teacher and training pipeline in
    ``out``; returns its index (with ``build_seconds``)."""
    from mmengine.registry import DATASETS, init_default_scope
    from mmrankkd.registry import MODELS
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('teacher_store', None)
    distiller = MODELS.build(model_cfg).to(device)
    check_storable(distiller)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset = DATASETS.build(copy.deepcopy(dataset_cfg))
    transforms = dataset.pipeline.transforms
    _check_pipeline(transforms)
    total = len(dataset)
    n = total if num_samples is None else min(int(num_samples), total)
    counts = pipeline_view_counts(transforms, dataset.get_data_info(0))
    if not counts:
        raise ValueError('The training pipeline has no view transform '
                         '(mmrankkd.ViewRandomCrop / ViewRandomFlip).')
    num_views = int(np.prod(counts))
    writer = TeacherStoreWriter(out, n, counts, distiller.num_classes)
    log(f'Teacher store {out}: {n} of {total} samples x {num_views} views '
        f'({" x ".join(map(str, counts))}) x {distiller.num_classes} '
        f'classes, {n * num_views * distiller.num_classes * 4 / 1e9:.3f} GB')
    start = time.perf_counter()
    total_views = n * num_views
    infos = {}
    forward_s = 0.0
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
                    raise ValueError(f'Sample {i} has {got} views, sample 0 '
                                     f'{counts}: images differ in size.')
            packed.append(apply_pipeline_view(transforms, infos[i], v,
                                              counts))
        data = distiller.data_preprocessor(pseudo_collate(packed), True)
        for (i, v), ds in zip(chunk, data['data_samples']):
            meta = ds.metainfo
            if meta.get('sample_idx') != i or VIEW_KEY not in meta:
                raise ValueError(
                    'The packed samples lack sample_idx / teacher_view. Fix:'
                    " PackInputs(meta_keys=(..., 'sample_idx', "
                    f"'{VIEW_KEY}')).")
        t0 = time.perf_counter()
        logits = distiller.teacher_source.logits(data['inputs'],
                                                 data['data_samples'])
        forward_s += time.perf_counter() - t0
        labels = np.asarray([int(ds.gt_label.reshape(-1)[0])
                             for ds in data['data_samples']])
        writer.write(np.asarray([i for i, _ in chunk]),
                     np.asarray([v for _, v in chunk]), logits, labels)
        if (b // batch_size) % 50 == 0:
            log(f'  {b + len(chunk)}/{total_views} views, '
                f'{time.perf_counter() - start:.1f} s')
    build_s = time.perf_counter() - start
    index = writer.close(
        **teacher_identity(distiller),
        pipeline=pipeline_record(dataset_cfg.get('pipeline', [])),
        dataset=dataset_record(dataset_cfg), dataset_len=total,
        build_seconds=build_s, teacher_forward_seconds=forward_s,
        build_device=str(device), build_batch_size=batch_size)
    log(f'Built in {build_s:.1f} s ({forward_s:.1f} s teacher forward), '
        f'{total_views / build_s:.1f} views/s.')
    return index


def main(argv=None):
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    build_store(cfg, args.out, args.batch_size, args.num_samples,
                args.device)


if __name__ == '__main__':
    main()
