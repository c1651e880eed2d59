// fastmlp cpp backend: loss kernels (value and gradient in one pass), float and double.
//
// Each kernel returns sum_n L_n (accumulated in double), writes the per-element losses to L
// when L is given (reduction "none"), and the gradient G = dL/d(output) * r when G is given,
// r = 1/count for "mean", 1 otherwise (chosen by the caller).
//
// Rebuild: `pip install -e .` (see docs/cpp.md).
#pragma once

#include "common.h"

namespace fastmlp {

// L = (o - t)^2 ; G = 2 (o - t) r
template <class T>
double mse_loss(const T* O, const T* Tg, i64 n, T r, T* L, T* G) {
    FtzGuard ftz;
    double s = 0.0;
    for (i64 i = 0; i < n; ++i) {
        T d = O[i] - Tg[i];
        T l = d * d;
        if (L) L[i] = l;
        if (G) G[i] = d * (T(2) * r);
        s += double(l);
    }
    return s;
}

// L = |o - t| ; G = sign(o - t) r   (0 at 0)
template <class T>
double l1_loss(const T* O, const T* Tg, i64 n, T r, T* L, T* G) {
    FtzGuard ftz;
    double s = 0.0;
    for (i64 i = 0; i < n; ++i) {
        T d = O[i] - Tg[i];
        T l = d < T(0) ? -d : d;
        if (L) L[i] = l;
        if (G) G[i] = (d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0))) * r;
        s += double(l);
    }
    return s;
}

// L = d^2/2 if |d| <= delta else delta (|d| - delta/2) ; G = clip(d, -delta, delta) r
template <class T>
double huber_loss(const T* O, const T* Tg, i64 n, T r, T delta, T* L, T* G) {
    FtzGuard ftz;
    double s = 0.0;
    for (i64 i = 0; i < n; ++i) {
        T d = O[i] - Tg[i];
        T a = d < T(0) ? -d : d;
        T l = a <= delta ? T(0.5) * d * d : delta * (a - T(0.5) * delta);
        if (L) L[i] = l;
        if (G) G[i] = (d > delta ? delta : (d < -delta ? -delta : d)) * r;
        s += double(l);
    }
    return s;
}

// Softmax cross-entropy from logits Z (N, C): logp = z - logsumexp(z);
// L_n = -sum_c q_nc logp_nc with q = one-hot(labels) or probs P, smoothed q = (1 - ls) q + ls / C;
// G = (softmax(z) - q) r. Exactly one of labels / P is given.
template <class T>
double cross_entropy_loss(const T* Z, const std::int64_t* labels, const T* P, i64 N, i64 C, T ls, T r, T* L,
                          T* G) {
    FtzGuard ftz;
    double total = 0.0;
    const T off = ls / T(C), on = T(1) - ls;
    for (i64 n = 0; n < N; ++n) {
        const T* z = Z + n * C;
        T m = z[0];
        for (i64 j = 1; j < C; ++j) m = z[j] > m ? z[j] : m;
        T s = T(0);
        for (i64 j = 0; j < C; ++j) s += vexp(z[j] - m);
        T lse = m + std::log(s);
        T l = T(0);
        if (labels) {
            const i64 t = labels[n];
            T sum_logp = T(0);
            if (ls != T(0)) for (i64 j = 0; j < C; ++j) sum_logp += z[j] - lse;
            l = -(on * (z[t] - lse)) - off * sum_logp;
            if (G) {
                T* g = G + n * C;
                for (i64 j = 0; j < C; ++j) g[j] = (vexp(z[j] - lse) - off) * r;
                g[t] -= on * r;
            }
        } else {
            const T* p = P + n * C;
            for (i64 j = 0; j < C; ++j) l -= (on * p[j] + off) * (z[j] - lse);
            if (G) {
                T* g = G + n * C;
                for (i64 j = 0; j < C; ++j) g[j] = (vexp(z[j] - lse) - (on * p[j] + off)) * r;
            }
        }
        if (L) L[n] = l;
        total += double(l);
    }
    return total;
}

// From log-probabilities (N, C): L_n = -logp[n, t_n] ; G = -one-hot(t) r
template <class T>
double nll_loss(const T* LP, const std::int64_t* labels, i64 N, i64 C, T r, T* L, T* G) {
    double total = 0.0;
    if (G) std::fill(G, G + N * C, T(0));
    for (i64 n = 0; n < N; ++n) {
        T l = -LP[n * C + labels[n]];
        if (L) L[n] = l;
        if (G) G[n * C + labels[n]] = -r;
        total += double(l);
    }
    return total;
}

// L = max(z, 0) - z t + log(1 + e^{-|z|}) ; G = (sigma(z) - t) r
template <class T>
double bce_with_logits_loss(const T* Zl, const T* Tg, i64 n, T r, T* L, T* G) {
    FtzGuard ftz;
    double s = 0.0;
    for (i64 i = 0; i < n; ++i) {
        T z = Zl[i], az = z < T(0) ? -z : z;
        T l = pos_part(z) - z * Tg[i] + vlog1p(vexp(-az));
        if (L) L[i] = l;
        if (G) G[i] = (vsigmoid(z) - Tg[i]) * r;
        s += double(l);
    }
    return s;
}

// L = -(t log p + (1 - t) log(1 - p)), each log clamped at -100 ;
// G = (p - t) / max(p (1 - p), 1e-12) r   (PyTorch's rules)
template <class T>
double bce_loss(const T* Pr, const T* Tg, i64 n, T r, T* L, T* G) {
    FtzGuard ftz;
    double s = 0.0;
    for (i64 i = 0; i < n; ++i) {
        T p = Pr[i], t = Tg[i];
        T lp = std::max(std::log(p), T(-100));
        T l1p = std::max(std::log1p(-p), T(-100));
        T l = -(t * lp + (T(1) - t) * l1p);
        if (L) L[i] = l;
        if (G) G[i] = (p - t) / std::max(p * (T(1) - p), T(1e-12)) * r;
        s += double(l);
    }
    return s;
}

}  // namespace fastmlp
