"""The set-up's own tools: the PCH compiler wrapper and the failure path."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = ROOT / 'tools' / 'mmcv_build' / 'pch_cxx.sh'


@pytest.mark.skipif(shutil.which('g++') is None, reason='needs g++')
def test_pch_wrapper_builds_and_uses_the_precompiled_header(tmp_path):
    header = tmp_path / 'pytorch_cpp_helper.hpp'
    header.write_text('#ifndef H\n#define H\n#include <vector>\n'
                      'inline int helper() { return 41; }\n#endif\n')
    # A unit that does not include the header first still gets it.
    src = tmp_path / 'unit.cpp'
    src.write_text('#include <cstdio>\n#include "pytorch_cpp_helper.hpp"\n'
                   'int main() { std::printf("%d", helper() + 1); }\n')
    env = dict(os.environ, MMCV_PCH_HEADER=str(header))
    obj = tmp_path / 'unit.o'
    subprocess.run([str(WRAPPER), '-MMD', '-MF', str(obj) + '.d', '-O1',
                    f'-I{tmp_path}', '-c', str(src), '-o', str(obj),
                    '-std=c++17'], env=env, check=True, capture_output=True)
    gch = tmp_path / 'pytorch_cpp_helper.hpp.gch'
    assert gch.stat().st_size > 0
    # The next unit loads it: gcc's -H marks a used PCH with '!'.
    again = subprocess.run([str(WRAPPER), '-H', '-O1', f'-I{tmp_path}', '-c',
                            str(src), '-o', str(obj), '-std=c++17'],
                           env=env, check=True, capture_output=True,
                           text=True)
    assert f'! {gch}' in again.stderr.splitlines()
    # Links pass straight through to the real compiler.
    exe = tmp_path / 'unit'
    subprocess.run([str(WRAPPER), str(obj), '-o', str(exe)], env=env,
                   check=True)
    assert subprocess.run([str(exe)], capture_output=True,
                          text=True).stdout == '42'


def test_setup_failure_names_the_step_and_leaves_no_ready_marker(tmp_path):
    venv = tmp_path / 'venv'
    venv.mkdir()
    (venv / '.mmrankkd-ready').write_text('stale')
    result = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'setup_env.sh')],
        env=dict(os.environ, MMRANKKD_VENV=str(venv),
                 PYTHON=str(tmp_path / 'no-such-python')),
        capture_output=True, text=True)
    assert result.returncode != 0
    assert 'FAILED while: checking Python' in result.stderr
    assert 'what to do:' in result.stderr
    assert not (venv / '.mmrankkd-ready').exists()
