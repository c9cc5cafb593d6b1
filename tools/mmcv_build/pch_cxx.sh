#!/usr/bin/env bash
# Compiler wrapper used as CXX while building mmcv's ops (see build_mmcv.py).
#
# Every mmcv C++ unit starts by pulling in torch's headers, which costs ~10 s of
# parsing per unit on a small machine. This wrapper force-includes
# pytorch_cpp_helper.hpp (the header that carries <torch/types.h>) into every
# unit and builds a gcc precompiled header of it once, with the exact flags of
# the first compile it sees, so the other units load the parsed headers instead
# of re-parsing them. The header has include guards, so the units' own
# `#include "pytorch_cpp_helper.hpp"` becomes a no-op.
#
# Environment:
#   MMCV_PCH_HEADER  absolute path of pytorch_cpp_helper.hpp (required)
#   MMCV_REAL_CXX    the real compiler (default: g++)
set -euo pipefail

real_cxx=${MMCV_REAL_CXX:-g++}
header=${MMCV_PCH_HEADER:?MMCV_PCH_HEADER must name pytorch_cpp_helper.hpp}

# Only C++ compiles of .cpp units get the PCH; links and anything else pass through.
source_file=""
is_compile=0
for arg in "$@"; do
  case "$arg" in
    -c) is_compile=1 ;;
    *.cpp) source_file=$arg ;;
  esac
done
if [[ $is_compile -eq 0 || -z "$source_file" ]]; then
  exec "$real_cxx" "$@"
fi

# The PCH gets the unit's flags minus its dependency file, source and object.
if [[ ! -f "$header.gch" ]]; then
  pch_args=()
  skip_next=0
  for arg in "$@"; do
    if [[ $skip_next -eq 1 ]]; then skip_next=0; continue; fi
    case "$arg" in
      -MMD) ;;
      -MF|-o) skip_next=1 ;;
      -c) ;;
      "$source_file") ;;
      *) pch_args+=("$arg") ;;
    esac
  done
  (
    flock 9
    if [[ ! -f "$header.gch" ]]; then
      echo "[pch_cxx] building precompiled header $header.gch" >&2
      "$real_cxx" "${pch_args[@]}" -x c++-header "$header" -o "$header.gch.tmp"
      mv "$header.gch.tmp" "$header.gch"
    fi
  ) 9>"$header.lock"
fi

# -Winvalid-pch makes a silently rejected PCH visible in the build log.
exec "$real_cxx" -include "$header" -Winvalid-pch "$@"
