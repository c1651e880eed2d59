// fastmlp cpp backend: optimizer steps, each one pass over the flat parameter arena.
//
// p (parameters) and the state buffers are updated in place; g is only read. Every step
// reads p, g and the state once and writes p and the state once (apex multi_tensor_adam
// style). Scalars that depend only on the step (bias corrections, decayed rates) are
// computed once, in double, outside the loop. Formulas: PyTorch 2.x (torch.optim), plus the
// course's variants; the reference is fastmlp/backends/base.py. Unused buffers are null.
//
// `#pragma GCC ivdep` on each loop: the bindings reject overlapping buffers, and without the
// pragma GCC gives up vectorising when five pointers need more runtime alias checks than it
// versions (AMSGrad and centered RMSprop with momentum ran at half Adam's speed).
//
// Rebuild: `pip install -e .` (see docs/cpp.md).
#pragma once

#include "common.h"

namespace fastmlp {

// g' = g + wd p; momentum: buf = g' (step 1) or mu buf + (1 - dampening) g';
// g' = g' + mu buf (Nesterov) or buf; p -= lr g'
template <class T>
void sgd_step(T* p, const T* g, T* buf, i64 n, double lr, i64 step, double momentum, double dampening,
              bool nesterov, double weight_decay) {
    FtzGuard ftz;
    const T lr_ = T(lr), mu = T(momentum), damp = T(1 - dampening), wd = T(weight_decay);
    const bool first = step == 1;
    with_flag(weight_decay != 0.0, [&](auto WD) {
    with_flag(buf != nullptr, [&](auto MOM) {
    with_flag(nesterov, [&](auto NEST) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T gi = g[i];
                if constexpr (WD) gi += wd * p[i];
                if constexpr (MOM) {
                    T m = first ? gi : mu * buf[i] + damp * gi;
                    buf[i] = m;
                    if constexpr (NEST) gi = gi + mu * m; else gi = m;
                }
                p[i] -= lr_ * gi;
            }
        });
    }); }); });
}

// m = beta m + (1 - beta) g'; u = m or (Nesterov) beta m + (1 - beta) g';
// p -= lr / (1 - beta^t) u   (lr u without bias correction)
template <class T>
void momentum_step(T* p, const T* g, T* m, i64 n, double lr, i64 step, double beta, bool bias_correction,
                   bool nesterov, double weight_decay) {
    FtzGuard ftz;
    const T bt = T(beta), omb = T(1 - beta), wd = T(weight_decay);
    const T scale = T(bias_correction ? lr / (1 - std::pow(beta, double(step))) : lr);
    with_flag(weight_decay != 0.0, [&](auto WD) {
    with_flag(nesterov, [&](auto NEST) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T gi = g[i];
                if constexpr (WD) gi += wd * p[i];
                T mi = bt * m[i] + omb * gi;
                m[i] = mi;
                T u = mi;
                if constexpr (NEST) u = bt * mi + omb * gi;
                p[i] -= scale * u;
            }
        });
    }); });
}

// s += g'^2; p -= lr / (1 + (t - 1) lr_decay) g' / (sqrt(s + eps_root) + eps)
template <class T>
void adagrad_step(T* p, const T* g, T* s, i64 n, double lr, i64 step, double lr_decay, double weight_decay,
                  double eps, double eps_root) {
    FtzGuard ftz;
    const T clr = T(lr / (1 + double(step - 1) * lr_decay)), wd = T(weight_decay), e = T(eps), er = T(eps_root);
    with_flag(weight_decay != 0.0, [&](auto WD) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T gi = g[i];
                if constexpr (WD) gi += wd * p[i];
                T si = s[i] + gi * gi;
                s[i] = si;
                p[i] -= clr * gi / (std::sqrt(si + er) + e);
            }
        });
    });
}

// v = alpha v + (1 - alpha) g'^2; centered: a = alpha a + (1 - alpha) g', v~ = v c - (a c)^2
// with c = 1 / (1 - alpha^t) (bias correction) or 1; d = sqrt(v~ + eps_root) + eps;
// momentum: buf = mu buf + g' / d, p -= lr buf; else p -= lr g' / d
template <class T>
void rmsprop_step(T* p, const T* g, T* v, T* ga, T* buf, i64 n, double lr, i64 step, double alpha, double eps,
                  double weight_decay, double momentum, bool centered, bool bias_correction, double eps_root) {
    FtzGuard ftz;
    const T al = T(alpha), oma = T(1 - alpha), wd = T(weight_decay), e = T(eps), er = T(eps_root);
    const T c = T(bias_correction ? 1 / (1 - std::pow(alpha, double(step))) : 1.0);
    const T lr_ = T(lr), mu = T(momentum);
    with_flag(weight_decay != 0.0, [&](auto WD) {
    with_flag(centered, [&](auto CEN) {
    with_flag(bias_correction, [&](auto BC) {
    with_flag(buf != nullptr, [&](auto MOM) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T gi = g[i];
                if constexpr (WD) gi += wd * p[i];
                T vi = al * v[i] + oma * gi * gi;
                v[i] = vi;
                T vt = vi;
                if constexpr (BC) vt = vi * c;
                if constexpr (CEN) {
                    T ai = al * ga[i] + oma * gi;
                    ga[i] = ai;
                    T at = ai;
                    if constexpr (BC) at = ai * c;
                    vt = vt - at * at;
                }
                T d = std::sqrt(vt + er) + e;
                if constexpr (MOM) {
                    T bi = mu * buf[i] + gi / d;
                    buf[i] = bi;
                    p[i] -= lr_ * bi;
                } else {
                    p[i] -= lr_ * gi / d;
                }
            }
        });
    }); }); }); });
}

// decoupled: p *= 1 - lr wd, else g' = g + wd p; m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
// AMSGrad: vmax = max(vmax, v), used for v; p -= lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t) + eps_root) + eps)
template <class T>
void adam_step(T* p, const T* g, T* m, T* v, T* vmax, i64 n, double lr, i64 step, double beta1, double beta2,
               double eps, double weight_decay, bool amsgrad, bool decoupled_weight_decay, double eps_root) {
    FtzGuard ftz;
    const double bc1 = 1 - std::pow(beta1, double(step)), bc2 = 1 - std::pow(beta2, double(step));
    const T b1 = T(beta1), omb1 = T(1 - beta1), b2 = T(beta2), omb2 = T(1 - beta2);
    const T step_size = T(lr / bc1), inv_bc2 = T(1 / bc2), e = T(eps), er = T(eps_root);
    const T wd = T(weight_decay), shrink = T(1 - lr * weight_decay);
    with_flag(weight_decay != 0.0 && !decoupled_weight_decay, [&](auto L2) {
    with_flag(weight_decay != 0.0 && decoupled_weight_decay, [&](auto DEC) {
    with_flag(amsgrad, [&](auto AMS) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T pi = p[i];
                if constexpr (DEC) pi *= shrink;
                T gi = g[i];
                if constexpr (L2) gi += wd * pi;
                T mi = b1 * m[i] + omb1 * gi;
                T vi = b2 * v[i] + omb2 * gi * gi;
                m[i] = mi;
                v[i] = vi;
                if constexpr (AMS) {
                    vi = vmax[i] > vi ? vmax[i] : vi;
                    vmax[i] = vi;
                }
                p[i] = pi - step_size * mi / (std::sqrt(vi * inv_bc2 + er) + e);
            }
        });
    }); }); });
}

// g' = g + wd p; m = b1 m + (1 - b1) g'; u = max(b2 u, |g'| + eps); p -= lr / (1 - b1^t) m / u
template <class T>
void adamax_step(T* p, const T* g, T* m, T* u, i64 n, double lr, i64 step, double beta1, double beta2, double eps,
                 double weight_decay) {
    FtzGuard ftz;
    const T step_size = T(lr / (1 - std::pow(beta1, double(step))));
    const T b1 = T(beta1), omb1 = T(1 - beta1), b2 = T(beta2), e = T(eps), wd = T(weight_decay);
    with_flag(weight_decay != 0.0, [&](auto WD) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T gi = g[i];
                if constexpr (WD) gi += wd * p[i];
                T mi = b1 * m[i] + omb1 * gi;
                m[i] = mi;
                T ag = (gi < T(0) ? -gi : gi) + e;
                T bu = b2 * u[i];
                T ui = bu > ag ? bu : ag;
                u[i] = ui;
                p[i] -= step_size * mi / ui;
            }
        });
    });
}

// mu_t = b1 (1 - 0.5 * 0.96^(t psi)); m, v as Adam; d = sqrt(v / (1 - b2^t)) + eps;
// p -= lr (1 - mu_t) / (1 - mu_product) g' / d + lr mu_{t+1} / (1 - mu_product mu_{t+1}) m / d
template <class T>
void nadam_step(T* p, const T* g, T* m, T* v, i64 n, double lr, i64 step, double mu_product, double beta1,
                double beta2, double eps, double weight_decay, double momentum_decay, bool decoupled_weight_decay) {
    FtzGuard ftz;
    const double mu = beta1 * (1 - 0.5 * std::pow(0.96, double(step) * momentum_decay));
    const double mu_next = beta1 * (1 - 0.5 * std::pow(0.96, double(step + 1) * momentum_decay));
    const T cg = T(lr * (1 - mu) / (1 - mu_product));
    const T cm = T(lr * mu_next / (1 - mu_product * mu_next));
    const T inv_bc2 = T(1 / (1 - std::pow(beta2, double(step))));
    const T b1 = T(beta1), omb1 = T(1 - beta1), b2 = T(beta2), omb2 = T(1 - beta2), e = T(eps);
    const T wd = T(weight_decay), shrink = T(1 - lr * weight_decay);
    with_flag(weight_decay != 0.0 && !decoupled_weight_decay, [&](auto L2) {
    with_flag(weight_decay != 0.0 && decoupled_weight_decay, [&](auto DEC) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T pi = p[i];
                if constexpr (DEC) pi *= shrink;
                T gi = g[i];
                if constexpr (L2) gi += wd * pi;
                T mi = b1 * m[i] + omb1 * gi;
                T vi = b2 * v[i] + omb2 * gi * gi;
                m[i] = mi;
                v[i] = vi;
                T inv_d = T(1) / (std::sqrt(vi * inv_bc2) + e);  // one division, two uses
                pi -= cg * gi * inv_d;
                p[i] = pi - cm * mi * inv_d;
            }
        });
    }); });
}

// s = rho s + (1 - rho) g'^2; delta = sqrt(D + eps) / sqrt(s + eps) g'; D = rho D + (1 - rho) delta^2;
// p -= lr delta
template <class T>
void adadelta_step(T* p, const T* g, T* s, T* D, i64 n, double lr, i64 step, double rho, double eps,
                   double weight_decay) {
    (void)step;
    FtzGuard ftz;
    const T r = T(rho), omr = T(1 - rho), e = T(eps), wd = T(weight_decay), lr_ = T(lr);
    with_flag(weight_decay != 0.0, [&](auto WD) {
        parallel_for(n, [=](i64 a, i64 b) {
#pragma GCC ivdep
            for (i64 i = a; i < b; ++i) {
                T gi = g[i];
                if constexpr (WD) gi += wd * p[i];
                T si = r * s[i] + omr * gi * gi;
                s[i] = si;
                T delta = std::sqrt((D[i] + e) / (si + e)) * gi;  // one square root
                D[i] = r * D[i] + omr * delta * delta;
                p[i] -= lr_ * delta;
            }
        });
    });
}

// ---------------------------------------------------------------------------- by code
// For the one-call training step: the optimizer kind and its hyper-parameters as numbers
// (layout documented in fastmlp/backends/cpp_backend.py: _optimizer_spec).
enum class Opt : int { sgd = 0, momentum = 1, adagrad = 2, rmsprop = 3, adam = 4, adamax = 5, nadam = 6, adadelta = 7 };

template <class T>
void optimizer_step(Opt kind, const double* h, i64 step, T* p, const T* g, T* s0, T* s1, T* s2, i64 n) {
    switch (kind) {
        case Opt::sgd: return sgd_step(p, g, h[1] != 0 ? s0 : nullptr, n, h[0], step, h[1], h[2], h[3] != 0, h[4]);
        case Opt::momentum: return momentum_step(p, g, s0, n, h[0], step, h[1], h[2] != 0, h[3] != 0, h[4]);
        case Opt::adagrad: return adagrad_step(p, g, s0, n, h[0], step, h[1], h[2], h[3], h[4]);
        case Opt::rmsprop:
            return rmsprop_step(p, g, s0, h[5] != 0 ? s1 : nullptr, h[4] != 0 ? s2 : nullptr, n, h[0], step, h[1], h[2], h[3], h[4], h[5] != 0, h[6] != 0, h[7]);
        case Opt::adam: return adam_step(p, g, s0, s1, h[5] != 0 ? s2 : nullptr, n, h[0], step, h[1], h[2], h[3], h[4], h[5] != 0, h[6] != 0, h[7]);
        case Opt::adamax: return adamax_step(p, g, s0, s1, n, h[0], step, h[1], h[2], h[3], h[4]);
        case Opt::nadam: return nadam_step(p, g, s0, s1, n, h[0], step, h[1], h[2], h[3], h[4], h[5], h[6], h[7] != 0);
        case Opt::adadelta: return adadelta_step(p, g, s0, s1, n, h[0], step, h[1], h[2], h[3]);
    }
    throw std::invalid_argument("unknown optimizer code");
}

}  // namespace fastmlp
