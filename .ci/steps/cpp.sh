#!/usr/bin/env bash
# CI steps of the cpp backend (called by .ci/run with the CI venv active, from the repo root,
# after `pip install -e ".[test]"` with FASTMLP_STRICT_BUILD=1).
#  1. the extension was built and loads (strict build: the cpp backend must be available);
#  2. csrc/ is built once more with AddressSanitizer + UBSan into a temporary copy of the
#     package, and the cpp op tests and the binding fuzzer run against it (a short run).
set -euo pipefail

python - <<'PY'
import fastmlp
info = fastmlp.backends()["cpp"]
assert info.available, f"cpp backend unavailable after a strict build: {info.reason}"
assert not info.reference_ops, f"cpp ops on the reference: {info.reference_ops}"
print("cpp:", info.reason)
PY

if [ "${FASTMLP_SKIP_SANITIZERS:-0}" = "1" ]; then
    echo "cpp: sanitizer run skipped (FASTMLP_SKIP_SANITIZERS=1)"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# the build requirements of pyproject.toml, outside build isolation for this one direct build
# (a fresh venv's setuptools is too old for the SPDX license field)
python -m pip install -q "setuptools>=77" "pybind11>=2.12" "scipy-openblas32>=0.3.27"
FASTMLP_SANITIZE=1 FASTMLP_STRICT_BUILD=1 python setup.py -q build_ext \
    --build-lib "$tmp/lib" --build-temp "$tmp/build" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
# a copy of the package whose fastmlp._C is the sanitized build; PYTHONPATH puts it before
# the editable install
mkdir -p "$tmp/pkg"
cp -r fastmlp "$tmp/pkg/"
rm -f "$tmp/pkg/fastmlp/"_C*.so "$tmp/pkg/fastmlp/"libscipy_openblas*.so*
cp "$tmp/lib/fastmlp/"* "$tmp/pkg/fastmlp/"

# run from $tmp: the current directory comes first on sys.path, and the repo root holds the
# editable fastmlp
repo="$(pwd)"
cd "$tmp"
export PYTHONPATH="$tmp/pkg"
export FASTMLP_CPP_ISA=portable  # the sanitized build is the portable module only
# libstdc++ preloaded too: Python does not link it, and ASan must find the real __cxa_throw
export LD_PRELOAD="$(g++ -print-file-name=libasan.so) $(g++ -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
python -c "import fastmlp; c = fastmlp.get_backend('cpp')._C; assert c.__file__.startswith('$tmp'), c.__file__"
python -m pytest -q -s -x -p no:cacheprovider "$repo/tests/test_cpp_backend.py"
python -m pytest -q -s -x -p no:cacheprovider "$repo/tests/test_backends_vs_reference.py" -k cpp
unset LD_PRELOAD PYTHONPATH
cd "$repo"
echo "cpp: sanitizer run passed"
