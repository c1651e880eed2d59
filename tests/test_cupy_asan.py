"""The emulated CUDA kernels under AddressSanitizer.

The kernel library is rebuilt with ``-fsanitize=address`` and the kernel-level tests run in a
subprocess with libasan preloaded (Python itself is not instrumented; the kernels and every
heap block they touch are). An out-of-bounds read or write in a kernel (a missing bounds check
that a plain run survives) then stops the run with a report. A canary kernel without its bounds
check proves the harness catches exactly that.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _libasan() -> str | None:
    out = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if out.returncode == 0 and os.path.isabs(path) and os.path.exists(path) else None


def _asan_env() -> dict[str, str]:
    lib = _libasan()
    if lib is None:
        pytest.skip("g++ has no libasan here")
    env = dict(os.environ)
    env.update(LD_PRELOAD=lib, ASAN_OPTIONS="detect_leaks=0:halt_on_error=1", FASTMLP_EMU_SANITIZE="1",
               PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]))
    return env


CANARY = f"""
import numpy as np
from cuda_emu.emu import EmuModule
path = {str(TESTS / "cuda_emu" / "canary.cu")!r}
k = EmuModule(open(path).read(), ["scale_unchecked<float>"], path, sanitize=True).get_function("scale_unchecked<float>")
x = np.ones(4000, np.float32)
k((63,), (64,), (x, np.int64(x.size)))  # 4032 threads for 4000 elements
print("survived")
"""


@pytest.mark.slow
def test_asan_catches_a_missing_bounds_check():
    env = _asan_env()
    run = subprocess.run([sys.executable, "-c", CANARY], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode != 0 and "heap-buffer-overflow" in run.stderr, run.stdout + run.stderr[-3000:]
    exact = CANARY.replace("k((63,), (64,)", "k((50,), (80,)")  # 4000 threads: in bounds
    run = subprocess.run([sys.executable, "-c", exact], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "survived" in run.stdout, run.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.timeout(2000)  # the subprocess has 1800 s of its own
def test_kernels_under_asan():
    """The kernel-level suite (float64 activations left out for time) with ASan."""
    env = _asan_env()
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(TESTS / "test_cupy_kernels.py"),
           "-k", "not (activation_kernels and float64)"]
    run = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    assert "AddressSanitizer" not in run.stderr
    assert " passed" in run.stdout
