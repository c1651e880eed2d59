#!/usr/bin/env bash
# Everything that proves the cupy backend, on a machine with an NVIDIA GPU (compute capability
# 7.5 or newer and a driver for CUDA 13; older GPUs: replace cupy-cuda13x by cupy-cuda12x).
# Run from a clone:  bash tests/gpu/run.sh   (uses the active Python environment)
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m pip install -q -e ".[test,cupy,bench]" 'cuda-toolkit[nvrtc,cublas,cudart]==13.*'
# a machine without a usable device stops here: the GPU tests must run, not skip
python - <<'PY'
import cupy
n = cupy.cuda.runtime.getDeviceCount()
assert n > 0, "no CUDA device"
print(f"{n} CUDA device(s):", cupy.cuda.runtime.getDeviceProperties(0)["name"].decode())
PY
python -m fastmlp info || true
# the gpu-marked tests, the generic suite on the real backend, and the CPU-side proofs
FASTMLP_REQUIRE_NVRTC=1 pytest -ra -m "gpu or not gpu" \
    tests/test_cupy_gpu.py tests/test_backends_vs_reference.py tests/test_cupy_backend.py \
    tests/test_cupy_compile.py tests/test_cupy_emulated.py tests/test_cupy_kernels.py
# the asv suites (parametrised over every backend, cupy included), for ratios against numpy
(cd benchmarks && asv run --python=same --quick --show-stderr) || true
