// fastmlp cpp backend: one whole training step (forward, loss, backward, optimizer) of a
// Sequential of dense layers (activation fused) and elementwise activation layers, in one
// native call with no Python between the kernels.
//
//   forward   A_0 = X, A_l = act_l(A_{l-1} W_l^T + b_l) (dense) or act_l(A_{l-1}) (activation)
//   loss      value = sum_n L_n (* 1/count for "mean"), G = dL/dA_L
//   backward  the dense / activation backward of each layer, last to first, writing
//             dW_l, db_l into the flat gradient arena (no dX for the first layer)
//   step      the optimizer's fused pass over the whole flat arena
//
// Threads (csrc/pool.h): one job on the backend's pool. The forward splits each dense layer
// by output units (csrc/dense.h), with a barrier after each layer; then each thread carries its
// rows of the batch through the loss and each layer's activation gradient and dX; a barrier
// before each dense layer's dW/db (which needs every row: split by units), one for the loss
// total and one before the optimizer (split by arena chunks): 2 L + 2 barriers at most.
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

// The rows of the batch one thread carries through the forward pass, the loss and the
// activation gradients; the loss's terms of those rows, summed in double.
template <class T>
double loss_rows(const LossSpec& loss, const T* O, const std::int64_t* labels, const T* target, T* G, i64 rows, i64 C,
                 T r) {
    const i64 numel = rows * C;
    switch (loss.kind) {
        case LossKind::cross_entropy: return cross_entropy_loss(O, labels, target, rows, C, T(loss.h), r, (T*)nullptr, G);
        case LossKind::mse: return mse_loss(O, target, numel, r, (T*)nullptr, G);
        case LossKind::l1: return l1_loss(O, target, numel, r, (T*)nullptr, G);
        case LossKind::huber: return huber_loss(O, target, numel, r, T(loss.h), (T*)nullptr, G);
        case LossKind::bce_with_logits: return bce_with_logits_loss(O, target, numel, r, (T*)nullptr, G);
    }
    return 0.0;
}

// Threads for a step: one per 2^18 multiply-adds of the widest layer's GEMM, at most one per
// row (see dense_threads).
inline int step_threads(i64 N, const std::vector<LayerSpec>& layers) {
    int nt = 1;
    for (const auto& l : layers)
        if (l.kind == 0) nt = std::max(nt, dense_threads(N, l.in, l.out));
    return nt;
}

template <class T>
TrainResult train_step(const T* X, i64 N, const std::vector<LayerSpec>& layers, const LossSpec& loss,
                       const std::int64_t* labels, const T* target, T* params, T* grads, i64 n_params, Opt opt,
                       const double* hyper, i64 step, T* s0, T* s1, T* s2) {
    const i64 L = i64(layers.size());
    i64 widest = layers[0].in;
    i64 total_out = 0;
    for (const auto& l : layers) {
        widest = std::max(widest, l.out);
        total_out += N * l.out;
    }
    // workspace: every layer's output, then two gradient buffers
    static thread_local std::vector<T> ws;
    const i64 need = total_out + 2 * N * widest;
    if (i64(ws.size()) < need) ws.resize(need);
    std::vector<T*> out(L);
    T* cursor = ws.data();
    for (i64 l = 0; l < L; ++l) {
        out[l] = cursor;
        cursor += N * layers[l].out;
    }
    T* const gA = cursor;
    T* const gB = gA + N * widest;

    const i64 C = layers[L - 1].out;
    const double count = loss.kind == LossKind::cross_entropy ? double(N) : double(N * C);
    const T r = loss.mean ? T(1.0 / count) : T(1);
    std::vector<double> part(std::max(1, get_num_threads()), 0.0);
    TrainResult result{0.0, true};
    Pool& pool = Pool::instance();

    pool.run(step_threads(N, layers), [&](int t, int nt) {
        FtzGuard ftz;
        const Range rows = split(N, t, nt);
        const i64 r0 = rows.begin, nr = rows.size();

        // forward: dense layers split by units (dense_forward_part), activation layers by rows;
        // each layer waits for the whole output of the one before
        const T* A = X;
        for (i64 l = 0; l < L; ++l) {
            const LayerSpec& s = layers[l];
            const i64 in = s.in, o = s.out;
            if (l > 0) pool.barrier(nt);
            if (s.kind == 0) {
                dense_forward_part(A, params + s.w_off, s.b_off >= 0 ? params + s.b_off : nullptr, out[l], N, in, o,
                                   s.act, T(s.h1), T(s.h2), t, nt);
            } else {
                activation_forward(s.act, T(s.h1), T(s.h2), A + r0 * in, out[l] + r0 * o, nr * o);
            }
            A = out[l];
        }
        pool.barrier(nt);

        // loss and its gradient into gA, this thread's rows; the total once every part is in
        part[t] = nr > 0 ? loss_rows(loss, A + r0 * C, labels ? labels + r0 : nullptr, target ? target + r0 * C : nullptr,
                                     gA + r0 * C, nr, C, r)
                         : 0.0;
        pool.barrier(nt);
        double sum = 0.0;
        for (int k = 0; k < nt; ++k) sum += part[k];
        const double value = loss.mean ? double(T(sum) / T(count)) : double(T(sum));
        if (!std::isfinite(value)) {  // every thread sees the same value and stops here
            if (t == 0) result = {value, false};
            return;
        }
        if (t == 0) result.value = value;

        // backward: dcur holds dL/d(output of layer l) (own rows ready), dnext receives
        // dL/d(input of layer l); activation layers work in place on dcur.
        T* dcur = gA;
        T* dnext = gB;
        for (i64 l = L - 1; l >= 0; --l) {
            const LayerSpec& s = layers[l];
            const i64 in = s.in, o = s.out;
            const T* input = l == 0 ? X : out[l - 1];
            if (s.kind == 0) {
                // dZ in place in dcur; its barrier also puts every thread past the previous
                // layer's reads of dnext before dX is written there
                dense_backward_part(dcur, input, params + s.w_off, out[l], grads + s.w_off,
                                    s.b_off >= 0 ? grads + s.b_off : nullptr, l > 0 ? dnext : nullptr, dcur, N, in, o,
                                    s.act, T(s.h1), T(s.h2), t, nt);
                if (l > 0) std::swap(dcur, dnext);
            } else if (l > 0) {
                activation_backward(s.act, T(s.h1), T(s.h2), dcur + r0 * o, input + r0 * in, out[l] + r0 * o,
                                    dcur + r0 * o, nr * o);
            }
        }

        // optimizer, this thread's chunk of the arena once every gradient is written
        pool.barrier(nt);
        const Range c = split(n_params, t, nt, 16);
        if (c.size() > 0) {
            auto at = [&](T* p) { return p ? p + c.begin : nullptr; };
            optimizer_step(opt, hyper, step, params + c.begin, grads + c.begin, at(s0), at(s1), at(s2), c.size());
        }
    });
    return result;
}

}  // namespace fastmlp
