// fastmlp cpp backend: shared machinery of the kernels (no Python in here).
//
//   - FtzGuard: flush-to-zero / denormals-are-zero, scoped to one kernel call and restored.
//     Adam's second moment decays into denormals for dead units after ~700 steps and every
//     operation on a denormal costs ~100 cycles: the step got 6x slower. FTZ keeps it flat.
//   - parallel_for / parallel_sum: large elementwise loops split over the backend's one
//     thread pool (csrc/pool.h, which says why one pool and OpenBLAS at one thread).
//   - vexp / vexpm1 / vlog1p / vtanh / verf: branch-free math that GCC vectorises (a libm call per
//     element does not vectorise), accurate to a few ulp (verf<float>: 1.5e-7 absolute).
//   - gemm: row-major C = alpha op(A) op(B) + beta C on OpenBLAS (scipy_cblas_sgemm/dgemm).
//
// Rebuild: `pip install -e .` from the repository root (see setup.py, docs/cpp.md).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(__SSE__) || defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#define FASTMLP_HAS_MXCSR 1
#endif

#include <cblas.h>

#include "pool.h"

namespace fastmlp {

// ---------------------------------------------------------------------------- FTZ
struct FtzGuard {
#ifdef FASTMLP_HAS_MXCSR
    unsigned int saved;
    FtzGuard() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
    ~FtzGuard() { _mm_setcsr(saved); }
#endif
    FtzGuard(const FtzGuard&) = delete;
    FtzGuard& operator=(const FtzGuard&) = delete;
};

// ---------------------------------------------------------------------------- threads
// Work below this many elements per thread runs on the calling thread: waking the pool and
// joining it cost a few microseconds, the time of ~10k simple float updates.
constexpr i64 kGrain = 1 << 14;

// Threads for a loop over n elements: one per kGrain elements, at most the pool's.
inline int loop_threads(i64 n) { return int(std::max<i64>(1, std::min<i64>(get_num_threads(), n / kGrain))); }

// f(t, begin, end) over nt contiguous chunks of [0, n) (multiples of 64 elements), chunk t on
// thread t of the pool (csrc/pool.h); nt = 1 runs f(0, 0, n) on the caller. Each pool thread
// sets its own FTZ (MXCSR is per thread).
template <class F>
void for_chunks(i64 n, int nt, F&& f) {
    if (nt <= 1) {
        f(0, i64(0), n);
        return;
    }
    Pool::instance().run(nt, [&](int t, int k) {
        FtzGuard ftz;
        const Range r = split(n, t, k, 64);
        if (r.size() > 0) f(t, r.begin, r.end);
    });
}

// f(begin, end) over the chunks of [0, n).
template <class F>
void parallel_for(i64 n, F&& f) {
    for_chunks(n, loop_threads(n), [&](int, i64 a, i64 b) { f(a, b); });
}

// Sum over the chunks of g(begin, end) -> double, added in chunk order (deterministic for a
// given thread count).
template <class G>
double parallel_sum(i64 n, G&& g) {
    const int nt = loop_threads(n);
    std::vector<double> part(nt, 0.0);
    for_chunks(n, nt, [&](int t, i64 a, i64 b) { part[t] = g(a, b); });
    double s = 0.0;
    for (double p : part) s += p;
    return s;
}

// f(std::true_type{}) or f(std::false_type{}): a runtime flag as a compile-time constant, so
// that each kernel loop is compiled without the branch (GCC does not vectorise a loop whose
// body tests a flag before a load or store).
template <class F>
void with_flag(bool b, F&& f) {
    if (b) f(std::true_type{}); else f(std::false_type{});
}

// The math helpers and the activations' fwd/bwd/dparam are forced inline: a loop vectorises
// only where they are inlined, and GCC's inlining budget gave out across the many kernels of
// one translation unit (vexp, vsigmoid, vtanh, SoftplusOp::fwd... stayed out of line in most of
// them: float64 softplus ran 4x slower, GELU 8x).
#define FASTMLP_INLINE inline __attribute__((always_inline))

// ---------------------------------------------------------------------------- bit casts
FASTMLP_INLINE float as_float(std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
FASTMLP_INLINE std::uint32_t as_u32(float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }
FASTMLP_INLINE double as_double(std::uint64_t u) { double d; std::memcpy(&d, &u, 8); return d; }
FASTMLP_INLINE std::uint64_t as_u64(double d) { std::uint64_t u; std::memcpy(&u, &d, 8); return u; }

// ---------------------------------------------------------------------------- max/min with 0
// max(x, 0) and min(x, 0) that pass NaN through: written as x > 0 ? x : 0 they would return 0
// for NaN, a silent wrong answer (ReLU, ELU). pos_part(-0) = +0, as NumPy's maximum.
template <class T> FASTMLP_INLINE T pos_part(T x) { return x <= T(0) ? T(0) : x; }
template <class T> FASTMLP_INLINE T neg_part(T x) { return x > T(0) ? T(0) : x; }

// ---------------------------------------------------------------------------- all_finite
// No NaN or +-Inf among n values: none has an exponent of all ones. An integer OR over the
// bits (a float reduction would not vectorise without reassociation), read through may_alias
// integer types.
template <class T>
bool all_finite(const T* x, i64 n) {
    using U = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    typedef U __attribute__((may_alias)) AliasU;
    constexpr U exp_mask = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
    const AliasU* u = reinterpret_cast<const AliasU*>(x);
    U bad = 0;
    for (i64 i = 0; i < n; ++i) bad |= U((u[i] & exp_mask) == exp_mask);
    return bad == 0;
}

// ---------------------------------------------------------------------------- vexp
// e^x = 2^n e^r, n = round(x / ln 2), r = x - n ln2 (Cody-Waite: ln2 = hi + lo), |r| <= ln2/2.
// n is rounded by adding 1.5 * 2^23 (2^52): its low mantissa bits then hold n, and
// 2^(n-1) is built from them directly; the result is p(r) * 2^(n-1) * 2 (no overflow of the
// scale at n = 128 / 1024). Inputs are clamped to [-87, 88] (float) / [-708, 709] (double):
// below, e^x is 0 to within 1e-38 / 1e-307.
// float: Cephes expf minimax polynomial (1 ulp); double: Taylor series to r^14 (expm1_taylor).
FASTMLP_INLINE float vexp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float magic = 12582912.0f;  // 1.5 * 2^23
    float kf = x * 1.44269504088896341f + magic;
    float n = kf - magic;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    std::uint32_t sb = (as_u32(kf) - 0x4B400000u + 126u) << 23;
    return p * as_float(sb) * 2.0f;
}

// e^r - 1 = r + r^2/2! + ... + r^14/14! for |r| <= 0.35: the truncation, < 0.35^15/15! = 1.2e-19,
// is below half an ulp of the result. The core of vexp<double> (|r| <= ln2 / 2 there) and of
// vexpm1<double>.
FASTMLP_INLINE double expm1_taylor(double r) {
    double p = 1.0 / 87178291200.0;  // 1/14!
    p = p * r + 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    return r * (1.0 + r * p);
}

FASTMLP_INLINE double vexp(double x) {
    const double x0 = x;
    x = x < -708.0 ? -708.0 : x;
    x = x > 709.0 ? 709.0 : x;
    const double magic = 6755399441055744.0;  // 1.5 * 2^52
    double kd = x * 1.4426950408889634074 + magic;
    double n = kd - magic;
    double r = x - n * 6.93147180369123816490e-01;
    r = r - n * 1.90821492927058770002e-10;
    const double p = 1.0 + expm1_taylor(r);
    std::uint64_t sb = (as_u64(kd) - 0x4338000000000000ull + 1022ull) << 52;
    const double y = p * as_double(sb) * 2.0;
    return x0 < -708.0 ? 0.0 : y;  // below: e^x < 3.3e-308, a denormal (0 under FtzGuard)
}

// ---------------------------------------------------------------------------- vlog1p
// log(1 + u) for u in [0, 1] (the only range the kernels need: u = e^{-|z|}).
// w = 1 + u in [1, 2]; m = w or w/2 so that m in [sqrt(2)/2, sqrt(2)]; with f = (m-1)/(m+1),
// log m = 2 atanh f = 2 (f + f^3/3 + f^5/5 + ...), |f| <= 0.1716. The rounding of 1 + u is
// undone by Goldberg's correction log1p(u) = log(w) * u / (w - 1) (and = u when w == 1).
template <class T>
FASTMLP_INLINE T vlog1p(T u) {
    T w = T(1) + u;
    bool big = w > T(1.41421356237309504880);
    T m = big ? w * T(0.5) : w;
    T e = big ? T(0.69314718055994530942) : T(0);
    T f = (m - T(1)) / (m + T(1));
    T f2 = f * f;
    T s;
    if constexpr (sizeof(T) == 4) {
        s = T(1) + f2 * (T(1.0 / 3) + f2 * (T(1.0 / 5) + f2 * (T(1.0 / 7) + f2 * T(1.0 / 9))));
    } else {
        s = T(1.0 / 21);
        s = s * f2 + T(1.0 / 19);
        s = s * f2 + T(1.0 / 17);
        s = s * f2 + T(1.0 / 15);
        s = s * f2 + T(1.0 / 13);
        s = s * f2 + T(1.0 / 11);
        s = s * f2 + T(1.0 / 9);
        s = s * f2 + T(1.0 / 7);
        s = s * f2 + T(1.0 / 5);
        s = s * f2 + T(1.0 / 3);
        s = s * f2 + T(1);
    }
    T logw = e + T(2) * f * s;
    T d = w - T(1);
    return d == T(0) ? u : logw * (u / d);
}

// softplus(x) = log(1 + e^x) = max(x, 0) + log1p(e^{-|x|}), never overflows.
template <class T>
FASTMLP_INLINE T vsoftplus(T x) {
    T ax = x < T(0) ? -x : x;
    return pos_part(x) + vlog1p(vexp(-ax));
}

// sigma(x) = 1 / (1 + e^{-x}) for x >= 0, e^x / (1 + e^x) for x < 0 (e = e^{-|x|} <= 1).
template <class T>
FASTMLP_INLINE T vsigmoid(T x) {
    T ax = x < T(0) ? -x : x;
    T e = vexp(-ax);
    T s = T(1) / (T(1) + e);
    return x >= T(0) ? s : e * s;
}

// tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1)) for large |x|; near 0 that difference cancels
// (float: 6 % wrong at x = 1e-6), so below 0.3 (float) the odd Taylor series to x^11
// (truncation < 1e-9 relative), below 0.625 (double) Cephes tanh.c's x + x^3 P(x^2) / Q(x^2).
// Both as the numba backend's _tanhf / _tanhd: a few ulp relative everywhere; written as
// x (1 + ...), not x + x (...), so that tanh(-0) = -0 (-0 + 0 is +0).
FASTMLP_INLINE float vtanh(float x) {
    float ax = x < 0.0f ? -x : x;
    float x2 = x * x;
    float small = x * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315 + x2 * (62.0f / 2835
                                                                   + x2 * (-1382.0f / 155925))))));
    float t = 1.0f - 2.0f / (vexp(2.0f * ax) + 1.0f);
    return ax < 0.3f ? small : (x > 0.0f ? t : -t);  // NaN: -NaN
}
FASTMLP_INLINE double vtanh(double x) {
    double ax = x < 0.0 ? -x : x;
    double z = x * x;
    double small = x * (1.0 + z * (((-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z
                                    - 1.61468768441708447952e3)
                                   / (((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z
                                      + 4.84406305325125486048e3)));  // x (1 + ...) keeps -0
    double t = 1.0 - 2.0 / (vexp(2.0 * ax) + 1.0);
    return ax < 0.625 ? small : (x > 0.0 ? t : -t);
}

// e^x - 1: the Taylor series where |x| < 0.35 (float: to x^7, double: to x^14; truncation below
// half an ulp), where e^x - 1 would cancel; else e^x - 1. As the numba backend's _expm1f.
FASTMLP_INLINE float vexpm1(float x) {
    float series = x * (1.0f + x * (0.5f + x * (1.0f / 6 + x * (1.0f / 24 + x * (1.0f / 120
                                                  + x * (1.0f / 720 + x * (1.0f / 5040)))))));
    float ax = x < 0.0f ? -x : x;
    return ax < 0.35f ? series : vexp(x) - 1.0f;
}
FASTMLP_INLINE double vexpm1(double x) {
    double ax = x < 0.0 ? -x : x;
    return ax < 0.35 ? expm1_taylor(x) : vexp(x) - 1.0;
}

// erf. float: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, the formula of PyTorch's
// vectorised float erf): erf(x) = 1 - (a1 t + ... + a5 t^5) e^{-x^2}, t = 1 / (1 + p |x|).
// double: Cephes ndtr.c, as the numba backend's _erfd: x T(x^2) / U(x^2) below |x| = 1; above,
// 1 - erfc|x| with erfc|x| = e^{-x^2} P(|x|) / Q(|x|) (R(|x|) / S(|x|) from |x| = 8), odd.
// Both branches are computed and one is selected, so the loop vectorises (std::erf does not).
FASTMLP_INLINE float verf(float x) {
    float ax = x < 0.0f ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float y = 1.061405429f;
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    float r = 1.0f - y * t * vexp(-ax * ax);
    return x < 0.0f ? -r : r;
}
FASTMLP_INLINE double verf(double x) {
    const double z = x * x;
    const double small = x * ((((9.60497373987051638749e0 * z + 9.00260197203842689217e1) * z
                                + 2.23200534594684319226e3) * z + 7.00332514112805075473e3) * z
                              + 5.55923013010394962768e4)
                         / (((((z + 3.35617141647503099647e1) * z + 5.21357949780152679795e2) * z
                              + 4.59432382970980127987e3) * z + 2.26290000613890934246e4) * z
                            + 4.92673942608635921086e4);
    double a = x < 0.0 ? -x : x;
    a = a < 30.0 ? a : 30.0;  // erfc(30) is 0 as well: keeps inf / inf out of the ratios
    const double p = (((((((2.46196981473530512524e-10 * a + 5.64189564831068821977e-1) * a
                           + 7.46321056442269912687e0) * a + 4.86371970985681366614e1) * a
                         + 1.96520832956077098242e2) * a + 5.26445194995477358631e2) * a
                       + 9.34528527171957607540e2) * a + 1.02755188689515710272e3) * a
                     + 5.57535335369399327526e2;
    const double q = (((((((a + 1.32281951154744992508e1) * a + 8.67072140885989742329e1) * a
                          + 3.54937778887819891062e2) * a + 9.75708501743205489753e2) * a
                        + 1.82390916687909736289e3) * a + 2.24633760818710981792e3) * a
                      + 1.65666309194161350182e3) * a + 5.57535340817727675546e2;
    const double r = ((((5.64189583547755073984e-1 * a + 1.27536670759978104416e0) * a
                        + 5.01905042251180477414e0) * a + 6.16021097993053585195e0) * a
                      + 7.40974269950448939160e0) * a + 2.97886665372100240670e0;
    const double s = (((((a + 2.26052863220117276590e0) * a + 9.39603524938001434673e0) * a
                        + 1.20489539808096656605e1) * a + 1.70814450747565897222e1) * a
                      + 9.60896809063285878198e0) * a + 3.36907645100081516050e0;
    const double erfc = vexp(-z) * (a < 8.0 ? p / q : r / s);
    const double big = 1.0 - erfc;
    const double out = z < 1.0 ? small : (x > 0.0 ? big : -big);
    return x == x ? out : x;  // NaN stays NaN
}

// ---------------------------------------------------------------------------- gemm
// Row-major C (M, N) = alpha op(A) op(B) + beta C with op(A) (M, K), op(B) (K, N).
inline void gemm(bool ta, bool tb, i64 M, i64 N, i64 K, float alpha, const float* A, i64 lda,
                 const float* B, i64 ldb, float beta, float* C, i64 ldc) {
    scipy_cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C,
                      (blasint)ldc);
}
inline void gemm(bool ta, bool tb, i64 M, i64 N, i64 K, double alpha, const double* A, i64 lda,
                 const double* B, i64 ldb, double beta, double* C, i64 ldc) {
    scipy_cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      (blasint)M, (blasint)N, (blasint)K, alpha, A, (blasint)lda, B, (blasint)ldb, beta, C,
                      (blasint)ldc);
}

}  // namespace fastmlp
