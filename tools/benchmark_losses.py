"""Time, launches and peak memory of every mmrankkd loss, forward + backward.

Table 1, per loss and per-GPU logits shape (ImageNet 32x1000 and 256x1000,
CIFAR-100 64x100 and 128x100, Cityscapes decode head 2x19x64x128 and
8x19x64x128), one forward + backward of one call:

* ms: the fastest of ``--repeats`` runs (more for calls under 10 ms) after
  one warm-up run (the first call also reads the losses' value checks;
  later ones do not); a loss and its naive/peer reference are timed
  interleaved, run by run;
* aten ops: top-level aten operators dispatched (torch.profiler; each is at
  least one kernel launch on a GPU);
* peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` above the
  memory in use before the call; on CPU, the running sum of torch.profiler's
  allocation/free events, in a separate untimed run;
* vs naive (Kendall, CMKD): this loss / the same loss with plain autograd
  over the full (R, C, C) pairwise tensor;
* vs peer (KD, DKD, DIST, CWD, TTM, WTTM, CTKD, KD and DKD with logit
  standardization): this loss / a plain transcription, written here, of
  the authors' / toolbox formula: mdistiller's ``kd_loss`` and
  ``dkd_loss``, DIST_KD's ``DIST`` (= mmrazor's ``DISTLoss``), mmrazor's
  ``ChannelWiseDivergence``, zkxufo/TTM's ``TTM``/``WTTM``, CTKD's
  ``Global_T`` + ``DistillKL``, logit-standardization-KD's ``kd_loss``/
  ``dkd_loss`` with ``normalize``, measured in the same run: the ratio of
  the medians of at least 20 interleaved runs (peer ms: its fastest run);
  dense logits go to the row-wise peers as pixel rows, as their
  segmentation code does;
* vs student step: this loss / one training step (forward, cross-entropy,
  backward) of a student on the batch the logits come from (ResNet-18 CIFAR
  variant, ResNet-18, PSPNet-R18-D8 at 512x1024). With ``--quick`` the
  student steps run on a smaller batch (PSPNet: 256x512 crops) and are
  scaled linearly to the full batch/pixel count.

Table 2, per loss and model pair built from the repository's configs with
random weights (the quick-start PSPNet pair, configs/quickstart/, and the
CIFAR-100 resnet32x4 -> resnet8x4 pair): one ``LogitDistiller.train_step``
against (the student's own ``train_step`` + a no-grad teacher forward) on
the same batch, and the loss's forward + backward alone on the student's
logits against the student step. The distiller is only used through
``MODELS.build(cfg.model)`` and ``train_step``; a pair or loss that fails
to build or run is reported as such and the rest goes on.

Example::

    python tools/benchmark_losses.py --device cpu --quick --threads 1 \\
        --out bench.md
"""
import argparse
import contextlib
import copy
import os
import os.path as osp
import platform
import sys
import tempfile
import time
import traceback
from unittest import mock

import torch
import torch.nn as nn
import torch.nn.functional as F

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tests'))
from loss_profiling import peak_extra_bytes, top_level_aten_ops  # noqa: E402


def import_mmrankkd():
    """Import mmrankkd; where the full package cannot be imported (no
    mmcv/mmseg/mmpretrain/OpenCV, as on a bare GPU machine with torch and
    mmengine only), import just its losses (which need torch and
    mmengine) and say so. Returns whether the full package loaded."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    try:
        import mmrankkd  # noqa: F401
        return True
    except ImportError as error:
        reason = f'{type(error).__name__}: {error}'
    import types
    for name in [n for n in sys.modules if n.split('.')[0] == 'mmrankkd']:
        del sys.modules[name]
    for name in ('mmrankkd', 'mmrankkd.models'):
        module = types.ModuleType(name)
        module.__path__ = [osp.join(REPO, *name.split('.'))]
        sys.modules[name] = module
    import mmrankkd.models.losses  # noqa: F401
    print(f'[mmrankkd] the full package does not import ({reason}); '
          'loaded only mmrankkd.models.losses (torch + mmengine).',
          flush=True)
    return False


def importable(*names):
    """Whether every module in ``names`` imports."""
    import importlib
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:
            return False
    return True

SHAPES = {
    'ImageNet/32': (32, 1000),
    'ImageNet/256': (256, 1000),
    'CIFAR-100/64': (64, 100),
    'CIFAR-100/128': (128, 100),
    'Cityscapes/2': (2, 19, 64, 128),
    'Cityscapes/8': (8, 19, 64, 128),
}
LOSSES = {
    'KDLoss': dict(type='mmrankkd.KDLoss', temperature=4.0),
    'DISTLoss': dict(type='mmrankkd.DISTLoss'),
    'CWDLoss': dict(type='mmrankkd.CWDLoss', temperature=1.0),
    'DKDLoss': dict(type='mmrankkd.DKDLoss'),
    'BalanceDivergenceLoss': dict(type='mmrankkd.BalanceDivergenceLoss',
                                  forward_temperature=4.0,
                                  reverse_temperature=4.0),
    'BalanceDivergenceLoss(channel)': dict(
        type='mmrankkd.BalanceDivergenceLoss', mode='channel'),
    'PlackettLuceLoss': dict(type='mmrankkd.PlackettLuceLoss'),
    'KendallRankLoss': dict(type='mmrankkd.KendallRankLoss'),
    'CorrelationMatchingLoss': dict(type='mmrankkd.CorrelationMatchingLoss'),
    'MLKDLoss': dict(type='mmrankkd.MLKDLoss', loss_weight=0.9),
    'DeiTDistillationLoss': dict(type='mmrankkd.DeiTDistillationLoss'),
    'DeiTDistillationLoss(soft)': dict(type='mmrankkd.DeiTDistillationLoss',
                                       mode='soft'),
    'WTTMLoss': dict(type='mmrankkd.WTTMLoss', gamma=0.1),
    'TTMLoss': dict(type='mmrankkd.TTMLoss', gamma=0.1),
    'CTKDLoss': dict(type='mmrankkd.CTKDLoss', grl_lambda=-1.0),
    'KDLoss(ls)': dict(type='mmrankkd.KDLoss', temperature=2.0,
                       logit_standardization=True),
    'DKDLoss(ls)': dict(type='mmrankkd.DKDLoss', alpha=9.0, beta=72.0,
                        temperature=2.0, logit_standardization=True),
}
CHANNEL_WISE = ('CWDLoss', 'BalanceDivergenceLoss(channel)')
# Losses on two views, (N, C) only: the strong view's logits here are the
# batch's logits in reverse row order (a second batch of the same size);
# table 2 needs a two-view pipeline and leaves them out.
TWO_VIEW = ('MLKDLoss', )
PAIRWISE = ('KendallRankLoss', 'CorrelationMatchingLoss')
MEMORY_METHOD = {
    'cuda': 'torch.cuda.max_memory_allocated above the allocation before '
    'the call',
    'cpu': 'torch.profiler memory events (profile_memory=True): peak of '
    'allocated minus freed bytes during the call, separate untimed run',
}


# --------------------------------------------------------------------------
# Peer formulations: plain transcriptions of the formulas as the authors'
# code / mmrazor compute them (not imported from those projects).
def _rows(x):
    if x.dim() == 2:
        return x
    return x.permute(0, 2, 3, 1).reshape(-1, x.size(1))  # (n, h, w) rows


def peer_kd(student, teacher, labels, temperature=4.0):
    """mdistiller ``kd_loss``."""
    student, teacher = _rows(student), _rows(teacher)
    log_pred_student = F.log_softmax(student / temperature, dim=1)
    pred_teacher = F.softmax(teacher / temperature, dim=1)
    loss = F.kl_div(log_pred_student, pred_teacher,
                    reduction='none').sum(1).mean()
    return loss * temperature**2


def peer_dkd(student, teacher, labels, alpha=1.0, beta=8.0, temperature=4.0):
    """mdistiller ``dkd_loss`` (gt/other masks by scatter, probability
    sums, the non-target softmax by subtracting 1000 at the target)."""
    student, teacher = _rows(student), _rows(teacher)
    target = labels.reshape(-1)
    gt_mask = torch.zeros_like(student).scatter_(1, target.unsqueeze(1),
                                                 1).bool()
    other_mask = torch.ones_like(student).scatter_(1, target.unsqueeze(1),
                                                   0).bool()
    pred_student = F.softmax(student / temperature, dim=1)
    pred_teacher = F.softmax(teacher / temperature, dim=1)

    def cat_mask(t):
        return torch.cat([(t * gt_mask).sum(1, keepdim=True),
                          (t * other_mask).sum(1, keepdim=True)], dim=1)

    pred_student, pred_teacher = cat_mask(pred_student), cat_mask(
        pred_teacher)
    tckd = F.kl_div(torch.log(pred_student), pred_teacher,
                    reduction='sum') * temperature**2 / target.shape[0]
    pred_teacher_part2 = F.softmax(teacher / temperature - 1000.0 * gt_mask,
                                   dim=1)
    log_pred_student_part2 = F.log_softmax(
        student / temperature - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_pred_student_part2, pred_teacher_part2,
                    reduction='sum') * temperature**2 / target.shape[0]
    return alpha * tckd + beta * nckd


def peer_dist(student, teacher, labels, beta=1.0, gamma=1.0, tau=1.0):
    """DIST_KD ``DIST`` / mmrazor ``DISTLoss``."""
    student, teacher = _rows(student), _rows(teacher)

    def pearson(a, b, eps=1e-8):
        a = a - a.mean(1).unsqueeze(1)
        b = b - b.mean(1).unsqueeze(1)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    y_s = (student / tau).softmax(dim=1)
    y_t = (teacher / tau).softmax(dim=1)
    inter = 1 - pearson(y_s, y_t).mean()
    intra = 1 - pearson(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean()
    return tau**2 * (beta * inter + gamma * intra)


def peer_cwd(student, teacher, labels, tau=1.0):
    """mmrazor ``ChannelWiseDivergence``."""
    n, c, h, w = student.shape
    softmax_t = F.softmax(teacher.reshape(-1, h * w) / tau, dim=1)
    loss = torch.sum(
        softmax_t * F.log_softmax(teacher.reshape(-1, h * w) / tau, dim=1) -
        softmax_t * F.log_softmax(student.reshape(-1, h * w) / tau, dim=1))
    return loss * tau**2 / (c * n)


def _strong(x):
    """The benchmark's strong view of a batch (see TWO_VIEW)."""
    return x.flip(0)


def two_views(loss_fn):
    """A two-view loss called as ``(student, teacher, labels)``."""

    def call(student, teacher, labels):
        return loss_fn(student, teacher, _strong(student), _strong(teacher))

    return call


def peer_mlkd(student, teacher, labels, temperature=4.0, kd_weight=0.9):
    """The MLKD authors' KD_ours.forward_train, distillation terms (masks
    from numpy percentiles, one kd/cc/bc call per temperature)."""
    import numpy as np
    s_w, t_w, s_s, t_s = student, teacher, _strong(student), _strong(teacher)

    def kd(s, t, temp):
        return F.kl_div(F.log_softmax(s / temp, dim=1),
                        F.softmax(t / temp, dim=1),
                        reduction='none').sum(1).mean() * temp**2

    def gram(s, t, temp, classes):
        p_s, p_t = F.softmax(s / temp, dim=1), F.softmax(t / temp, dim=1)
        if classes:
            gap = p_t.t() @ p_t - p_s.t() @ p_s
            return (gap**2).sum() / s.size(1)
        gap = p_t @ p_t.t() - p_s @ p_s.t()
        return (gap**2).sum() / s.size(0)

    prob = F.softmax(t_w, dim=1)
    conf = prob.max(1)[0]
    mask = conf.le(float(np.percentile(conf.cpu().numpy(), 50)))
    cls_conf = prob.sum(0)
    cmask = cls_conf.le(float(np.percentile(cls_conf.cpu().numpy(), 50)))
    temps = (temperature, 3.0, 5.0, 2.0, 6.0)
    loss = 0.
    for i, temp in enumerate(temps):
        loss = loss + (kd(s_w, t_w, temp) * mask).mean()
        loss = loss + (kd(s_s, t_s, temp) if i < 3 else kd(s_w, t_w, temp))
        loss = loss + (gram(s_w, t_w, temp, True) * cmask).mean()
        loss = loss + (gram(s_w, t_w, temp, False) * mask).mean()
    return kd_weight * loss


def peer_deit(student, teacher, labels, mode='hard', tau=1.0):
    """DeiT ``DistillationLoss``: its distillation term."""
    student, teacher = _rows(student), _rows(teacher)
    if mode == 'soft':
        return F.kl_div(F.log_softmax(student / tau, dim=1),
                        F.log_softmax(teacher / tau, dim=1),
                        reduction='sum', log_target=True) * (
                            tau * tau) / student.numel()
    return F.cross_entropy(student, teacher.argmax(dim=1))


def peer_ttm(student, teacher, labels, gamma=0.1, weighted=False):
    """zkxufo/TTM ``TTM`` / ``WTTM`` (``weighted``)."""
    student, teacher = _rows(student), _rows(teacher)
    p_s = F.log_softmax(student, dim=1)
    p_t = torch.pow(torch.softmax(teacher, dim=1), gamma)
    norm = torch.sum(p_t, dim=1)
    p_t = p_t / norm.unsqueeze(1)
    kl = torch.sum(F.kl_div(p_s, p_t, reduction='none'), dim=1)
    return torch.mean(norm * kl) if weighted else torch.mean(kl)


class _PeerGRL(torch.autograd.Function):
    """CTKD ``GradientReversalFunction``."""

    @staticmethod
    def forward(ctx, x, lambda_):
        ctx.lambda_ = lambda_
        return x.clone()

    @staticmethod
    def backward(ctx, grads):
        return grads.new_tensor(ctx.lambda_) * grads, None


_PEER_THETA = {}


def peer_ctkd(student, teacher, labels, lambda_=-1.0):
    """CTKD ``Global_T`` (+ ``1 + 20 sigmoid``) and ``DistillKL``."""
    student, teacher = _rows(student), _rows(teacher)
    key = (student.device, student.dtype)
    if key not in _PEER_THETA:
        _PEER_THETA[key] = torch.ones(1, device=student.device,
                                      requires_grad=True)
    temp = 1 + 20 * torch.sigmoid(_PeerGRL.apply(_PEER_THETA[key], lambda_))
    return nn.KLDivLoss(reduction='batchmean')(
        F.log_softmax(student / temp, dim=1),
        F.softmax(teacher / temp, dim=1)) * temp * temp


def _normalize(logit):
    """logit-standardization-KD ``normalize`` (classes last)."""
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def peer_kd_ls(student, teacher, labels):
    """logit-standardization-KD ``kd_loss`` with logit_stand, T=2."""
    student, teacher = _rows(student), _rows(teacher)
    return peer_kd(_normalize(student), _normalize(teacher), labels, 2.0)


def peer_dkd_ls(student, teacher, labels):
    """logit-standardization-KD ``dkd_loss`` with logit_stand."""
    student, teacher = _rows(student), _rows(teacher)
    return peer_dkd(_normalize(student), _normalize(teacher), labels, 9.0,
                    72.0, 2.0)


PEERS = {
    'MLKDLoss': ('MLKD KD_ours', peer_mlkd),
    'DeiTDistillationLoss': ('DeiT DistillationLoss', peer_deit),
    'DeiTDistillationLoss(soft)': (
        'DeiT DistillationLoss', lambda s, t, y: peer_deit(s, t, y, 'soft')),
    'WTTMLoss': ('TTM repo WTTM',
                 lambda s, t, y: peer_ttm(s, t, y, weighted=True)),
    'TTMLoss': ('TTM repo TTM', peer_ttm),
    'CTKDLoss': ('CTKD Global_T + KD', peer_ctkd),
    'KDLoss(ls)': ('LS repo KD', peer_kd_ls),
    'DKDLoss(ls)': ('LS repo DKD', peer_dkd_ls),
    'KDLoss': ('mdistiller KD', peer_kd),
    'DKDLoss': ('mdistiller DKD', peer_dkd),
    'DISTLoss': ('DIST_KD DIST', peer_dist),
    'CWDLoss': ('mmrazor CWD', peer_cwd),
}


# --------------------------------------------------------------------------
@contextlib.contextmanager
def naive_kernels():
    """The pairwise losses with plain autograd over full (R, C, C)
    tensors."""
    from mmrankkd.models.losses import correlation_matching, kendall_rank
    from mmrankkd.models.losses.pairwise import (
        hard_rank, naive_pairwise_sign_agreement, naive_soft_rank)

    def naive_agreement(student, teacher, topk=None, surrogate='tanh',
                        steepness=1.0, smooth_teacher=False, **_):
        return naive_pairwise_sign_agreement(student, teacher, topk,
                                             surrogate, steepness,
                                             smooth_teacher)

    def naive_cmkd(student, teacher, temperature, rank_eps, weighting,
                   pearson_weight, spearman_weight, weights, block_bytes,
                   eps=1e-8, **_):

        def pearson(a, b):
            a = a - a.mean(1, keepdim=True)
            b = b - b.mean(1, keepdim=True)
            return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

        p_s = F.softmax(student / temperature, 1)
        log_p_t = F.log_softmax(teacher / temperature, 1)
        p_t = log_p_t.exp()
        pearson_loss = 1 - pearson(p_s, p_t)
        spearman_loss = 1 - pearson(naive_soft_rank(student, rank_eps),
                                    hard_rank(teacher))
        share = (-(p_t * log_p_t).sum(1) / torch.log(
            torch.tensor(float(student.size(1))))).clamp(0, 1)
        rows = (1 - share) * pearson_loss + share * spearman_loss
        weights = torch.as_tensor(weights, dtype=rows.dtype).reshape(-1)
        return temperature**2 * (rows * weights).sum() if weights.numel() \
            > 1 else temperature**2 * rows.sum() * weights

    with mock.patch.object(kendall_rank, 'pairwise_sign_agreement',
                           naive_agreement), \
            mock.patch.object(correlation_matching, 'correlation_matching',
                              naive_cmkd):
        yield


def synchronize(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_runs(fns, device, repeats):
    """``repeats`` timed runs of each function after one warm-up run, the
    functions interleaved run by run: a list of run times per function.
    Calls that take under 10 ms get more runs (up to 0.2 s of them, at most
    100): a sub-millisecond time is noisy; calls over 2 s (the naive
    references at ImageNet scale) get one (their noise is small beside the
    differences they show)."""
    start = time.perf_counter()
    for fn in fns:
        fn()  # warm-up (a loss's first call also reads its value checks)
    synchronize(device)
    warm_up = time.perf_counter() - start
    if warm_up < 0.01 * len(fns):
        repeats = max(repeats, min(100, int(0.2 / max(warm_up, 1e-4))))
    elif warm_up > 2.0 * len(fns):
        repeats = 1
    runs = [[] for _ in fns]
    for _ in range(repeats):
        for index, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            synchronize(device)
            runs[index].append(time.perf_counter() - start)
    return runs


def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (
        values[middle - 1] + values[middle]) / 2


def median_ratio(fns, device, repeats):
    """(fastest run of fns[0], fastest of fns[1], median of fns[0] / median
    of fns[1]) over at least 20 interleaved runs. The ratio of medians: a
    run that page-faults (CPU: glibc may hand a large allocation fresh pages
    from the OS, depending on the heap's state) counts as often as it
    happens, where the fastest run would hide it."""
    first, second = time_runs(fns, device, max(repeats, 20))
    return min(first), min(second), median(first) / median(second)


def time_calls(fns, device, repeats):
    """Fastest of ``repeats`` interleaved runs of each function (on a
    shared machine, interference only ever adds time, and hits all of them
    alike)."""
    return [min(runs) for runs in time_runs(fns, device, repeats)]


def time_call(fn, device, repeats):
    return time_calls([fn], device, repeats)[0]


def _patched(fn, context):
    """``fn`` run inside ``context()``."""

    def run():
        with context():
            fn()

    return run


def make_inputs(shape, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
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


# --------------------------------------------------------------------------
# Student steps for table 1 (models written out, random weights).
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
            ResNet_CIFAR(depth=18), 512, 100), (3, 32, 32), 32),
        'ImageNet': ('ResNet-18', lambda: Classifier(ResNet(depth=18), 512,
                                                     1000),
                     (3, 224, 224), 8),
        'Cityscapes': ('PSPNet-R18-D8', PSPNet, (3, 512, 1024), 2),
    }


def student_step_cost(family, batch, device, quick, repeats, cache):
    """(label, seconds, peak bytes, note) of one student training step on
    ``batch`` images, measured once per family (on the --quick batch and
    crop, scaled linearly)."""
    label, build, image, quick_batch = student_models()[family]
    if family not in cache:
        size = image
        measured = quick_batch if quick else batch
        if quick and family == 'Cityscapes':
            size = (3, 256, 512)
        model = build().to(device).train()
        gen = torch.Generator().manual_seed(0)
        images = torch.randn((measured, ) + size, generator=gen).to(device)
        if family == 'Cityscapes':
            labels = torch.randint(0, 19, (measured, ) + size[1:],
                                   generator=gen).to(device)
        else:
            labels = torch.randint(0, 100 if family == 'CIFAR-100' else 1000,
                                   (measured, ), generator=gen).to(device)

        def step():
            model.zero_grad(set_to_none=True)
            out = model(images)
            if family == 'Cityscapes':
                decode, aux = (F.interpolate(o, size=size[1:],
                                             mode='bilinear',
                                             align_corners=False)
                               for o in out)
                loss = F.cross_entropy(decode, labels) + \
                    0.4 * F.cross_entropy(aux, labels)
            else:
                loss = F.cross_entropy(out, labels)
            loss.backward()

        seconds = time_call(step, device, repeats)
        peak = peak_extra_bytes(step, device)
        pixels = measured * size[1] * size[2]
        cache[family] = (seconds / pixels, peak / pixels,
                         'x'.join(map(str, (measured, ) + size)))
    per_pixel_s, per_pixel_b, measured = cache[family]
    pixels = batch * image[1] * image[2]
    note = f'{measured}, scaled to {batch} images of ' \
        f'{image[1]}x{image[2]}' if quick else measured
    return label, per_pixel_s * pixels, per_pixel_b * pixels, note


# --------------------------------------------------------------------------
def loss_table(args, device, lines):
    from mmrankkd.registry import MODELS
    rows, cache = [], {}
    for shape_name in args.shapes:
        shape = SHAPES[shape_name]
        family, batch = shape_name.split('/')[0], shape[0]
        student_cost = None
        if not args.no_student:
            student_cost = student_step_cost(family, batch, device,
                                             args.quick, args.repeats, cache)
            label, seconds, peak, note = student_cost
            lines.append(f'Student step for {shape_name} '
                         f'({"x".join(map(str, shape))} logits): {label}, '
                         f'{seconds * 1e3:.0f} ms, peak {peak / 2**20:.0f} '
                         f'MB (measured on {note}).')
        for loss_name in args.losses:
            if loss_name in CHANNEL_WISE and len(shape) == 2:
                continue  # channel-wise losses need (N, C, H, W)
            if loss_name in TWO_VIEW and len(shape) == 4:
                continue  # classification only
            loss_fn = MODELS.build(LOSSES[loss_name])
            if loss_name in TWO_VIEW:
                loss_fn = two_views(loss_fn)
            student, teacher, labels = make_inputs(shape, device)
            logits_bytes = student.numel() * student.element_size()
            if loss_name in TWO_VIEW:  # both views' logits
                logits_bytes *= 2
            step = loss_step(loss_fn, student, teacher, labels)
            seconds = time_call(step, device, args.repeats)
            ops = top_level_aten_ops(step)
            peak = peak_extra_bytes(step, device)
            row = dict(loss=loss_name, shape='x'.join(map(str, shape)),
                       ms=seconds * 1e3, ops=ops, mb=peak / 2**20,
                       x_logits=peak / logits_bytes)
            if loss_name in PAIRWISE and not args.no_naive:
                naive_step = loss_step(MODELS.build(LOSSES[loss_name]),
                                       student, teacher, labels)
                ours, naive_seconds = time_calls(
                    [step, _patched(naive_step, naive_kernels)], device,
                    args.repeats)
                seconds = min(seconds, ours)
                with naive_kernels():
                    naive_peak = peak_extra_bytes(naive_step, device)
                row.update(ms=seconds * 1e3, naive_ms=naive_seconds * 1e3,
                           naive_mb=naive_peak / 2**20,
                           time_vs_naive=seconds / naive_seconds,
                           mem_vs_naive=peak / naive_peak)
            if loss_name in PEERS and (loss_name != 'CWDLoss'
                                       or len(shape) == 4):
                peer_name, peer = PEERS[loss_name]
                peer_step = loss_step(
                    lambda s, t, y: peer(s, t, y), student, teacher, labels)
                ours, peer_seconds, vs_peer = median_ratio(
                    [step, peer_step], device, args.repeats)
                seconds = min(seconds, ours)
                row.update(ms=seconds * 1e3, peer=peer_name,
                           peer_ms=peer_seconds * 1e3, vs_peer=vs_peer)
            if student_cost is not None:
                row.update(time_vs_student=seconds / student_cost[1],
                           mem_vs_student=peak / student_cost[2])
            rows.append(row)
            print({k: round(v, 4) if isinstance(v, float) else v
                   for k, v in row.items()}, flush=True)
    return rows


def fmt(row, key, spec):
    value = row.get(key)
    return '-' if value is None else format(value, spec)


def loss_markdown(rows):
    table = [
        '| loss | logits | fwd+bwd ms | aten ops | peak extra MB | '
        'x logits | naive ms | time vs naive | mem vs naive | peer | '
        'peer ms | vs peer | time vs student step | mem vs student step |',
        '|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|'
        '---:|',
    ]
    for row in rows:
        table.append(
            f"| {row['loss']} | {row['shape']} | {fmt(row, 'ms', '.1f')} | "
            f"{row['ops']} | {fmt(row, 'mb', '.1f')} | "
            f"{fmt(row, 'x_logits', '.1f')} | {fmt(row, 'naive_ms', '.1f')} "
            f"| {fmt(row, 'time_vs_naive', '.2f')} | "
            f"{fmt(row, 'mem_vs_naive', '.3f')} | {row.get('peer', '-')} | "
            f"{fmt(row, 'peer_ms', '.1f')} | {fmt(row, 'vs_peer', '.2f')} | "
            f"{fmt(row, 'time_vs_student', '.4f')} | "
            f"{fmt(row, 'mem_vs_student', '.4f')} |")
    return '\n'.join(table)


# --------------------------------------------------------------------------
# Table 2: distillation steps of model pairs built from the configs.
PAIRS = {
    'quick-start PSPNet w32 -> w16': dict(
        config='configs/quickstart/'
        'distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py',
        kind='seg', batch=8, quick_batch=8, size=(64, 128),
        ignore_index=255),
    'CIFAR-100 resnet32x4 -> resnet8x4': dict(
        config='configs/cifar100/kd_resnet32x4_resnet8x4_1xb64_cifar100.py',
        kind='cls', batch=64, quick_batch=8, size=(32, 32),
        ignore_index=None),
}


def _build_model(source, default_scope=None):
    """A model from a config path or a model dict, random weights."""
    from mmengine.config import Config
    from mmengine.registry import MODELS as ROOT_MODELS
    from mmengine.registry import DefaultScope
    if isinstance(source, str):
        cfg = Config.fromfile(source)
        source, default_scope = cfg.model, cfg.get('default_scope',
                                                   default_scope)
    with DefaultScope.overwrite_default_scope(default_scope):
        return ROOT_MODELS.build(copy.deepcopy(source))


def _batch(kind, batch, size, gen):
    if kind == 'seg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        samples = []
        for _ in range(batch):
            sample = SegDataSample()
            label = torch.randint(0, 19, (1, ) + size, generator=gen)
            label[:, :2] = 255
            sample.gt_sem_seg = PixelData(data=label)
            sample.set_metainfo(dict(img_shape=size, ori_shape=size,
                                     pad_shape=size))
            samples.append(sample)
    else:
        from mmpretrain.structures import DataSample
        samples = [DataSample().set_gt_label(
            int(torch.randint(0, 100, (1, ), generator=gen)))
            for _ in range(batch)]
    inputs = [torch.randint(0, 256, (3, ) + size, generator=gen).float()
              for _ in range(batch)]
    return dict(inputs=inputs, data_samples=samples)


def _optim_wrapper(model):
    from mmengine.optim import OptimWrapper
    return OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-4,
                                        momentum=0.9))


def distill_table(args, device, lines):
    """Rows of table 2; failures become rows with an 'error'."""
    from mmengine.config import Config
    from mmrankkd.registry import MODELS
    rows = []
    for pair_name, pair in PAIRS.items():
        batch = pair['quick_batch'] if args.quick else pair['batch']
        try:
            cfg = Config.fromfile(osp.join(REPO, pair['config']))
            scope = cfg.get('default_scope')
            model_cfg = cfg.model
            student = _build_model(model_cfg.student, scope).to(device)
            teacher = _build_model(model_cfg.teacher, scope).to(device)
            teacher.eval()
            ckpt_dir = tempfile.mkdtemp(prefix='mmrankkd_bench_')
            ckpt = osp.join(ckpt_dir, 'teacher.pth')
            torch.save({'state_dict': teacher.state_dict()}, ckpt)
            gen = torch.Generator().manual_seed(0)
            data = _batch(pair['kind'], batch, pair['size'], gen)
            student_wrapper = _optim_wrapper(student)
            student.train()
            prepared = student.data_preprocessor(copy.deepcopy(data), True)
            inputs = prepared['inputs']

            def baseline():
                student.train_step(copy.deepcopy(data), student_wrapper)
                with torch.no_grad():
                    teacher(inputs, mode='tensor')

            with torch.no_grad():
                student.eval()
                logits = student(inputs, mode='tensor')
                student.train()
            if isinstance(logits, (tuple, list)):
                logits = logits[0]
            lines.append(
                f'{pair_name}: {pair["config"]}, batch '
                f'{batch}x3x{pair["size"][0]}x{pair["size"][1]}, student '
                f'logits {"x".join(map(str, logits.shape))}.')
        except Exception as error:  # the distiller/configs may be in flux
            rows.append(dict(pair=pair_name, loss='(all)',
                             error=_short_error(error)))
            print(f'[benchmark] {pair_name}: could not set up: '
                  f'{_short_error(error)}', flush=True)
            if args.verbose:
                traceback.print_exc()
            continue
        for loss_name in args.losses:
            if loss_name in CHANNEL_WISE and pair['kind'] != 'seg':
                continue
            if loss_name in TWO_VIEW:
                continue  # needs a two-view pipeline
            loss_cfg = dict(LOSSES[loss_name],
                            ignore_index=pair['ignore_index'])
            row = dict(pair=pair_name, loss=loss_name)
            try:
                distiller_cfg = copy.deepcopy(model_cfg)
                distiller_cfg.teacher_ckpt = ckpt
                distiller_cfg.distill_losses = dict(loss_bench=loss_cfg)
                distiller = MODELS.build(distiller_cfg).to(device)
                distiller.train()
                wrapper = _optim_wrapper(distiller)

                def distill():
                    distiller.train_step(copy.deepcopy(data), wrapper)

                # The baseline on the distiller's own student and teacher
                # where it exposes them (same instances, same memory: a
                # fresh instance alone can run 10 % apart here).
                own = (getattr(distiller, 'student', None),
                       getattr(distiller, 'teacher', None))
                if all(isinstance(m, torch.nn.Module) for m in own):
                    own_wrapper = _optim_wrapper(own[0])

                    def own_baseline():
                        own[0].train_step(copy.deepcopy(data), own_wrapper)
                        with torch.no_grad():
                            own[1](inputs, mode='tensor')

                    distill_s, base_s = time_calls(
                        [distill, own_baseline], device,
                        max(args.repeats, 10))
                else:
                    distill_s, base_s = time_calls(
                        [distill, baseline], device, max(args.repeats, 10))
                ratio = distill_s / base_s
                student_s = time_call(
                    lambda: student.train_step(copy.deepcopy(data),
                                               student_wrapper), device,
                    args.repeats)
                loss_fn = MODELS.build(loss_cfg).to(device)
                shape = tuple(logits.shape)
                s, t, y = make_inputs(shape, device)
                if pair['ignore_index'] is not None and len(shape) == 4:
                    y[:, :1] = pair['ignore_index']
                loss_s = time_call(loss_step(loss_fn, s, t, y), device,
                                   args.repeats)
                row.update(distill_ms=distill_s * 1e3, base_ms=base_s * 1e3,
                           ratio=ratio, loss_ms=loss_s * 1e3,
                           student_ms=student_s * 1e3,
                           loss_vs_student=loss_s / student_s)
            except Exception as error:
                row['error'] = _short_error(error)
                if args.verbose:
                    traceback.print_exc()
            rows.append(row)
            print({k: round(v, 4) if isinstance(v, float) else v
                   for k, v in row.items()}, flush=True)
    return rows


def _short_error(error):
    text = f'{type(error).__name__}: {error}'.replace('\n', ' ')
    return text if len(text) < 200 else text[:197] + '...'


def distill_markdown(rows):
    table = [
        '| model pair | loss | distill step ms | student step + teacher '
        'fwd ms | ratio | loss fwd+bwd ms | student step ms | loss / '
        'student step |',
        '|---|---|---:|---:|---:|---:|---:|---:|',
    ]
    for row in rows:
        if 'error' in row:
            table.append(f"| {row['pair']} | {row['loss']} | failed: "
                         f"{row['error']} | | | | | |")
            continue
        table.append(
            f"| {row['pair']} | {row['loss']} | "
            f"{fmt(row, 'distill_ms', '.1f')} | "
            f"{fmt(row, 'base_ms', '.1f')} | {fmt(row, 'ratio', '.3f')} | "
            f"{fmt(row, 'loss_ms', '.2f')} | {fmt(row, 'student_ms', '.1f')}"
            f" | {fmt(row, 'loss_vs_student', '.4f')} |")
    return '\n'.join(table)


# --------------------------------------------------------------------------
def check_device(name):
    """The torch device, or exit with a message naming what is missing."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        sys.exit(f'benchmark_losses.py: --device {name!r} is not a device '
                 f'torch knows ({error}). Use cpu or cuda.')
    if device.type == 'cuda' and not torch.cuda.is_available():
        built = torch.version.cuda or 'no CUDA (a CPU-only build)'
        sys.exit(
            f'benchmark_losses.py: --device {name} needs a CUDA GPU, but '
            f'torch.cuda.is_available() is False here (torch '
            f'{torch.__version__}, built with {built}; '
            f'{torch.cuda.device_count()} CUDA devices visible). Run it on a '
            'machine with a GPU and a CUDA build of torch, or use --device '
            'cpu.')
    if device.type not in ('cpu', 'cuda'):
        sys.exit(f'benchmark_losses.py: --device {name}: only cpu and cuda '
                 'are supported.')
    return device


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
                        help='skip the student-step comparison of table 1')
    parser.add_argument('--no-naive', action='store_true',
                        help='skip the naive pairwise references')
    parser.add_argument('--no-distill', action='store_true',
                        help='skip table 2 (distillation steps)')
    parser.add_argument('--threads', type=int,
                        help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--verbose', action='store_true',
                        help='print tracebacks of failing table-2 rows')
    parser.add_argument('--out', help='also write the markdown here')
    args = parser.parse_args()
    device = check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full = import_mmrankkd()
    notes = []
    if not args.no_student and not importable('mmpretrain.models',
                                              'mmseg.models'):
        args.no_student = True
        notes.append('Student steps skipped: mmpretrain/mmseg (with '
                     'mmcv) are not importable here.')
    if not args.no_distill and not (full and importable(
            'mmpretrain.models', 'mmseg.models')):
        args.no_distill = True
        notes.append('Distillation steps skipped: they need the full '
                     'mmrankkd with mmseg, mmpretrain and mmcv.')

    if device.type == 'cuda':
        machine = torch.cuda.get_device_name(device)
    else:
        machine = (f'{platform.processor() or platform.machine()}, '
                   f'{torch.get_num_threads()} threads')
    lines = [
        f'Device: {device} ({machine}); torch {torch.__version__}; '
        f'fastest of {args.repeats} timed runs (up to 100 for calls under '
        '10 ms) after 1 warm-up, a loss and its naive/peer reference '
        'interleaved.' +
        (' Student steps on reduced batches (--quick), scaled linearly '
         'to the full batch.' if args.quick else ''),
        f'Peak extra memory: {MEMORY_METHOD[device.type]}.',
        'aten ops: top-level aten operators of one forward + backward '
        '(torch.profiler). x logits: peak extra memory / size of the student '
        'logits. vs naive: this loss / the same loss with plain autograd '
        'over the full (R, C, C) pairwise tensor. vs peer: this loss / the '
        'plain transcription of the named formula, same inputs, ratio of the '
        'medians of at least 20 interleaved runs. vs student '
        'step: this loss / one student forward+CE+backward on the batch the '
        'logits come from.',
    ] + notes
    rows = loss_table(args, device, lines)
    sections = ['\n'.join(f'- {line}' for line in lines),
                loss_markdown(rows)]
    if not args.no_distill:
        distill_lines = []
        distill_rows = distill_table(args, device, distill_lines)
        sections += [
            'Distillation steps (models built from the configs, random '
            'weights): ratio = LogitDistiller.train_step / (the student\'s '
            'train_step + a no-grad teacher forward) on the same batch, '
            'fastest of at least 10 interleaved runs each; loss fwd+bwd on '
            'random logits of the student\'s shape, against the student\'s '
            'train_step.' +
            (' --quick: CIFAR batch 8 instead of 64.' if args.quick else
             ''),
            '\n'.join(f'- {line}' for line in distill_lines),
            distill_markdown(distill_rows)
        ]
    text = '\n\n'.join(s for s in sections if s) + '\n'
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)


if __name__ == '__main__':
    os.environ.setdefault('PYTHONHASHSEED', '0')
    main()
