#!/usr/bin/env bash
# Create (or check) the project's virtual environment and install everything:
# torch + torchvision, full mmcv with compiled ops, mmengine, mmsegmentation,
# mmpretrain, mmdet (mmseg's Mask2Former/MaskFormer heads need it) and
# mmrankkd itself in editable mode. Everything comes through pip, so pip's own
# configuration applies (a PIP_INDEX_URL mirror, a proxy, PIP_FIND_LINKS).
# Idempotent: a finished environment is recognised in seconds.
#
#   bash tools/setup_env.sh            (or: make setup)
#
# Environment variables:
#   MMRANKKD_VENV        where the environment lives (default: <repo>/.venv)
#   PYTHON               the interpreter that creates it (default: python3)
#   MMRANKKD_SYSTEM_SITE_PACKAGES=1
#                        create the venv with --system-site-packages, so a torch
#                        you installed yourself is used instead of installing one
#   TORCH_VERSION, TORCHVISION_VERSION
#                        what to install when the environment has no torch
#                        (default: 2.14.1 / 0.29.1); an importable torch is kept
#   MMRANKKD_MMCV_CUDA=1 also compile mmcv's CUDA kernels (slow; none of
#                        mmrankkd's losses or supported models need them)
#   MMRANKKD_WHEEL_CACHE where built mmcv wheels are cached
#                        (default: ~/.cache/mmrankkd/wheels)
#   MMRANKKD_MMCV_SDIST  a local mmcv-2.1.0.tar.gz (or the folder holding it)
#                        to build from instead of downloading it with pip
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMRANKKD_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.14.1}
TORCHVISION_VERSION=${TORCHVISION_VERSION:-0.29.1}
READY=$VENV/.mmrankkd-ready
VPY=$VENV/bin/python
START=$(date +%s)

# What the environment was built from; a change re-runs the installs.
stamp() {
  cat "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" "$ROOT/requirements/pins.txt" \
    "$ROOT/tools/mmcv_build/build_mmcv.py" | sha256sum | cut -d' ' -f1
}

STEP="start"
HINT=""
say() { echo "[setup $(($(date +%s) - START))s] $*"; }
step() { STEP=$1; HINT=${2:-}; say "$STEP"; }
on_error() {
  local rc=$?
  rm -f "$READY"
  echo "" >&2
  echo "[setup] FAILED while: $STEP (exit $rc)" >&2
  [[ -n "$HINT" ]] && echo "[setup] what to do: $HINT" >&2
  echo "[setup] The environment at $VENV is marked unfinished; re-run" \
    "'make setup' after fixing the cause (it resumes where it stopped)." >&2
  exit "$rc"
}
trap on_error ERR

verify() {
  "$VPY" - <<'PY'
import mmcv, mmcv.ops, mmdet.models, mmengine, mmpretrain.models, mmseg.models
import torch
import mmrankkd
print(f'torch {torch.__version__}, mmcv {mmcv.__version__} (ops compiled), '
      f'mmengine {mmengine.__version__}, mmseg {__import__("mmseg").__version__}, '
      f'mmpretrain {__import__("mmpretrain").__version__}, '
      f'mmdet {__import__("mmdet").__version__}, '
      f'mmrankkd {mmrankkd.__version__}')
PY
}

if [[ -f "$READY" && "$(cat "$READY")" == "$(stamp)" ]]; then
  step "checking the existing environment $VENV" \
    "delete $VENV and run 'make setup' again"
  verify
  say "environment ready"
  exit 0
fi
rm -f "$READY"

step "checking Python ($PYTHON)" "install Python 3.8-3.11 or set PYTHON=/path/to/python3"
"$PYTHON" - <<'PY'
import sys
if not (3, 8) <= sys.version_info[:2] <= (3, 11):
    sys.exit(f'Python {sys.version.split()[0]} is not supported: mmcv 2.1 and '
             'mmsegmentation 1.2 support Python 3.8-3.11')
PY

if [[ ! -x "$VPY" ]]; then
  step "creating the virtual environment $VENV" \
    "make sure '$PYTHON -m venv' works (Debian/Ubuntu: apt-get install python3-venv)"
  venv_args=()
  [[ "${MMRANKKD_SYSTEM_SITE_PACKAGES:-0}" == 1 ]] && venv_args+=(--system-site-packages)
  "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
fi
PIP=("$VPY" -m pip install --disable-pip-version-check -q)

if "$VPY" -c 'import torch, torchvision' 2>/dev/null; then
  say "keeping the installed $("$VPY" -c 'import torch; print("torch", torch.__version__)')"
else
  step "installing torch $TORCH_VERSION and torchvision $TORCHVISION_VERSION" \
    "check access to PyPI, or install torch yourself and re-run with MMRANKKD_SYSTEM_SITE_PACKAGES=1"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

step "installing build tools (ninja, setuptools<80, wheel)" "check access to PyPI"
"${PIP[@]}" ninja 'setuptools<80' wheel

if "$VPY" -c '
import mmcv, mmcv.ops
from mmengine.utils import digit_version as v
assert v("2.0.0rc4") <= v(mmcv.__version__) < v("2.2.0")' 2>/dev/null; then
  say "keeping the installed mmcv $("$VPY" -c 'import mmcv; print(mmcv.__version__)') (ops compiled)"
else
  step "getting a full mmcv 2.1.0 wheel (cached, or built from source)" \
    "read the messages above: a download failure needs access to your package index (or MMRANKKD_MMCV_SDIST=/path/to/mmcv-2.1.0.tar.gz); a build failure names its log (install g++ if it is missing)"
  cuda_flag=()
  [[ "${MMRANKKD_MMCV_CUDA:-0}" == 1 ]] && cuda_flag+=(--cuda)
  wheel=$("$VPY" "$ROOT/tools/mmcv_build/build_mmcv.py" "${cuda_flag[@]}" | tail -n 1)
  step "installing $wheel" "check access to PyPI (mmcv's own dependencies come from there)"
  "${PIP[@]}" --force-reinstall --no-deps "$wheel"
  "${PIP[@]}" "$wheel"
fi

step "installing mmengine, mmsegmentation, mmpretrain, mmdet and mmrankkd (editable)" \
  "check access to PyPI; the pinned versions are in requirements/pins.txt"
"${PIP[@]}" -c "$ROOT/requirements/pins.txt" -e "$ROOT[tests,demo,mmdet]"

step "verifying the imports" "delete $VENV and run 'make setup' again"
verify
stamp > "$READY"
say "environment ready at $VENV"
