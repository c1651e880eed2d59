"""The numba backend's training step on numba's thread pool: ``train_step_pool``.

What
    The same step as ``_numba_kernels.train_step`` (forward, loss, backward, optimizer; same
    arguments, same buffers, same result), with every stage split across ``nt`` threads by
    ``prange``: each thread runs the serial kernels of ``_numba_kernels`` on its block and calls
    BLAS itself (:func:`gemm`, on strided blocks, no copies) with SciPy's BLAS held at one
    thread by the caller. One pool owns both cores: the serial step instead calls the GEMMs on
    SciPy's OpenBLAS threads and runs everything else on one core.

How the work is split (one parallel region per stage, the region's end is the barrier)
    forward, layer l   Y = act(A W^T + b): by output units (each thread Y[:, j0:j1] from
                       W[j0:j1]) when the layer has at least ``16 nt`` units, else by rows;
                       by rows too when a separate activation layer follows (flat row slices).
    loss               by rows: each thread its rows' losses (float64 partial sums) and G.
    backward, layer l  [separate activation: dZ = dY act'(Z) by rows]
                       wide: dZ = dY act'(Y), db = sum_n dZ and dW = dZ^T A by units, one region
                       (each thread owns its columns of dZ); then dX = dZ W by rows.
                       narrow (< 16 nt units): dZ and db by units; then dW = dZ^T A by input
                       columns and dX by rows in one region.
    optimizer          by blocks of the flat arena.
    Per-column sums run over n in order, as in the serial kernel, so db is the serial db.

Rebuild and cache as for ``_numba_kernels`` (its ``FLAGS``, plus ``parallel=True``).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import prange
from numba.extending import overload
from numba.np.linalg import _BLAS

from . import _numba_kernels as K

pool_kernel = numba.njit(parallel=True, **K.FLAGS)

#: a layer is split by units when it has at least this many per thread (cpp: dense.h)
UNITS_PER_THREAD = 16


# ============================================================================ GEMM on views
def gemm(A, trans_a, B, trans_b, C):
    """``C = op(A) op(B)`` with ``op(M) = M^T`` when ``trans_*``, for 2-D row-major views with
    unit inner stride (row blocks, column blocks of C-contiguous arrays). As plain Python (and
    under ``NUMBA_DISABLE_JIT``) it is ``np.matmul``; jitted it is one BLAS ``?gemm`` on the
    views' memory, with their row strides as leading dimensions, so no block is copied."""
    np.matmul(A.T if trans_a else A, B.T if trans_b else B, out=C)


_XXGEMM = {np.float32: _BLAS().numba_xxgemm(numba.float32), np.float64: _BLAS().numba_xxgemm(numba.float64)}
_N, _T = ord("n"), ord("t")


@overload(gemm)
def _gemm_blas(A, trans_a, B, trans_b, C):
    dtype = C.dtype
    xxgemm = _XXGEMM[np.float32 if dtype == numba.float32 else np.float64]
    kind = ord("s" if dtype == numba.float32 else "d")
    np_dtype = np.float32 if dtype == numba.float32 else np.float64

    def impl(A, trans_a, B, trans_b, C):
        m, n = C.shape
        k = A.shape[0] if trans_a else A.shape[1]
        if m == 0 or n == 0:
            return
        if k == 0:
            C[:] = 0
            return
        size = C.itemsize
        # BLAS is column-major: C^T (n x m) = op(B)^T (n x k) op(A)^T (k x m); a row-major view
        # is its transpose in column-major order, with the row stride as leading dimension
        # (at least the row length, which a one-row view's stride may not say).
        lda = max(A.strides[0] // size, A.shape[1], 1)
        ldb = max(B.strides[0] // size, B.shape[1], 1)
        ldc = max(C.strides[0] // size, n, 1)
        one = np.ones(1, np_dtype)
        zero = np.zeros(1, np_dtype)
        xxgemm(kind, _T if trans_b else _N, _T if trans_a else _N, n, m, k,
               one.ctypes, B.ctypes, ldb, A.ctypes, lda, zero.ctypes, C.ctypes, ldc)

    return impl


# ============================================================================ the step
@K.helper
def _block(t, nt, n):
    # [a, b): block t of n items in nt near-equal blocks
    return t * n // nt, (t + 1) * n // nt


@K.helper
def _slice(a, lo, hi):
    # a[lo:hi], or a itself when it is an unused (empty) state buffer
    return a[lo:hi] if a.size > 0 else a


@pool_kernel
def train_step_pool(X, labels, T, loss, ls, r, layers, hyper, consts, params, grads, Zbuf, Ybuf,
                    D0, D1, opt, s1, s2, s3, c, nt):
    """``_numba_kernels.train_step`` on ``nt`` threads (same arguments, then ``nt``)."""
    N = X.shape[0]
    nl = layers.shape[0]
    empty = params[:0]
    split_units = UNITS_PER_THREAD * nt
    # forward
    for l in range(nl):
        w_off, b_off, n_in, n_out, act, z_off, y_off = (
            layers[l, 0], layers[l, 1], layers[l, 2], layers[l, 3], layers[l, 4], layers[l, 5],
            layers[l, 6])
        W = params[w_off:w_off + n_out * n_in].reshape((n_out, n_in))
        b = params[b_off:b_off + n_out] if b_off >= 0 else empty
        Y = Ybuf[y_off:y_off + N * n_out].reshape((N, n_out))
        if l > 0:
            p_off, p_out = layers[l - 1, 6], layers[l - 1, 3]
            A = Ybuf[p_off:p_off + N * p_out].reshape((N, p_out))
        else:
            A = X
        if z_off >= 0:  # separate activation layer: Z = A W^T + b, then Y = act(Z), by rows
            Zf = Zbuf[z_off:z_off + N * n_out]
            Z = Zf.reshape((N, n_out))
            Yf = Ybuf[y_off:y_off + N * n_out]
            for t in prange(nt):
                r0, r1 = _block(t, nt, N)
                gemm(A[r0:r1], False, W, True, Z[r0:r1])
                K._bias_activation(Z[r0:r1], b, K.ACT_IDENTITY)
                K._activation_forward(act, Zf[r0 * n_out:r1 * n_out], Yf[r0 * n_out:r1 * n_out],
                                      hyper[l, 0], hyper[l, 1], consts)
        elif n_out >= split_units:
            for t in prange(nt):
                j0, j1 = _block(t, nt, n_out)
                gemm(A, False, W[j0:j1], True, Y[:, j0:j1])
                K._bias_activation(Y[:, j0:j1], b[j0:j1] if b.size > 0 else b, act)
        else:
            for t in prange(nt):
                r0, r1 = _block(t, nt, N)
                gemm(A[r0:r1], False, W, True, Y[r0:r1])
                K._bias_activation(Y[r0:r1], b, act)
    # loss and its gradient, into D0, by rows
    C = layers[nl - 1, 3]
    last = layers[nl - 1, 6]
    O = Ybuf[last:last + N * C].reshape((N, C))
    G = D0[:N * C].reshape((N, C))
    part = np.zeros(nt, np.float64)
    for t in prange(nt):
        r0, r1 = _block(t, nt, N)
        if loss == K.LOSS_CROSS_ENTROPY:
            part[t] = K.cross_entropy_loss(O[r0:r1], labels[r0:r1], O[r0:r1], False, ls, r, True,
                                           empty, G[r0:r1])
        else:
            part[t] = K.mse_loss(O[r0:r1].reshape(-1), T[r0:r1].reshape(-1), r, True, empty,
                                 G[r0:r1].reshape(-1))
    total = part.sum()
    if not np.isfinite(total):
        return total
    # backward
    dcur, dnext = D0, D1
    for l in range(nl - 1, -1, -1):
        w_off, b_off, n_in, n_out, act, z_off, y_off = (
            layers[l, 0], layers[l, 1], layers[l, 2], layers[l, 3], layers[l, 4], layers[l, 5],
            layers[l, 6])
        W = params[w_off:w_off + n_out * n_in].reshape((n_out, n_in))
        dW = grads[w_off:w_off + n_out * n_in].reshape((n_out, n_in))
        db = grads[b_off:b_off + n_out] if b_off >= 0 else empty
        Y = Ybuf[y_off:y_off + N * n_out].reshape((N, n_out))
        dYf = dcur[:N * n_out]
        dY = dYf.reshape((N, n_out))
        if l > 0:
            p_off, p_out = layers[l - 1, 6], layers[l - 1, 3]
            A = Ybuf[p_off:p_off + N * p_out].reshape((N, p_out))
        else:
            A = X
        dX = dnext[:N * n_in].reshape((N, n_in)) if l > 0 else empty.reshape((0, 0))
        code = act
        if z_off >= 0:  # dZ = dY act'(Z) of the separate activation layer, by rows, in place
            Zf = Zbuf[z_off:z_off + N * n_out]
            Yf = Ybuf[y_off:y_off + N * n_out]
            for t in prange(nt):
                r0, r1 = _block(t, nt, N)
                s = slice(r0 * n_out, r1 * n_out)
                K._activation_backward(act, dYf[s], Zf[s], Yf[s], dYf[s], hyper[l, 0], hyper[l, 1],
                                       consts)
            code = K.ACT_IDENTITY
        wide = n_out >= split_units
        # dZ = dY act'(Y) in place and db, by units; dW by units too when wide
        for t in prange(nt):
            j0, j1 = _block(t, nt, n_out)
            K._activation_grad_bias_grad(dY[:, j0:j1], Y[:, j0:j1], code, dY[:, j0:j1],
                                         db[j0:j1] if db.size > 0 else db)
            if wide:
                gemm(dY[:, j0:j1], True, A, False, dW[j0:j1])
        # dX = dZ W by rows; dW = dZ^T A by input columns when narrow
        if l > 0 or not wide:
            for t in prange(nt):
                if not wide:
                    k0, k1 = _block(t, nt, n_in)
                    gemm(dY, True, A[:, k0:k1], False, dW[:, k0:k1])
                if l > 0:
                    r0, r1 = _block(t, nt, N)
                    gemm(dY[r0:r1], False, W, False, dX[r0:r1])
        dcur, dnext = dnext, dcur
    # optimizer, by blocks of the arena
    P = params.size
    for t in prange(nt):
        a, z = _block(t, nt, P)
        K._optimizer_step(opt, params[a:z], grads[a:z], _slice(s1, a, z), _slice(s2, a, z),
                          _slice(s3, a, z), c)
    return total
