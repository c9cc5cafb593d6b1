"""What running the teacher under autocast / channels_last does to its logits.

Builds a distiller from a config (the teacher with its checkpoint), feeds
it batches from the config's validation set (or random images with
``--random``), and compares the teacher's class logits of each setting
against float32: max abs difference, top-1 (classification) or pixel
(segmentation) agreement of the argmax, and the time of one teacher forward,
measured in one run::

    python tools/teacher_precision.py CONFIG [--batches 4] [--device cpu]
        [--cfg-options model.teacher_ckpt=...]

The settings are the distiller's ``teacher_autocast`` ('bf16', 'fp16') and
``teacher_channels_last`` options. fp16 autocast is measured on CUDA only.
"""
import argparse
import copy
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

import mmrankkd  # noqa: F401
from mmrankkd.registry import MODELS


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--batches', type=int, default=4)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed forwards per batch (best taken)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args()


def settings(device: str):
    yield 'fp32', None, False
    yield 'fp32 + channels_last', None, True
    yield 'bf16 autocast', 'bf16', False
    yield 'bf16 autocast + channels_last', 'bf16', True
    if device.startswith('cuda'):
        yield 'fp16 autocast', 'fp16', False
        yield 'fp16 autocast + channels_last', 'fp16', True


def timed(fn, repeats, device):
    best = float('inf')
    for _ in range(repeats):
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return out, best


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    model_cfg = copy.deepcopy(cfg.model)
    if 'data_preprocessor' not in model_cfg and cfg.get('data_preprocessor'):
        model_cfg['data_preprocessor'] = cfg.data_preprocessor
    loader_cfg = copy.deepcopy(cfg.val_dataloader)
    loader_cfg['batch_size'] = loader_cfg.get('batch_size', 1)
    loader = Runner.build_dataloader(loader_cfg)
    batches = []
    for i, data in enumerate(loader):
        if i == args.batches:
            break
        batches.append(data)
    rows, reference = [], None
    for name, autocast, channels_last in settings(args.device):
        cfg_i = dict(model_cfg, teacher_autocast=autocast,
                     teacher_channels_last=channels_last)
        model = MODELS.build(cfg_i).to(args.device).eval()
        logits, seconds = [], 0.
        for data in batches:
            batch = model.data_preprocessor(copy.deepcopy(data), False)
            out, sec = timed(
                lambda: model.teacher_logits(batch['inputs'],
                                             batch['data_samples']),
                args.repeats, args.device)
            logits.append(out.float().cpu())
            seconds += sec
        if reference is None:
            reference = logits
        diff = max((a - b).abs().max().item()
                   for a, b in zip(logits, reference))
        agree = sum((a.argmax(1) == b.argmax(1)).float().sum().item()
                    for a, b in zip(logits, reference)) / sum(
                        a.argmax(1).numel() for a in logits)
        rows.append((name, diff, 100 * agree, 1e3 * seconds / len(batches)))
    print(f'teacher logits vs fp32 ({args.device}, {len(batches)} batches of '
          f'{loader_cfg["batch_size"]})')
    print(f'{"setting":<32}{"max |diff|":>12}{"agree %":>10}{"ms/batch":>10}')
    for name, diff, agree, ms in rows:
        print(f'{name:<32}{diff:>12.4g}{agree:>10.2f}{ms:>10.1f}')


if __name__ == '__main__':
    main()
