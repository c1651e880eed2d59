// fastmlp cpp backend: activation kernels, forward and backward, float and double.
//
// Each activation is a small struct with the scalar math (fwd: z -> y; bwd: (dy, z, y) -> dz),
// mapped over flat arrays by map_forward / map_backward; the kernel functions carry the op
// names of the Python API (relu_forward, relu_backward, ...). Conventions as in
// fastmlp/backends/base.py: the backward gets dY, Z (the input) and Y (the output) and
// returns dZ; parametric activations (prelu, softplus, silu) also reduce d(param).
// Row-wise ops (softmax, log_softmax) run along the last axis of a (rows, C) array.
//
// Rebuild: `pip install -e .` (see docs/cpp.md).
#pragma once

#include "common.h"

namespace fastmlp {

// Activation codes shared with the Python side (fastmlp/backends/cpp_backend.py: _ACT).
enum class Act : int {
    identity = 0, relu = 1, sigmoid = 2, tanh = 3, leaky_relu = 4, elu = 5, selu = 6,
    softsign = 7, log_sigmoid = 8, mish = 9, gelu = 10, gelu_tanh = 11, sinc = 12, step = 13,
    softplus = 14, silu = 15,
};

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kPi = 3.14159265358979323846;

// ---------------------------------------------------------------------------- scalar math
// y = z ; dz = dy
template <class T> struct IdentityOp {
    FASTMLP_INLINE T fwd(T z) const { return z; }
    FASTMLP_INLINE T bwd(T dy, T, T) const { return dy; }
};
// y = max(0, z) ; dz = dy [y > 0]   (0 at the kink, read from Y)
template <class T> struct ReluOp {
    FASTMLP_INLINE T fwd(T z) const { return pos_part(z); }
    FASTMLP_INLINE T bwd(T dy, T, T y) const { return y > T(0) ? dy : T(0); }
};
// y = 1 / (1 + e^{-z}) ; dz = dy y (1 - y)
template <class T> struct SigmoidOp {
    FASTMLP_INLINE T fwd(T z) const { return vsigmoid(z); }
    FASTMLP_INLINE T bwd(T dy, T, T y) const { return dy * y * (T(1) - y); }
};
// y = tanh z ; dz = dy (1 - y^2)
template <class T> struct TanhOp {
    FASTMLP_INLINE T fwd(T z) const { return vtanh(z); }
    FASTMLP_INLINE T bwd(T dy, T, T y) const { return dy * (T(1) - y * y); }
};
// y = z if z > 0 else s z ; dz = dy if z > 0 else s dy
template <class T> struct LeakyReluOp {
    T s;
    FASTMLP_INLINE T fwd(T z) const { return z > T(0) ? z : z * s; }
    FASTMLP_INLINE T bwd(T dy, T z, T) const { return z > T(0) ? dy : dy * s; }
};
// y = c (z if z > 0 else a (e^z - 1)) ; dz = c dy (1 if z > 0 else a e^z)   (elu: c = 1; selu)
template <class T> struct EluOp {
    T a, c;
    FASTMLP_INLINE T fwd(T z) const { return c * (z > T(0) ? z : a * vexpm1(neg_part(z))); }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T e = vexp(neg_part(z));
        return c * (z > T(0) ? dy : dy * a * e);
    }
};
// y = z / (1 + |z|) ; dz = dy / (1 + |z|)^2
template <class T> struct SoftsignOp {
    FASTMLP_INLINE T fwd(T z) const { return z / (T(1) + (z < T(0) ? -z : z)); }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T d = T(1) + (z < T(0) ? -z : z);
        return dy / (d * d);
    }
};
// y = log sigma(z) = min(z, 0) - log(1 + e^{-|z|}) ; dz = dy sigma(-z)
template <class T> struct LogSigmoidOp {
    FASTMLP_INLINE T fwd(T z) const {
        T az = z < T(0) ? -z : z;
        return neg_part(z) - vlog1p(vexp(-az));
    }
    FASTMLP_INLINE T bwd(T dy, T z, T) const { return dy * vsigmoid(-z); }
};
// y = z tanh(softplus z). With e = e^z and n = e (e + 2): tanh(log(1 + e)) = n / (n + 2) and
// 1 - tanh^2 = (4n + 4) / (n + 2)^2 (no cancellation). z is clamped at 20 inside the exp:
// beyond, n / (n + 2) is 1 to the precision of a double.
// dz = dy (t + z sigma(z) (1 - t^2))
template <class T> struct MishOp {
    FASTMLP_INLINE T fwd(T z) const {
        T e = vexp(z < T(20) ? z : T(20));
        T n = e * (e + T(2));
        return z * (n / (n + T(2)));
    }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T e = vexp(z < T(20) ? z : T(20));
        T n = e * (e + T(2));
        T d = n + T(2);
        T t = n / d;
        T s = e / (T(1) + e);  // sigma(z) from the same exp (where z > 20 it multiplies 1 - t^2 = 0)
        return dy * (t + z * s * ((T(4) * n + T(4)) / (d * d)));
    }
};
// y = z Phi(z) = z/2 (1 + erf(z / sqrt 2)) ; dz = dy (Phi(z) + z phi(z)), phi = e^{-z^2/2}/sqrt(2 pi)
template <class T> struct GeluOp {
    FASTMLP_INLINE T fwd(T z) const { return T(0.5) * z * (T(1) + verf(z * T(0.70710678118654752440))); }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T cdf = T(0.5) * (T(1) + verf(z * T(0.70710678118654752440)));
        T pdf = vexp(T(-0.5) * z * z) * T(0.39894228040143267794);
        return dy * (cdf + z * pdf);
    }
};
// y = z/2 (1 + t), t = tanh(k (z + c z^3)), k = sqrt(2/pi), c = 0.044715
// dz = dy (0.5 (1 + t) + 0.5 z (1 - t^2) k (1 + 3 c z^2))
template <class T> struct GeluTanhOp {
    static constexpr T k = T(0.79788456080286535588), c = T(0.044715);
    FASTMLP_INLINE T fwd(T z) const { return T(0.5) * z * (T(1) + vtanh(k * (z + c * z * z * z))); }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T t = vtanh(k * (z + c * z * z * z));
        return dy * (T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * k * (T(1) + T(3) * c * z * z));
    }
};
// u = s z (s = 1, or pi when normalized); y = sin(u) / u (1 at 0);
// dz = s dy (cos u - sin(u)/u) / u, or its series -u/3 + u^3/30 - u^5/840 + u^7/45360 for |u| < 0.1
template <class T> struct SincOp {
    T s;
    FASTMLP_INLINE T fwd(T z) const {
        T u = s * z;
        return u == T(0) ? T(1) : std::sin(u) / u;
    }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T u = s * z;
        T au = u < T(0) ? -u : u;
        T d;
        if (au < T(0.1)) {
            T u2 = u * u;
            d = u * (T(-1.0 / 3) + u2 * (T(1.0 / 30) + u2 * (T(-1.0 / 840) + u2 / T(45360))));
        } else {
            d = (std::cos(u) - std::sin(u) / u) / u;
        }
        return dy * (s * d);
    }
};
// y = 1 if z > 0 else 0 ; dz = 0 (no gradient flows through a step)
template <class T> struct StepOp {
    FASTMLP_INLINE T fwd(T z) const { return z > T(0) ? T(1) : T(0); }
    FASTMLP_INLINE T bwd(T, T, T) const { return T(0); }
};
// y = z if beta z > threshold else log(1 + e^{beta z}) / beta
// dz = dy (1 if linear else sigma(beta z)); dbeta = dy (z sigma(beta z) - y) / beta (0 if linear)
template <class T> struct SoftplusOp {
    T beta, threshold;
    FASTMLP_INLINE T fwd(T z) const {
        T bz = beta * z;
        return bz > threshold ? z : vsoftplus(bz) / beta;
    }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T bz = beta * z;
        return bz > threshold ? dy : dy * vsigmoid(bz);
    }
    FASTMLP_INLINE T dparam(T dy, T z, T y) const {
        T bz = beta * z;
        T v = dy * (z * vsigmoid(bz) - y) / beta;
        return bz > threshold ? T(0) : v;
    }
};
// y = z s, s = sigma(beta z) ; dz = dy (s + beta z s (1 - s)) ; dbeta = dy z^2 s (1 - s)
template <class T> struct SiluOp {
    T beta;
    FASTMLP_INLINE T fwd(T z) const { return z * vsigmoid(beta * z); }
    FASTMLP_INLINE T bwd(T dy, T z, T) const {
        T s = vsigmoid(beta * z);
        return dy * (s + beta * z * s * (T(1) - s));
    }
    FASTMLP_INLINE T dparam(T dy, T z, T) const {
        T s = vsigmoid(beta * z);
        return dy * z * z * s * (T(1) - s);
    }
};

// ---------------------------------------------------------------------------- maps
// The op is copied into a local first: a hyper-parameter read through a reference could alias
// the output (same type), which stops GCC from vectorising the loop.
template <class T, class Op>
void map_forward(const Op& op, const T* Z, T* Y, i64 n) {
    FtzGuard ftz;
    parallel_for(n, [&](i64 a, i64 b) {
        const Op o = op;
        for (i64 i = a; i < b; ++i) Y[i] = o.fwd(Z[i]);
    });
}

template <class T, class Op>
void map_backward(const Op& op, const T* dY, const T* Z, const T* Y, T* dZ, i64 n) {
    FtzGuard ftz;
    parallel_for(n, [&](i64 a, i64 b) {
        const Op o = op;
        for (i64 i = a; i < b; ++i) dZ[i] = o.bwd(dY[i], Z[i], Y[i]);
    });
}

// dZ as map_backward, and returns sum_i op.dparam(dY_i, Z_i, Y_i), accumulated in double:
// blocks of 256 terms go through a small buffer (the loop writing it vectorises) into eight
// independent double accumulators (no reassociation needed, so that loop vectorises too).
template <class T, class Op>
double map_backward_param(const Op& op, const T* dY, const T* Z, const T* Y, T* dZ, i64 n, bool param_grad) {
    FtzGuard ftz;
    if (!param_grad) {
        map_backward(op, dY, Z, Y, dZ, n);
        return 0.0;
    }
    return parallel_sum(n, [&](i64 a, i64 b) {
        const Op o = op;
        constexpr i64 B = 256;
        T buf[B];
        double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (i64 i0 = a; i0 < b; i0 += B) {
            const i64 len = std::min(B, b - i0);
            for (i64 i = 0; i < len; ++i) {
                const i64 k = i0 + i;
                dZ[k] = o.bwd(dY[k], Z[k], Y[k]);
                buf[i] = o.dparam(dY[k], Z[k], Y[k]);
            }
            i64 j = 0;
            for (; j + 8 <= len; j += 8)
                for (int q = 0; q < 8; ++q) acc[q] += double(buf[j + q]);
            for (; j < len; ++j) acc[0] += double(buf[j]);
        }
        return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    });
}

// ---------------------------------------------------------------------------- kernels
template <class T> void relu_forward(const T* Z, T* Y, i64 n) { map_forward(ReluOp<T>{}, Z, Y, n); }
template <class T> void relu_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(ReluOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void sigmoid_forward(const T* Z, T* Y, i64 n) { map_forward(SigmoidOp<T>{}, Z, Y, n); }
template <class T> void sigmoid_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(SigmoidOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void tanh_forward(const T* Z, T* Y, i64 n) { map_forward(TanhOp<T>{}, Z, Y, n); }
template <class T> void tanh_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(TanhOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void leaky_relu_forward(const T* Z, T* Y, i64 n, T slope) { map_forward(LeakyReluOp<T>{slope}, Z, Y, n); }
template <class T> void leaky_relu_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n, T slope) { map_backward(LeakyReluOp<T>{slope}, dY, Z, Y, dZ, n); }
template <class T> void elu_forward(const T* Z, T* Y, i64 n, T alpha) { map_forward(EluOp<T>{alpha, T(1)}, Z, Y, n); }
template <class T> void elu_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n, T alpha) { map_backward(EluOp<T>{alpha, T(1)}, dY, Z, Y, dZ, n); }
template <class T> void selu_forward(const T* Z, T* Y, i64 n) { map_forward(EluOp<T>{T(kSeluAlpha), T(kSeluScale)}, Z, Y, n); }
template <class T> void selu_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(EluOp<T>{T(kSeluAlpha), T(kSeluScale)}, dY, Z, Y, dZ, n); }
template <class T> void softsign_forward(const T* Z, T* Y, i64 n) { map_forward(SoftsignOp<T>{}, Z, Y, n); }
template <class T> void softsign_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(SoftsignOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void log_sigmoid_forward(const T* Z, T* Y, i64 n) { map_forward(LogSigmoidOp<T>{}, Z, Y, n); }
template <class T> void log_sigmoid_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(LogSigmoidOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void mish_forward(const T* Z, T* Y, i64 n) { map_forward(MishOp<T>{}, Z, Y, n); }
template <class T> void mish_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(MishOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void gelu_forward(const T* Z, T* Y, i64 n, bool tanh_approx) {
    if (tanh_approx) map_forward(GeluTanhOp<T>{}, Z, Y, n); else map_forward(GeluOp<T>{}, Z, Y, n);
}
template <class T> void gelu_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n, bool tanh_approx) {
    if (tanh_approx) map_backward(GeluTanhOp<T>{}, dY, Z, Y, dZ, n); else map_backward(GeluOp<T>{}, dY, Z, Y, dZ, n);
}
template <class T> void sinc_forward(const T* Z, T* Y, i64 n, bool normalized) { map_forward(SincOp<T>{normalized ? T(kPi) : T(1)}, Z, Y, n); }
template <class T> void sinc_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n, bool normalized) { map_backward(SincOp<T>{normalized ? T(kPi) : T(1)}, dY, Z, Y, dZ, n); }
template <class T> void step_forward(const T* Z, T* Y, i64 n) { map_forward(StepOp<T>{}, Z, Y, n); }
template <class T> void step_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n) { map_backward(StepOp<T>{}, dY, Z, Y, dZ, n); }
template <class T> void softplus_forward(const T* Z, T* Y, i64 n, T beta, T threshold) { map_forward(SoftplusOp<T>{beta, threshold}, Z, Y, n); }
template <class T> double softplus_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n, T beta, T threshold, bool param_grad) {
    return map_backward_param(SoftplusOp<T>{beta, threshold}, dY, Z, Y, dZ, n, param_grad);
}
template <class T> void silu_forward(const T* Z, T* Y, i64 n, T beta) { map_forward(SiluOp<T>{beta}, Z, Y, n); }
template <class T> double silu_backward(const T* dY, const T* Z, const T* Y, T* dZ, i64 n, T beta, bool param_grad) {
    return map_backward_param(SiluOp<T>{beta}, dY, Z, Y, dZ, n, param_grad);
}

// prelu over (rows, F) with alpha of size A = 1 (shared) or F (per feature, along the last axis).
// y = z if z > 0 else alpha z ; dz = dy if z > 0 else alpha dy ; dalpha = sum (z > 0 ? 0 : dy z)
// (= sum dy min(0, z)). PyTorch's test z > 0: the slope at z = 0 and -0 is alpha; NaN -> NaN.
template <class T> void prelu_forward(const T* Z, const T* alpha, T* Y, i64 rows, i64 F, i64 A) {
    FtzGuard ftz;
    for (i64 r = 0; r < rows; ++r) {
        const T* z = Z + r * F;
        T* y = Y + r * F;
        for (i64 j = 0; j < F; ++j) {
            T a = alpha[A == 1 ? 0 : j];
            y[j] = z[j] > T(0) ? z[j] : a * z[j];
        }
    }
}
// dalpha (size A) is overwritten when given (accumulated in double, per alpha).
template <class T> void prelu_backward(const T* dY, const T* Z, const T* alpha, T* dZ, T* dalpha, i64 rows, i64 F, i64 A) {
    FtzGuard ftz;
    std::vector<double> acc(dalpha ? A : 0, 0.0);
    for (i64 r = 0; r < rows; ++r) {
        const T* z = Z + r * F;
        const T* dy = dY + r * F;
        T* dz = dZ + r * F;
        for (i64 j = 0; j < F; ++j) {
            T a = alpha[A == 1 ? 0 : j];
            dz[j] = z[j] > T(0) ? dy[j] : a * dy[j];
        }
        if (dalpha) {
            for (i64 j = 0; j < F; ++j) acc[A == 1 ? 0 : j] += z[j] > T(0) ? 0.0 : double(dy[j] * z[j]);
        }
    }
    if (dalpha) for (i64 k = 0; k < A; ++k) dalpha[k] = T(acc[k]);
}

// softmax along the last axis of (rows, C): y_i = e^{z_i - max z} / sum_j e^{z_j - max z}
template <class T> void softmax_forward(const T* Z, T* Y, i64 rows, i64 C) {
    FtzGuard ftz;
    for (i64 r = 0; r < rows; ++r) {
        const T* z = Z + r * C;
        T* y = Y + r * C;
        T m = z[0];
        for (i64 j = 1; j < C; ++j) m = z[j] > m ? z[j] : m;
        T s = T(0);
        for (i64 j = 0; j < C; ++j) { y[j] = vexp(z[j] - m); s += y[j]; }
        T inv = T(1) / s;
        for (i64 j = 0; j < C; ++j) y[j] *= inv;
    }
}
// dz = y (dy - sum_j dy_j y_j)
template <class T> void softmax_backward(const T* dY, const T* Y, T* dZ, i64 rows, i64 C) {
    FtzGuard ftz;
    for (i64 r = 0; r < rows; ++r) {
        const T* dy = dY + r * C;
        const T* y = Y + r * C;
        T s = T(0);
        for (i64 j = 0; j < C; ++j) s += dy[j] * y[j];
        for (i64 j = 0; j < C; ++j) dZ[r * C + j] = y[j] * (dy[j] - s);
    }
}
// y_i = z_i - max z - log sum_j e^{z_j - max z}
template <class T> void log_softmax_forward(const T* Z, T* Y, i64 rows, i64 C) {
    FtzGuard ftz;
    for (i64 r = 0; r < rows; ++r) {
        const T* z = Z + r * C;
        T* y = Y + r * C;
        T m = z[0];
        for (i64 j = 1; j < C; ++j) m = z[j] > m ? z[j] : m;
        T s = T(0);
        for (i64 j = 0; j < C; ++j) s += vexp(z[j] - m);
        T lse = m + std::log(s);
        for (i64 j = 0; j < C; ++j) y[j] = z[j] - lse;
    }
}
// dz = dy - e^y sum_j dy_j
template <class T> void log_softmax_backward(const T* dY, const T* Y, T* dZ, i64 rows, i64 C) {
    FtzGuard ftz;
    for (i64 r = 0; r < rows; ++r) {
        const T* dy = dY + r * C;
        const T* y = Y + r * C;
        T s = T(0);
        for (i64 j = 0; j < C; ++j) s += dy[j];
        for (i64 j = 0; j < C; ++j) dZ[r * C + j] = dy[j] - vexp(y[j]) * s;
    }
}

// ---------------------------------------------------------------------------- by code
// The elementwise activations by code, for the dense epilogue and the one-call training step.
// h1, h2: leaky_relu (slope), elu (alpha), sinc (scale: 1 or pi), softplus (beta, threshold),
// silu (beta).
template <class T, class F>
void with_act(Act act, T h1, T h2, F&& f) {
    switch (act) {
        case Act::identity: return f(IdentityOp<T>{});
        case Act::relu: return f(ReluOp<T>{});
        case Act::sigmoid: return f(SigmoidOp<T>{});
        case Act::tanh: return f(TanhOp<T>{});
        case Act::leaky_relu: return f(LeakyReluOp<T>{h1});
        case Act::elu: return f(EluOp<T>{h1, T(1)});
        case Act::selu: return f(EluOp<T>{T(kSeluAlpha), T(kSeluScale)});
        case Act::softsign: return f(SoftsignOp<T>{});
        case Act::log_sigmoid: return f(LogSigmoidOp<T>{});
        case Act::mish: return f(MishOp<T>{});
        case Act::gelu: return f(GeluOp<T>{});
        case Act::gelu_tanh: return f(GeluTanhOp<T>{});
        case Act::sinc: return f(SincOp<T>{h1});
        case Act::step: return f(StepOp<T>{});
        case Act::softplus: return f(SoftplusOp<T>{h1, h2});
        case Act::silu: return f(SiluOp<T>{h1});
    }
    throw std::invalid_argument("unknown activation code");
}

inline bool valid_act(int code) { return code >= 0 && code <= int(Act::silu); }

template <class T> void activation_forward(Act act, T h1, T h2, const T* Z, T* Y, i64 n) {
    with_act<T>(act, h1, h2, [&](auto op) { map_forward(op, Z, Y, n); });
}
template <class T> void activation_backward(Act act, T h1, T h2, const T* dY, const T* Z, const T* Y, T* dZ, i64 n) {
    with_act<T>(act, h1, h2, [&](auto op) { map_backward(op, dY, Z, Y, dZ, n); });
}

}  // namespace fastmlp
