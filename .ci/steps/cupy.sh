#!/usr/bin/env bash
# CI steps for the cupy backend (run by .ci/run with the CI venv active, from the repo root).
# No GPU in CI: what runs is the NVRTC compile gate (CuPy's own compiler and options, for
# sm_75 ... sm_120), the kernels compiled by g++ through tests/cuda_emu and run on the CPU
# against the NumPy reference, the whole CupyBackend on those emulated kernels, and one run of
# the kernel tests under AddressSanitizer (tests/test_cupy_asan.py, marked slow). The GPU-only
# tests skip, with their reason.
set -euo pipefail
# CuPy imports without a device (its NVRTC wrapper and option assembly are what the gate uses);
# cuda-toolkit[nvrtc] provides libnvrtc for CUDA 13; the headers come from /usr/local/cuda.
python -m pip install -q $(python .ci/extra_requirements.py cupy) 'cuda-toolkit[nvrtc]==13.*'
python - <<'PY'
from cupy_backends.cuda.libs import nvrtc
print("NVRTC", nvrtc.getVersion(), "archs", nvrtc.getSupportedArchs())
PY
# g++ with C++17 and libasan for the emulated kernels
g++ --version | head -1
test -e "$(g++ -print-file-name=libasan.so)" || echo "warning: no libasan: the ASan test will skip"
# In CI (CI=true) tests/test_cupy_compile.py fails instead of skipping if NVRTC is missing.
