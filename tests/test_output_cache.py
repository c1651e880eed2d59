"""The native CPU backends' cache of large outputs (fastmlp.backends._outputs).

A buffer may be handed out again only when nothing outside the cache references it; every test
here lowers MIN_BYTES so the cache works on small arrays.
"""

import threading

import numpy as np
import pytest
from helpers import backend_params

import fastmlp
from fastmlp import _config
from fastmlp.backends import _outputs

SMALL = 1024  # MIN_BYTES in these tests
N = 512  # float32 elements: 2 KiB, above SMALL


@pytest.fixture
def cache(monkeypatch):
    """An empty cache taking arrays of SMALL bytes and more, with the default limit."""
    monkeypatch.setattr(_outputs, "MIN_BYTES", SMALL)
    monkeypatch.setattr(_outputs, "_buffers", [])
    monkeypatch.delenv("FASTMLP_OUTPUT_CACHE_MB", raising=False)
    _config.reset()
    yield monkeypatch
    _config.reset()


def address(a) -> int:
    return a.__array_interface__["data"][0]


def test_small_outputs_are_plain_arrays(cache):
    a = _outputs.empty(SMALL // 4 - 1, np.float32)
    assert a.flags.owndata and _outputs.cached_bytes() == 0


def test_shape_dtype_and_layout(cache):
    a = _outputs.empty((3, N), np.float64)
    assert a.shape == (3, N) and a.dtype == np.float64 and a.flags.c_contiguous and a.flags.writeable
    assert address(a) % 16 == 0
    b = _outputs.empty(np.int64(N), "float32")
    assert b.shape == (N,) and b.dtype == np.float32


def test_a_freed_output_is_reused(cache):
    a = _outputs.empty(N, np.float32)
    where = address(a)
    del a
    b = _outputs.empty((2, N // 2), np.float32)
    assert address(b) == where and _outputs.cached_bytes() == N * 4


@pytest.mark.parametrize("hold", ["array", "slice", "reshape", "memoryview", "list"])
def test_a_referenced_output_is_never_reused(cache, hold):
    a = _outputs.empty(N, np.float32)
    a[:] = 7
    if hold == "array":
        keep = a
    elif hold == "slice":
        keep = a[5:9]
    elif hold == "reshape":
        keep = a.reshape(2, -1)
    elif hold == "memoryview":
        keep = memoryview(a)
    else:
        keep = [a]
    where = address(a)
    del a
    b = _outputs.empty(N, np.float32)
    b[:] = -1
    assert address(b) != where
    held = np.asarray(keep[0] if hold == "list" else keep)
    assert (held == 7).all()
    del keep, held
    assert address(_outputs.empty(N, np.float32)) == where  # free again, and b still in use


def test_readonly_view_does_not_lock_the_buffer(cache):
    a = _outputs.empty(N, np.float32)
    a.flags.writeable = False
    where = address(a)
    del a
    b = _outputs.empty(N, np.float32)
    assert address(b) == where and b.flags.writeable


def test_the_limit_bounds_the_cache(cache):
    cache.setenv("FASTMLP_OUTPUT_CACHE_MB", "1")
    _config.reset()
    big = (1 << 20) // 4 // 2  # float32 elements of half a MiB
    a, b = _outputs.empty(big, np.float32), _outputs.empty(big, np.float32)
    assert _outputs.cached_bytes() == 1 << 20
    c = _outputs.empty(big, np.float32)  # no room: both cached ones are in use
    assert c.flags.owndata and _outputs.cached_bytes() == 1 << 20
    del a
    d = _outputs.empty(big // 2, np.float32)  # a new size: the free half-MiB buffer is dropped for it
    assert _outputs.cached_bytes() == (1 << 20) // 2 + (1 << 20) // 4
    del b, c, d


def test_zero_turns_the_cache_off(cache):
    cache.setenv("FASTMLP_OUTPUT_CACHE_MB", "0")
    _config.reset()
    a = _outputs.empty(N, np.float32)
    assert a.flags.owndata and _outputs.cached_bytes() == 0


@pytest.mark.parametrize("raw", ["-1", "lots", "1.5"])
def test_a_bad_limit_is_a_clear_error(cache, raw):
    cache.setenv("FASTMLP_OUTPUT_CACHE_MB", raw)
    _config.reset()
    with pytest.raises(ValueError, match="FASTMLP_OUTPUT_CACHE_MB must be a non-negative integer"):
        _outputs.empty(N, np.float32)


def test_empty_cache_releases_only_free_buffers(cache):
    a = _outputs.empty(N, np.float32)
    b = _outputs.empty(2 * N, np.float32)
    del b
    assert fastmlp.empty_cache() == 2 * N * 4
    assert _outputs.cached_bytes() == N * 4
    del a
    assert fastmlp.empty_cache() == N * 4 and _outputs.cached_bytes() == 0


def test_threads_never_share_a_buffer(cache):
    errors = []

    def work(k):
        for i in range(300):
            a = _outputs.empty(N, np.float32)
            a[:] = k
            if i % 7 == 0:  # let another thread run while this one holds its buffer
                threading.Event().wait(0.0001)
            if not (a == k).all():
                errors.append((k, i))
            del a

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _outputs.cached_bytes() <= 6 * N * 4


@pytest.mark.parametrize("name", backend_params())
def test_backend_outputs_stay_independent(cache, name):
    """Two live outputs of the same op never share memory; a dropped one is reused and the
    results still match the reference."""
    be, ref = fastmlp.get_backend(name), fastmlp.get_backend("numpy")
    rng = np.random.default_rng(0)
    Z1, Z2, dY = (rng.standard_normal((7, 300)) for _ in range(3))
    Y1 = be.to_numpy(be.relu_forward(be.asarray(Z1)))
    Y2 = be.to_numpy(be.relu_forward(be.asarray(Z2)))
    assert not np.shares_memory(Y1, Y2)
    np.testing.assert_array_equal(Y1, ref.relu_forward(Z1))
    np.testing.assert_array_equal(Y2, ref.relu_forward(Z2))
    del Y1
    dZ = be.to_numpy(be.relu_backward(be.asarray(dY), be.asarray(Z2), be.asarray(Y2)))
    np.testing.assert_array_equal(dZ, ref.relu_backward(dY, Z2, Y2))
    np.testing.assert_array_equal(Y2, ref.relu_forward(Z2))
