// fastmlp cpp backend: the dense layer, forward and backward, with the activation fused.
//
// Layout: row-major; X (N, in), W (out, in), b (out), Y (N, out). GEMMs on OpenBLAS (one
// thread: the pool of csrc/pool.h splits them), the bias and activation in one pass over Y
// after the GEMM (the epilogue), and in the backward the activation gradient in one pass
// before the two GEMMs.
//
// The pieces each thread runs, on its part of the work (the training step calls them inside
// its own job): the forward by output units (by rows for narrow layers), dX by rows of the
// batch (row n of dX needs row n of dZ only), dW and db by output units
// (dW[u] = sum_n dZ[n, u] X[n]), or by input columns when there are too few units to share.
// dense_forward / dense_backward run them on the pool.
//
// Rebuild: `pip install -e .` (see docs/cpp.md).
#pragma once

#include "activations.h"

namespace fastmlp {

// Y[:, u0:u1] = act(X W[u0:u1]^T + b[u0:u1])   (the course's Z = X W^T + b, then the
// activation): the GEMM on `rows` rows and a block of units, then the bias and activation over
// that block (the epilogue).
template <class T>
void dense_forward_block(const T* X, const T* W, const T* b, T* Y, i64 rows, i64 in, i64 out, Range u, Act act, T h1,
                         T h2) {
    const i64 nu = u.size();
    if (rows <= 0 || nu <= 0) return;
    gemm(false, true, rows, nu, in, T(1), X, in, W + u.begin * in, in, T(0), Y + u.begin, out);
    with_act<T>(act, h1, h2, [&](auto op) {
        for (i64 r = 0; r < rows; ++r) {
            T* y = Y + r * out + u.begin;
            if (b) {
                const T* bb = b + u.begin;
                for (i64 j = 0; j < nu; ++j) y[j] = op.fwd(y[j] + bb[j]);
            } else {
                for (i64 j = 0; j < nu; ++j) y[j] = op.fwd(y[j]);
            }
        }
    });
}

// Part t of nt of the dense forward: by output units when each thread gets at least 16 (with
// W in its (out, in) layout, OpenBLAS runs X W^T on half the units in 55 % of the full time, on
// half the rows in 73 %: 784-128, batch 64, one thread), else by rows.
template <class T>
void dense_forward_part(const T* X, const T* W, const T* b, T* Y, i64 N, i64 in, i64 out, Act act, T h1, T h2, int t,
                        int nt) {
    if (out >= 16 * nt) {
        dense_forward_block(X, W, b, Y, N, in, out, split(out, t, nt, 16), act, h1, h2);
    } else {
        const Range r = split(N, t, nt);
        dense_forward_block(X + r.begin * in, W, b, Y + r.begin * out, r.size(), in, out, Range{0, out}, act, h1, h2);
    }
}

// dZ = dY * act'(Y) over n elements (dZ may be dY: in place). The fused activations' gradient
// needs Y only.
template <class T>
void dense_act_grad(const T* dY, const T* Y, T* dZ, i64 n, Act act, T h1, T h2) {
    with_act<T>(act, h1, h2, [&](auto op) {
        for (i64 i = 0; i < n; ++i) dZ[i] = op.bwd(dY[i], Y[i], Y[i]);
    });
}

// Part t of nt of dW = dZ^T X (overwritten) and db = sum_n dZ (overwritten, when given), dZ
// (N, out) complete. By units when each thread gets at least 8, else by input columns (db on
// part 0).
template <class T>
void dense_weight_grad(const T* dZ, const T* X, T* dW, T* db, i64 N, i64 in, i64 out, int t, int nt) {
    if (out >= 8 * nt || nt == 1) {
        const Range u = split(out, t, nt, 8);
        if (u.size() <= 0) return;
        gemm(true, false, u.size(), in, N, T(1), dZ + u.begin, out, X, in, T(0), dW + u.begin * in, in);
        if (db) {
            T* d = db + u.begin;
            for (i64 j = 0; j < u.size(); ++j) d[j] = dZ[u.begin + j];
            for (i64 r = 1; r < N; ++r) {
                const T* dz = dZ + r * out + u.begin;
                for (i64 j = 0; j < u.size(); ++j) d[j] += dz[j];
            }
        }
        return;
    }
    const Range c = split(in, t, nt, 16);
    if (c.size() > 0) gemm(true, false, out, c.size(), N, T(1), dZ, out, X + c.begin, in, T(0), dW + c.begin, in);
    if (db && t == 0) {
        for (i64 j = 0; j < out; ++j) db[j] = dZ[j];
        for (i64 r = 1; r < N; ++r)
            for (i64 j = 0; j < out; ++j) db[j] += dZ[r * out + j];
    }
}

// Rows of dX = dZ W; dZ and dX point at the first of the `rows` rows.
template <class T>
void dense_input_grad_rows(const T* dZ, const T* W, T* dX, i64 rows, i64 in, i64 out) {
    if (rows > 0) gemm(false, false, rows, in, out, T(1), dZ, out, W, in, T(0), dX, in);
}

// Threads for a dense layer of this size: one per 2^18 multiply-adds (a thread's share of a
// smaller GEMM costs less than waking it), at most one per row.
inline int dense_threads(i64 N, i64 in, i64 out) {
    const i64 work = N * in * out >> 18;
    return int(std::max<i64>(1, std::min<i64>({i64(get_num_threads()), work, N})));
}

// Y = act(X W^T + b)
template <class T>
void dense_forward(const T* X, const T* W, const T* b, T* Y, i64 N, i64 in, i64 out, Act act, T h1 = T(0),
                   T h2 = T(0)) {
    Pool::instance().run(dense_threads(N, in, out), [&](int t, int nt) {
        FtzGuard ftz;
        dense_forward_part(X, W, b, Y, N, in, out, act, h1, h2, t, nt);
    });
}

// Part t of nt of the dense backward: dZ = dY * act'(Y) on this thread's rows (into dZ, which
// may be dY itself; unused for the identity), a barrier, then this thread's part of dW = dZ^T X
// and db = sum_n dZ (overwritten; db when given) and its rows of dX = dZ W (when given).
template <class T>
void dense_backward_part(const T* dY, const T* X, const T* W, const T* Y, T* dW, T* db, T* dX, T* dZ, i64 N, i64 in,
                         i64 out, Act act, T h1, T h2, int t, int nt) {
    const Range r = split(N, t, nt);
    const T* g = dY;
    if (act != Act::identity) {
        dense_act_grad(dY + r.begin * out, Y + r.begin * out, dZ + r.begin * out, r.size() * out, act, h1, h2);
        g = dZ;
    }
    Pool::instance().barrier(nt);
    dense_weight_grad(g, X, dW, db, N, in, out, t, nt);
    if (dX) dense_input_grad_rows(g + r.begin * out, W, dX + r.begin * in, r.size(), in, out);
}

// dZ = dY * act'(Y); dW = dZ^T X (overwritten), db = sum_n dZ (overwritten, when given),
// dX = dZ W (when given). dZ_work: N * out scratch, unused (may be null) for the identity.
template <class T>
void dense_backward(const T* dY, const T* X, const T* W, const T* Y, T* dW, T* db, T* dX, T* dZ_work, i64 N, i64 in,
                    i64 out, Act act, T h1 = T(0), T h2 = T(0)) {
    Pool::instance().run(dense_threads(N, in, out), [&](int t, int nt) {
        FtzGuard ftz;
        dense_backward_part(dY, X, W, Y, dW, db, dX, dZ_work, N, in, out, act, h1, h2, t, nt);
    });
}

}  // namespace fastmlp
