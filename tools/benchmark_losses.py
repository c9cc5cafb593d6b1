"""Time and peak memory of every mmrankkd loss, forward + backward.

For each loss and each logits shape (CIFAR-100 128x100, ImageNet 256x1000,
Cityscapes decode-head 8x19x64x128) it measures one forward + backward:

* time: median wall time over ``--repeats`` runs after one warm-up run;
* peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the
  memory in use before the call; on CPU, the running sum of the allocation
  and free events that ``torch.profiler`` records (``profile_memory=True``)
  during the call, in a separate, untimed run. Both count everything the
  call allocates, the student's gradient included, and nothing allocated
  before it (the logits themselves).

Ratios: against the naive pairwise reference for the two O(C^2) losses
(KendallRankLoss, CorrelationMatchingLoss: the same loss with plain autograd
over the full pairwise tensor), and against one training step of a student
on the batch the logits come from (ResNet-18 CIFAR variant 128x3x32x32,
ResNet-18 256x3x224x224, PSPNet-R18-D8 8x3x512x1024: forward, cross-entropy,
backward; no optimizer step). With ``--quick`` the student steps run on a
smaller batch (and, for PSPNet, a smaller crop) and are scaled linearly to
the full batch/pixel count; the output says so.

Example::

    python tools/benchmark_losses.py --device cpu --quick --out bench.md
"""
import argparse
import contextlib
import platform
import statistics
import time
from unittest import mock

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmrankkd.models.losses import correlation_matching, kendall_rank
from mmrankkd.utils.memory import peak_extra_bytes
from mmrankkd.models.losses.pairwise import (naive_pairwise_sign_agreement,
                                             naive_soft_rank)

SHAPES = {
    'CIFAR-100': (128, 100),
    'ImageNet': (256, 1000),
    'Cityscapes': (8, 19, 64, 128),
}
LOSSES = {
    'KDLoss': dict(type='KDLoss', temperature=4.0),
    'DISTLoss': dict(type='DISTLoss'),
    'CWDLoss': dict(type='CWDLoss', temperature=1.0),
    'DKDLoss': dict(type='DKDLoss'),
    'BalanceDivergenceLoss': dict(type='BalanceDivergenceLoss',
                                  forward_temperature=4.0,
                                  reverse_temperature=4.0),
    'BalanceDivergenceLoss(channel)': dict(type='BalanceDivergenceLoss',
                                           mode='channel'),
    'PlackettLuceLoss': dict(type='PlackettLuceLoss'),
    'KendallRankLoss': dict(type='KendallRankLoss'),
    'CorrelationMatchingLoss': dict(type='CorrelationMatchingLoss'),
}
PAIRWISE = ('KendallRankLoss', 'CorrelationMatchingLoss')


@contextlib.contextmanager
def naive_kernels():
    """Swap the memory-bounded kernels for the plain-autograd references."""

    def naive_agreement(student, teacher, first=None, surrogate='tanh',
                        steepness=1.0, smooth_teacher=False,
                        max_elements=None):
        return naive_pairwise_sign_agreement(student, teacher, first,
                                             surrogate, steepness,
                                             smooth_teacher)

    def naive_rank(x, eps=1.0, max_elements=None):
        return naive_soft_rank(x, eps)

    with mock.patch.object(kendall_rank, 'pairwise_sign_agreement',
                           naive_agreement), \
            mock.patch.object(correlation_matching, 'soft_rank', naive_rank):
        yield


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_call(fn, device, repeats):
    fn()  # warm-up
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


MEMORY_METHOD = {
    'cuda': 'torch.cuda.max_memory_allocated above the allocation before '
            'the call',
    'cpu': 'torch.profiler memory events (profile_memory=True): peak of '
           'allocated minus freed bytes during the call, separate untimed run',
}


def make_inputs(shape, device):
    gen = torch.Generator().manual_seed(0)
    student = (torch.randn(shape, generator=gen) * 3).to(device)
    teacher = (torch.randn(shape, generator=gen) * 3).to(device)
    label_shape = (shape[0], ) + tuple(shape[2:])
    labels = torch.randint(0, shape[1], label_shape, generator=gen)
    return student.requires_grad_(), teacher, labels.to(device)


def loss_step(loss_fn, student, teacher, labels):

    def step():
        student.grad = None
        loss_fn(student, teacher, labels).backward()

    return step


class Classifier(nn.Module):

    def __init__(self, backbone, channels, num_classes):
        super().__init__()
        self.backbone = backbone
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        feat = self.backbone(x)[-1]
        return self.fc(F.adaptive_avg_pool2d(feat, 1).flatten(1))


class PSPNet(nn.Module):
    """PSPNet-R18-D8 as in mmseg's pspnet_r18-d8 config (BN instead of
    SyncBN), decode + auxiliary head."""

    def __init__(self):
        super().__init__()
        from mmseg.models.backbones import ResNetV1c
        from mmseg.models.decode_heads import FCNHead, PSPHead
        norm = dict(type='BN', requires_grad=True)
        self.backbone = ResNetV1c(depth=18, num_stages=4,
                                  out_indices=(0, 1, 2, 3),
                                  dilations=(1, 1, 2, 4),
                                  strides=(1, 2, 1, 1), norm_cfg=norm,
                                  contract_dilation=True)
        self.decode_head = PSPHead(in_channels=512, in_index=3, channels=128,
                                   pool_scales=(1, 2, 3, 6),
                                   dropout_ratio=0.1, num_classes=19,
                                   norm_cfg=norm, align_corners=False)
        self.auxiliary_head = FCNHead(in_channels=256, in_index=2,
                                      channels=64, num_convs=1,
                                      concat_input=False, dropout_ratio=0.1,
                                      num_classes=19, norm_cfg=norm,
                                      align_corners=False)

    def forward(self, x):
        feats = self.backbone(x)
        return self.decode_head(feats), self.auxiliary_head(feats)


def student_models():
    from mmpretrain.models import ResNet, ResNet_CIFAR
    return {
        'CIFAR-100': ('ResNet-18 (CIFAR)', lambda: Classifier(
            ResNet_CIFAR(depth=18), 512, 100), (128, 3, 32, 32)),
        'ImageNet': ('ResNet-18', lambda: Classifier(ResNet(depth=18), 512,
                                                     1000),
                     (256, 3, 224, 224)),
        'Cityscapes': ('PSPNet-R18-D8', PSPNet, (8, 3, 512, 1024)),
    }


QUICK_BATCH = {
    'CIFAR-100': (32, 3, 32, 32),
    'ImageNet': (8, 3, 224, 224),
    'Cityscapes': (2, 3, 256, 512),  # BN in the 1x1 pool branch needs 2
}


def student_step_cost(name, device, quick, repeats):
    """(label, time s, peak bytes, scale note) of one student step."""
    label, build, full = student_models()[name]
    batch = QUICK_BATCH[name] if quick else full
    scale = (full[0] * full[2] * full[3]) / (batch[0] * batch[2] * batch[3])
    model = build().to(device).train()
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, generator=gen).to(device)
    if name == 'Cityscapes':
        labels = torch.randint(0, 19, (batch[0], ) + batch[2:],
                               generator=gen).to(device)
    else:
        labels = torch.randint(0, SHAPES[name][1], (batch[0], ),
                               generator=gen).to(device)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(images)
        if name == 'Cityscapes':
            decode, aux = (F.interpolate(o, size=batch[2:], mode='bilinear',
                                         align_corners=False) for o in out)
            loss = F.cross_entropy(decode, labels) + 0.4 * F.cross_entropy(
                aux, labels)
        else:
            loss = F.cross_entropy(out, labels)
        loss.backward()

    seconds = time_call(step, device, repeats)
    peak = peak_extra_bytes(step, device)
    note = 'x'.join(map(str, batch))
    if scale != 1:
        note += f', scaled x{scale:g}'
    return label, seconds * scale, peak * scale, note


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--quick', action='store_true',
                        help='student steps on smaller batches, scaled '
                        'linearly to the full batch')
    parser.add_argument('--shapes', nargs='+', default=list(SHAPES),
                        choices=list(SHAPES))
    parser.add_argument('--losses', nargs='+', default=list(LOSSES),
                        choices=list(LOSSES))
    parser.add_argument('--no-student', action='store_true',
                        help='skip the student-step comparison')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--out', help='also write the markdown here')
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from mmrankkd.registry import MODELS

    if device.type == 'cuda':
        machine = torch.cuda.get_device_name(device)
    else:
        machine = (f'{platform.processor() or platform.machine()}, '
                   f'{torch.get_num_threads()} threads')
    lines = [
        f'Device: {device} ({machine}); torch {torch.__version__}; '
        f'{args.repeats} timed repeats after 1 warm-up (median).'
        + (' Student steps on reduced batches (--quick), scaled linearly '
           'to the full batch.' if args.quick else ''),
        f'Peak extra memory: {MEMORY_METHOD[device.type]}.',
        'x logits: peak extra memory / size of the student logits. '
        'vs naive: this loss / the same loss with plain autograd over the '
        'full (R, C, C) pairwise tensor. vs student step: this loss / one '
        'student forward+CE+backward on the batch the logits come from.',
    ]
    rows = []
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        student_cost = None
        if not args.no_student:
            student_cost = student_step_cost(shape_name, device, args.quick,
                                             args.repeats)
            label, seconds, peak, note = student_cost
            lines.append(f'Student step for {shape_name}: {label}, '
                         f'{seconds * 1e3:.0f} ms, peak '
                         f'{peak / 2**20:.0f} MB (measured on {note}).')
        for loss_name in args.losses:
            if loss_name in ('CWDLoss', 'BalanceDivergenceLoss(channel)') \
                    and len(shape) == 2:
                continue  # channel-wise losses need (N, C, H, W)
            loss_fn = MODELS.build(LOSSES[loss_name])
            student, teacher, labels = make_inputs(shape, device)
            logits_bytes = student.numel() * student.element_size()
            step = loss_step(loss_fn, student, teacher, labels)
            seconds = time_call(step, device, args.repeats)
            peak = peak_extra_bytes(step, device)
            row = dict(loss=loss_name, shape='x'.join(map(str, shape)),
                       ms=seconds * 1e3, mb=peak / 2**20,
                       x_logits=peak / logits_bytes)
            if loss_name in PAIRWISE:
                with naive_kernels():
                    naive_seconds = time_call(step, device, args.repeats)
                    naive_peak = peak_extra_bytes(step, device)
                row.update(naive_ms=naive_seconds * 1e3,
                           naive_mb=naive_peak / 2**20,
                           time_vs_naive=seconds / naive_seconds,
                           mem_vs_naive=peak / naive_peak)
            if student_cost is not None:
                row.update(time_vs_student=seconds / student_cost[1],
                           mem_vs_student=peak / student_cost[2])
            rows.append(row)
            print(row, flush=True)

    def fmt(row, key, spec):
        return format(row[key], spec) if key in row else '-'

    table = [
        '| loss | logits | fwd+bwd ms | peak extra MB | x logits | '
        'naive ms | naive MB | time vs naive | mem vs naive | '
        'time vs student step | mem vs student step |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ]
    for row in rows:
        table.append(
            f"| {row['loss']} | {row['shape']} | {fmt(row, 'ms', '.1f')} | "
            f"{fmt(row, 'mb', '.1f')} | {fmt(row, 'x_logits', '.1f')} | "
            f"{fmt(row, 'naive_ms', '.1f')} | {fmt(row, 'naive_mb', '.1f')} "
            f"| {fmt(row, 'time_vs_naive', '.2f')} | "
            f"{fmt(row, 'mem_vs_naive', '.3f')} | "
            f"{fmt(row, 'time_vs_student', '.3f')} | "
            f"{fmt(row, 'mem_vs_student', '.3f')} |")
    text = '\n\n'.join(['\n'.join(f'- {line}' for line in lines),
                        '\n'.join(table)]) + '\n'
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    main()
