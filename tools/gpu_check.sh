#!/usr/bin/env bash
# mmrankkd's checks that need a CUDA GPU, in one script that needs no
# network on the GPU machine (torch already installed there).
#
#   bash tools/gpu_check.sh                  # every step on cuda
#   bash tools/gpu_check.sh --device cpu     # dry run of the same steps
#   bash tools/gpu_check.sh --quick          # benchmark on fewer shapes
#
# Steps (each reports ok / FAILED / SKIPPED; the exit status is 1 if any
# failed):
#   1. environment: torch (with CUDA for --device cuda) must be there;
#      mmengine and its pure-Python dependencies are installed from ./.whl
#      when they do not import; mmrankkd runs from this tree (PYTHONPATH).
#   2. tools/gpu_check.py: every loss on the device against the CPU
#      (float32, values and gradients within rel 1e-5) and on logits made
#      under torch.autocast bf16 and fp16 (finite, close to float32).
#   3. tools/benchmark_losses.py on the device (the loss table; the
#      student-step and distillation-step parts only where mmseg,
#      mmpretrain and mmcv import).
#   4. a short quick-start distillation with --amp: synthetic street
#      scenes, teacher 20 iterations, distilled student 20 iterations
#      (tools/train.py and configs/quickstart/; without --amp on CPU).
#      Skipped, saying so, when mmcv with its compiled ops or mmseg does
#      not import (mmcv cannot come as a pure-Python wheel).
#   5. mixed precision: a tiny mmpretrain distiller's training step under
#      torch.autocast fp16 and bf16 on the device; the losses must get
#      float32 logits, the teacher's equal to its float32 forward.
#   6. tools/benchmark_store.py on the device: student step, distill step
#      with the live teacher and with a teacher-logit store (exact mode,
#      and replay mode with full and top-10 stores), for the three
#      CIFAR-100 pairs (steps 5 and 6 need mmpretrain and mmcv).
#
# Filling ./.whl on a machine with network, for the GPU machine's Python
# (here 3.12; the first line keeps the folder out of git):
#   mkdir -p .whl && printf '*\n' > .whl/.gitignore
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl \
#       mmengine==0.10.7 addict yapf platformdirs termcolor rich \
#       markdown-it-py mdurl pygments pyyaml numpy
# For step 4 add mmsegmentation==1.2.2 mmpretrain==1.2.0 and their
# dependencies, and an mmcv 2.1.0 wheel built for that machine's torch and
# CUDA (tools/mmcv_build/build_mmcv.py). Only what does not import is
# installed (pip --no-index --no-deps from .whl). Outputs go to a temporary
# folder (GPU_CHECK_WORK to choose it).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

DEVICE=cuda
QUICK=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE="$2"; shift 2 ;;
        --device=*) DEVICE="${1#*=}"; shift ;;
        --quick) QUICK=1; shift ;;
        -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)"; exit 2 ;;
    esac
done

if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' \
        2>/dev/null; then
    PY=.venv/bin/python
else
    PY=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
WORK=${GPU_CHECK_WORK:-$(mktemp -d -t mmrankkd_gpu_check.XXXXXX)}
mkdir -p "$WORK"
RESULTS=()
FAILED=0

report() {  # report NAME STATUS [DETAIL]
    RESULTS+=("$(printf '%-34s %s' "$1" "$2${3:+ ($3)}")")
    [ "$2" = FAILED ] && FAILED=1
    echo "==> $1: $2${3:+ ($3)}"
}

# -------------------------------------------------------------- 1. setup
echo "==> python: $PY ($("$PY" --version 2>&1)); work dir: $WORK"
if ! "$PY" -c 'import torch' 2>/dev/null; then
    report "1. environment" FAILED "torch does not import with $PY"
    printf '%s\n' "${RESULTS[@]}"
    exit 1
fi
"$PY" -c 'import torch; print("==> torch", torch.__version__, "cuda",
torch.version.cuda, "available:", torch.cuda.is_available())'
if [ "$DEVICE" = cuda ] && ! "$PY" -c \
        'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    report "1. environment" FAILED "--device cuda but torch sees no GPU"
    printf '%s\n' "${RESULTS[@]}"
    exit 1
fi
# module:distribution pairs mmengine needs at import time
NEEDED="addict:addict yapf:yapf platformdirs:platformdirs termcolor:termcolor
rich:rich markdown_it:markdown-it-py mdurl:mdurl pygments:pygments
yaml:pyyaml numpy:numpy mmengine:mmengine"
MISSING=()
for pair in $NEEDED; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || MISSING+=("${pair##*:}")
done
if [ ${#MISSING[@]} -gt 0 ]; then
    if [ ! -d .whl ]; then
        report "1. environment" FAILED \
            "missing ${MISSING[*]} and no .whl folder: see the top of $0"
        printf '%s\n' "${RESULTS[@]}"
        exit 1
    fi
    echo "==> installing from .whl: ${MISSING[*]}"
    if ! "$PY" -m pip install --no-index --no-deps --find-links .whl \
            "${MISSING[@]}"; then
        "$PY" -m pip install --user --no-index --no-deps --find-links .whl \
            "${MISSING[@]}" || {
            report "1. environment" FAILED "pip could not install ${MISSING[*]} from .whl"
            printf '%s\n' "${RESULTS[@]}"
            exit 1
        }
    fi
fi
if "$PY" -c 'import mmengine.registry' 2>"$WORK/mmengine.err"; then
    report "1. environment" ok "torch + mmengine"
else
    report "1. environment" FAILED "mmengine does not import: $(tail -1 "$WORK/mmengine.err")"
    printf '%s\n' "${RESULTS[@]}"
    exit 1
fi

# -------------------------------------------------------- 2. loss checks
if "$PY" tools/gpu_check.py --device "$DEVICE" 2>&1 | tee "$WORK/losses.log"; then
    report "2. losses on $DEVICE vs cpu, autocast" ok \
        "$(grep -c '^\[ok\]' "$WORK/losses.log") checks"
else
    report "2. losses on $DEVICE vs cpu, autocast" FAILED \
        "$(grep -c '^\[FAIL\]' "$WORK/losses.log") failing, see $WORK/losses.log"
fi

# ---------------------------------------------------------- 3. benchmark
BENCH_ARGS=(--device "$DEVICE" --repeats 5 --out "$WORK/benchmark.md")
if [ "$QUICK" = 1 ] || [ "$DEVICE" = cpu ]; then
    BENCH_ARGS+=(--quick --repeats 2 --shapes CIFAR-100/64 Cityscapes/2)
fi
if "$PY" tools/benchmark_losses.py "${BENCH_ARGS[@]}" \
        > "$WORK/benchmark.log" 2>&1; then
    report "3. benchmark on $DEVICE" ok "$WORK/benchmark.md"
    cat "$WORK/benchmark.md"
else
    report "3. benchmark on $DEVICE" FAILED "see $WORK/benchmark.log"
    tail -20 "$WORK/benchmark.log"
fi

# ------------------------------------------------ 4. quick-start with AMP
if ! "$PY" -c 'import mmcv.ops, mmseg, mmpretrain' 2>"$WORK/mmcv.err"; then
    report "4. quick-start distillation" SKIPPED \
        "mmcv (compiled ops)/mmseg/mmpretrain do not import: $(tail -1 "$WORK/mmcv.err")"
else
    AMP=(--amp)
    [ "$DEVICE" = cpu ] && AMP=()
    DATA="$WORK/synthetic_cityscapes"
    SCHEDULE=(train_cfg.max_iters=20 train_cfg.val_interval=20
        default_hooks.checkpoint.interval=20 param_scheduler.0.end=5
        param_scheduler.1.begin=5 param_scheduler.1.end=20
        train_dataloader.dataset.data_root="$DATA"
        val_dataloader.dataset.data_root="$DATA"
        test_dataloader.dataset.data_root="$DATA")
    Q=configs/quickstart
    if "$PY" -c "from mmrankkd.datasets import make_synthetic_cityscapes as m
m('$DATA', num_train=40, num_val=8, height=128, width=256, seed=0)" \
            > "$WORK/quickstart.log" 2>&1 \
        && "$PY" tools/train.py "$Q"/teacher_pspnet_r18-d8-w32_synthcity-64x128.py \
            "${AMP[@]}" --work-dir "$WORK/teacher" \
            --cfg-options "${SCHEDULE[@]}" >> "$WORK/quickstart.log" 2>&1 \
        && "$PY" tools/train.py \
            "$Q"/distill_bdd-kendall_r18w32-to-r18w16_synthcity-64x128.py \
            "${AMP[@]}" --work-dir "$WORK/distill" --cfg-options \
            model.teacher_ckpt="$WORK/teacher/iter_20.pth" "${SCHEDULE[@]}" \
            >> "$WORK/quickstart.log" 2>&1; then
        LAST=$(grep 'Iter(train)' "$WORK/quickstart.log" | tail -1)
        if echo "$LAST" | grep -qiE 'nan|inf '; then
            report "4. quick-start distillation" FAILED "non-finite loss: $LAST"
        else
            report "4. quick-start distillation" ok \
                "${AMP[*]:-no amp on cpu}; $(echo "$LAST" | grep -oE 'distill[^ ]* [0-9.e+-]*' | tr '\n' ' ')"
        fi
    else
        report "4. quick-start distillation" FAILED "see $WORK/quickstart.log"
        tail -20 "$WORK/quickstart.log"
    fi
fi

# ------------------------------------- 5. float32 logits under autocast
if ! "$PY" -c 'import mmcv, mmpretrain' 2>"$WORK/mmpretrain.err"; then
    report "5. autocast float32 logits" SKIPPED \
        "mmcv/mmpretrain do not import: $(tail -1 "$WORK/mmpretrain.err")"
    report "6. teacher store ratios" SKIPPED "mmcv/mmpretrain do not import"
else
    if DEVICE="$DEVICE" WORK="$WORK" "$PY" - > "$WORK/amp.log" 2>&1 <<'PYEOF'
import os

import torch
import torch.nn as nn

import mmrankkd  # noqa: F401
from mmrankkd.models.distillers import LogitDistiller, build_model_from_source

device = os.environ['DEVICE']


def tiny(width):
    return dict(_scope_='mmpretrain', type='ImageClassifier',
                data_preprocessor=dict(type='ClsDataPreprocessor',
                                       num_classes=100),
                backbone=dict(type='ResNet_CIFAR', depth=18,
                              base_channels=width, out_indices=(3, )),
                neck=dict(type='GlobalAveragePooling'),
                head=dict(type='LinearClsHead', num_classes=100,
                          in_channels=8 * width))


class Recorder(nn.Module):
    def forward(self, student, teacher):
        self.seen = (student.dtype, teacher.detach().clone())
        return student.float().sum() * 0


ckpt = os.path.join(os.environ['WORK'], 'amp_teacher.pth')
torch.save({'state_dict': build_model_from_source(
    tiny(16), 'teacher').state_dict()}, ckpt)
model = LogitDistiller(student=tiny(8), teacher=tiny(16), teacher_ckpt=ckpt,
                       distill_losses=dict(loss_rec=Recorder())).to(device)
from mmpretrain.structures import DataSample  # noqa: E402
data = model.data_preprocessor(dict(
    inputs=[torch.randint(0, 255, (3, 32, 32)).float() for _ in range(8)],
    data_samples=[DataSample().set_gt_label(i) for i in range(8)]), True)
model.eval()
with torch.no_grad():
    expected = model.teacher_logits(data['inputs'], data['data_samples'])
dtypes = [torch.bfloat16] + ([torch.float16] if device == 'cuda' else [])
for dtype in dtypes:
    with torch.autocast(device, dtype=dtype):
        model.loss(data['inputs'], data['data_samples'])
    s_dtype, teacher = model.distill_losses['loss_rec'].seen
    assert s_dtype == torch.float32 and teacher.dtype == torch.float32
    assert torch.equal(teacher, expected), (teacher - expected).abs().max()
    print(f'{dtype}: float32 student and teacher logits, teacher exact')
PYEOF
    then
        report "5. autocast float32 logits" ok \
            "$(grep 'teacher exact' "$WORK/amp.log" | tr '\n' ';')"
    else
        report "5. autocast float32 logits" FAILED "see $WORK/amp.log"
        tail -20 "$WORK/amp.log"
    fi
    STORE_ARGS=(--device "$DEVICE" --repeats 5)
    [ "$DEVICE" = cpu ] && STORE_ARGS=(--device cpu --repeats 1 --skip build table)
    if "$PY" tools/benchmark_store.py "${STORE_ARGS[@]}" \
            > "$WORK/store.log" 2>&1; then
        report "6. teacher store ratios" ok "$WORK/store.log"
        cat "$WORK/store.log"
    else
        report "6. teacher store ratios" FAILED "see $WORK/store.log"
        tail -20 "$WORK/store.log"
    fi
fi

echo
echo "gpu_check.sh summary ($DEVICE):"
printf '  %s\n' "${RESULTS[@]}"
exit $FAILED
