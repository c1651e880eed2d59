// fastmlp cpp backend: one whole training step (forward, loss, backward, optimizer) of a
// Sequential of dense layers (activation fused) and elementwise activation layers, in one
// native call with no Python between the kernels.
//
//   forward   A_0 = X, A_l = act_l(A_{l-1} W_l^T + b_l) (dense) or act_l(A_{l-1}) (activation)
//   loss      value = sum_n L_n (* 1/count for "mean"), G = dL/dA_L
//   backward  the dense_backward / activation backward of each layer, last to first, writing
//             dW_l, db_l into the flat gradient arena (no dX for the first layer)
//   step      the optimizer's fused pass over the whole flat arena
//
// The layer list mirrors Sequential._plan (fastmlp/layers.py); cpp_backend.py builds it and
// the binding validates it (offsets inside the arena, widths chained) before calling here.
// If the loss is NaN or infinite nothing is written to the gradients or parameters.
//
// Rebuild: `pip install -e .` (see docs/cpp.md).
#pragma once

#include "dense.h"
#include "losses.h"
#include "optimizers.h"

namespace fastmlp {

struct LayerSpec {
    int kind;        // 0: dense, 1: activation
    i64 in, out;     // widths (equal for an activation)
    i64 w_off;       // dense: offset of W (out, in) in the arena
    i64 b_off;       // dense: offset of b (out), or -1 without bias
    Act act;         // dense: the fused activation; activation layer: the activation
    double h1, h2;   // activation hyper-parameters (see with_act)
};

enum class LossKind : int { cross_entropy = 0, mse = 1, l1 = 2, huber = 3, bce_with_logits = 4 };

struct LossSpec {
    LossKind kind;
    bool mean;       // "mean" (else "sum")
    double h;        // cross_entropy: label smoothing; huber: delta
};

struct TrainResult {
    double value;
    bool finite;
};

template <class T>
TrainResult train_step(const T* X, i64 N, const std::vector<LayerSpec>& layers, const LossSpec& loss,
                       const std::int64_t* labels, const T* target, T* params, T* grads, i64 n_params, Opt opt,
                       const double* hyper, i64 step, T* s0, T* s1, T* s2) {
    FtzGuard ftz;
    const i64 L = i64(layers.size());
    i64 widest = layers[0].in;
    i64 total_out = 0;
    for (const auto& l : layers) {
        widest = std::max(widest, l.out);
        total_out += N * l.out;
    }
    // workspace: every layer's output, then two gradient buffers and the dense dZ scratch
    static thread_local std::vector<T> ws;
    const i64 need = total_out + 3 * N * widest;
    if (i64(ws.size()) < need) ws.resize(need);
    std::vector<T*> out(L);
    T* cursor = ws.data();
    for (i64 l = 0; l < L; ++l) {
        out[l] = cursor;
        cursor += N * layers[l].out;
    }
    T* gA = cursor;
    T* gB = gA + N * widest;
    T* scratch = gB + N * widest;

    // forward
    const T* A = X;
    for (i64 l = 0; l < L; ++l) {
        const LayerSpec& s = layers[l];
        if (s.kind == 0) {
            dense_forward(A, params + s.w_off, s.b_off >= 0 ? params + s.b_off : nullptr, out[l], N, s.in, s.out, s.act,
                          T(s.h1), T(s.h2));
        } else {
            activation_forward(s.act, T(s.h1), T(s.h2), A, out[l], N * s.out);
        }
        A = out[l];
    }

    // loss and its gradient
    const i64 C = layers[L - 1].out;
    const i64 numel = N * C;
    const double count = loss.kind == LossKind::cross_entropy ? double(N) : double(numel);
    const T r = loss.mean ? T(1.0 / count) : T(1);
    double sum = 0.0;
    switch (loss.kind) {
        case LossKind::cross_entropy:
            sum = cross_entropy_loss(A, labels, target, N, C, T(loss.h), r, (T*)nullptr, gA);
            break;
        case LossKind::mse: sum = mse_loss(A, target, numel, r, (T*)nullptr, gA); break;
        case LossKind::l1: sum = l1_loss(A, target, numel, r, (T*)nullptr, gA); break;
        case LossKind::huber: sum = huber_loss(A, target, numel, r, T(loss.h), (T*)nullptr, gA); break;
        case LossKind::bce_with_logits: sum = bce_with_logits_loss(A, target, numel, r, (T*)nullptr, gA); break;
    }
    const double value = loss.mean ? double(T(sum) / T(count)) : double(T(sum));
    if (!std::isfinite(value)) return {value, false};

    // backward
    T* dY = gA;
    T* dX = gB;
    for (i64 l = L - 1; l >= 0; --l) {
        const LayerSpec& s = layers[l];
        const T* input = l == 0 ? X : out[l - 1];
        if (s.kind == 0) {
            dense_backward(dY, input, params + s.w_off, out[l], out[l], grads + s.w_off,
                           s.b_off >= 0 ? grads + s.b_off : nullptr, l > 0 ? dX : nullptr, scratch, N, s.in, s.out,
                           s.act, T(s.h1), T(s.h2));
        } else if (l > 0) {
            activation_backward(s.act, T(s.h1), T(s.h2), dY, input, out[l], dX, N * s.out);
        }
        std::swap(dY, dX);
    }

    // optimizer
    optimizer_step(opt, hyper, step, params, grads, s0, s1, s2, n_params);
    return {value, true};
}

}  // namespace fastmlp
