#!/usr/bin/env bash
# CI steps of the numba backend, run by .ci/run with the CI venv active, from the repo root.
#  1. install the backend's extra (numba, and SciPy whose BLAS numba's np.dot calls);
#  2. run the numba tests once with NUMBA_DISABLE_JIT=1: every kernel executes as plain Python,
#     so the kernels' own semantics are checked (and coverage sees them). The 70,001-element
#     optimizer cases are left to the jitted run that .ci/run does next (same code path as the
#     1,000-element ones, minutes of pure-Python loops).
# The jitted run of the whole suite (every op of numba against the reference) is .ci/run's
# own `pytest`, which now finds numba installed.
set -euo pipefail
python -m pip install -q $(python .ci/extra_requirements.py numba)
python -c "import fastmlp; r = fastmlp.backends()['numba']; assert r.available, r.reason; print('numba backend:', r.reason)"
NUMBA_DISABLE_JIT=1 python -m pytest -q -p no:cacheprovider \
    tests/test_backends_vs_reference.py tests/test_numba_backend.py tests/test_math_accuracy.py \
    -k "numba and not 70001"
