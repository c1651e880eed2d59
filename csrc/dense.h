// fastmlp cpp backend: the dense layer, forward and backward, with the activation fused.
//
// Layout: row-major; X (N, in), W (out, in), b (out), Y (N, out). GEMMs on OpenBLAS, the
// bias and activation in one pass over Y after the GEMM (the epilogue), and in the backward
// the activation gradient in one pass before the two GEMMs.
//
// Rebuild: `pip install -e .` (see docs/cpp.md).
#pragma once

#include "activations.h"

namespace fastmlp {

// Y = act(X W^T + b)   (the course's Z = X W^T + b, then the activation)
template <class T>
void dense_forward(const T* X, const T* W, const T* b, T* Y, i64 N, i64 in, i64 out, Act act, T h1 = T(0),
                   T h2 = T(0)) {
    FtzGuard ftz;
    gemm(false, true, N, out, in, T(1), X, in, W, in, T(0), Y, out);
    with_act<T>(act, h1, h2, [&](auto op) {
        for (i64 r = 0; r < N; ++r) {
            T* y = Y + r * out;
            if (b) {
                for (i64 j = 0; j < out; ++j) y[j] = op.fwd(y[j] + b[j]);
            } else {
                for (i64 j = 0; j < out; ++j) y[j] = op.fwd(y[j]);
            }
        }
    });
}

// dZ = dY * act'(.)  (from Y for the fused activations; Z is only read by the others)
// dW = dZ^T X (overwritten), db = sum_n dZ (overwritten, when given), dX = dZ W (when given).
// dZ_work: N * out scratch, unused (may be null) for the identity.
template <class T>
void dense_backward(const T* dY, const T* X, const T* W, const T* Z, const T* Y, T* dW, T* db, T* dX, T* dZ_work,
                    i64 N, i64 in, i64 out, Act act, T h1 = T(0), T h2 = T(0)) {
    FtzGuard ftz;
    const T* dZ = dY;
    if (act != Act::identity) {
        with_act<T>(act, h1, h2, [&](auto op) {
            const i64 n = N * out;
            for (i64 i = 0; i < n; ++i) dZ_work[i] = op.bwd(dY[i], Z[i], Y[i]);
        });
        dZ = dZ_work;
    }
    gemm(true, false, out, in, N, T(1), dZ, out, X, in, T(0), dW, in);
    if (db) {
        for (i64 j = 0; j < out; ++j) db[j] = dZ[j];
        for (i64 r = 1; r < N; ++r) {
            const T* dz = dZ + r * out;
            for (i64 j = 0; j < out; ++j) db[j] += dz[j];
        }
    }
    if (dX) gemm(false, false, N, in, out, T(1), dZ, out, W, in, T(0), dX, in);
}

}  // namespace fastmlp
