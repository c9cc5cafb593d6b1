"""Device checks of every mmrankkd loss (run by tools/gpu_check.sh).

Needs torch and mmengine only (the rest of mmrankkd is not imported when
mmcv/mmseg/mmpretrain are missing).

* ``device``: every loss (and its main options) on ``--device`` against the
  CPU, float32: value and student gradient within ``--rtol`` (1e-5) of the
  CPU result (gradients relative to their largest entry);
* ``amp``: every loss on logits made under ``torch.autocast`` with bfloat16
  and float16 (as a student/teacher head under AMP gives them): finite value
  and gradient, and within a tolerance of the float32 loss on the same
  logits before rounding (bf16 5e-2, fp16 1e-2 relative).

Usage::

    python tools/gpu_check.py --device cuda            # both checks
    python tools/gpu_check.py --device cpu --checks amp
"""
import argparse
import os.path as osp
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_losses import import_mmrankkd  # noqa: E402

# name -> loss config; dense-only ones get (N, C, H, W) logits only.
CASES = {
    'KD': dict(type='mmrankkd.KDLoss', temperature=4.0),
    'DIST': dict(type='mmrankkd.DISTLoss'),
    'DIST(T=4,weights)': dict(type='mmrankkd.DISTLoss', beta=2.0, gamma=0.5,
                              temperature=4.0),
    'CWD': dict(type='mmrankkd.CWDLoss', temperature=2.0),
    'DKD': dict(type='mmrankkd.DKDLoss'),
    'BDD': dict(type='mmrankkd.BalanceDivergenceLoss',
                forward_temperature=4.0, reverse_temperature=4.0),
    'BDD(T_f!=T_r)': dict(type='mmrankkd.BalanceDivergenceLoss',
                          forward_temperature=2.0, reverse_temperature=3.0,
                          reverse_weight=0.5),
    'BDD(channel)': dict(type='mmrankkd.BalanceDivergenceLoss',
                         mode='channel'),
    'PLD': dict(type='mmrankkd.PlackettLuceLoss', teacher_temperature=4.0),
    'Kendall': dict(type='mmrankkd.KendallRankLoss'),
    'Kendall(k=100)': dict(type='mmrankkd.KendallRankLoss', steepness=100.0),
    'Kendall(sigmoid,topk)': dict(type='mmrankkd.KendallRankLoss',
                                  surrogate='sigmoid', topk=5),
    'Kendall(erf,smooth)': dict(type='mmrankkd.KendallRankLoss',
                                surrogate='erf', smooth_teacher=True),
    'Kendall(small budget)': dict(type='mmrankkd.KendallRankLoss',
                                  block_bytes=2**20),
    'CMKD': dict(type='mmrankkd.CorrelationMatchingLoss'),
    'CMKD(fixed,T=2)': dict(type='mmrankkd.CorrelationMatchingLoss',
                            weighting='fixed', temperature=2.0),
    'CMKD(small budget)': dict(type='mmrankkd.CorrelationMatchingLoss',
                               block_bytes=2**20),
    'KD+LS': dict(type='mmrankkd.KDLoss', temperature=2.0,
                  logit_standardization=True),
    'DKD+LS': dict(type='mmrankkd.DKDLoss', temperature=2.0,
                   logit_standardization=True),
    'WTTM': dict(type='mmrankkd.WTTMLoss', gamma=0.1),
    'TTM': dict(type='mmrankkd.TTMLoss', gamma=0.1),
    'CTKD': dict(type='mmrankkd.CTKDLoss', grl_lambda=-1.0),
    'DeiT(hard)': dict(type='mmrankkd.DeiTDistillationLoss'),
    'DeiT(soft)': dict(type='mmrankkd.DeiTDistillationLoss', mode='soft'),
}
DENSE_ONLY = ('CWD', 'BDD(channel)')
SHAPES = [(64, 100), (16, 1000), (2, 19, 32, 64)]


def make_inputs(shape, seed, ignored):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=gen) * 2
    teacher = torch.randn(shape, generator=gen) * 2
    labels = torch.randint(0, shape[1], (shape[0], ) + tuple(shape[2:]),
                           generator=gen)
    if ignored:
        labels.view(-1)[::7] = 255
    return student, teacher, labels


def value_and_grad(loss_fn, student, teacher, labels):
    student = student.detach().clone().requires_grad_()
    value = loss_fn(student, teacher, labels)
    value.backward()
    return value.detach().float().cpu(), student.grad.float().cpu()


def relative_error(actual, expected):
    scale = expected.abs().max().clamp(min=1e-12)
    return float((actual - expected).abs().max() / scale)


def cases():
    for name, cfg in CASES.items():
        for shape in SHAPES:
            if name in DENSE_ONLY and len(shape) == 2:
                continue
            for ignored in ((False, True) if len(shape) == 4 else (False, )):
                yield name, cfg, shape, ignored


def check_device(device, rtol):
    from mmrankkd.registry import MODELS
    failures = 0
    for index, (name, cfg, shape, ignored) in enumerate(cases()):
        extra = dict(ignore_index=255) if ignored else {}
        student, teacher, labels = make_inputs(shape, index, ignored)
        reference = value_and_grad(MODELS.build(dict(cfg, **extra)),
                                   student, teacher, labels)
        loss_fn = MODELS.build(dict(cfg, **extra)).to(device)
        start = time.perf_counter()
        result = value_and_grad(loss_fn, student.to(device),
                                teacher.to(device), labels.to(device))
        seconds = time.perf_counter() - start
        errors = (relative_error(result[0], reference[0]),
                  relative_error(result[1], reference[1]))
        ok = max(errors) <= rtol and bool(torch.isfinite(result[1]).all())
        failures += not ok
        print(f'[{"ok" if ok else "FAIL"}] {device} vs cpu {name:22s} '
              f'{"x".join(map(str, shape)):14s} '
              f'{"ignore 255" if ignored else "          "} value rel '
              f'{errors[0]:.1e} grad rel {errors[1]:.1e} '
              f'({seconds * 1e3:.1f} ms)', flush=True)
    return failures


def check_amp(device):
    from mmrankkd.registry import MODELS
    failures = 0
    tolerance = {torch.bfloat16: 5e-2, torch.float16: 1e-2}
    for dtype, rtol in tolerance.items():
        for index, (name, cfg, shape, ignored) in enumerate(cases()):
            extra = dict(ignore_index=255) if ignored else {}
            if name.startswith(('DIST', 'CMKD')) and dtype == torch.float16:
                # the official Pearson gradient (~b'/1e-8) is beyond fp16
                # where a column saturates; the option keeps it finite
                extra['zero_grad_where_constant'] = True
            student, teacher, labels = make_inputs(shape, index, ignored)
            loss_fn = MODELS.build(dict(cfg, **extra)).to(device)
            reference, _ = value_and_grad(loss_fn, student.to(device),
                                          teacher.to(device),
                                          labels.to(device))
            # Half logits as a head under autocast produces them.
            head = torch.nn.Identity()
            s = student.to(device).requires_grad_()
            with torch.autocast(device.type, dtype=dtype):
                s_half = head(s).to(dtype)
                t_half = head(teacher.to(device)).to(dtype)
                value = loss_fn(s_half, t_half, labels.to(device))
            value.backward()
            error = abs(value.item() - float(reference)) / max(
                abs(float(reference)), 1e-6)
            finite = bool(torch.isfinite(value.detach())) and bool(
                torch.isfinite(s.grad).all())
            ok = finite and value.dtype == torch.float32 and error <= rtol
            failures += not ok
            print(f'[{"ok" if ok else "FAIL"}] autocast {str(dtype)[6:]:8s} '
                  f'{name:22s} {"x".join(map(str, shape)):14s} '
                  f'{"ignore 255" if ignored else "          "} '
                  f'{"finite" if finite else "NOT FINITE"}, rel diff to '
                  f'fp32 {error:.1e} (tolerance {rtol:g})', flush=True)
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--checks', nargs='+', default=['device', 'amp'],
                        choices=['device', 'amp'])
    parser.add_argument('--rtol', type=float, default=1e-5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('gpu_check.py: --device cuda, but torch.cuda.is_available() '
                 f'is False (torch {torch.__version__}, CUDA '
                 f'{torch.version.cuda}). Use --device cpu for a dry run.')
    import_mmrankkd()
    torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32 matmuls
    torch.backends.cudnn.allow_tf32 = False
    failures = 0
    if 'device' in args.checks:
        failures += check_device(device, args.rtol)
    if 'amp' in args.checks:
        failures += check_amp(device)
    print(f'gpu_check.py: {failures} failure(s).')
    sys.exit(1 if failures else 0)


if __name__ == '__main__':
    main()
