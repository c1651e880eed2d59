"""numba kernels of the ``numba`` backend: every op of fastmlp as an ``@njit`` loop.

What
    One kernel per op, named exactly like the op (``relu_forward``, ``dense_backward``,
    ``adam_step``, ``train_step`` ...), so ``grep -rn adam_step`` finds the NumPy reference,
    this kernel, the C++ function and the CUDA kernel. Kernels take contiguous arrays and
    write their outputs into arrays the caller allocated; the Python wrappers in
    ``numba_backend.py`` validate, allocate and fall back to the reference for what a kernel
    does not cover. The GEMMs go to BLAS through numba's ``np.dot`` (SciPy's OpenBLAS).

How to rebuild
    Nothing to build: each kernel compiles on its first call for a dtype (float32, float64)
    and is cached on disk (``cache=True``: ``__pycache__`` beside this file, or
    ``NUMBA_CACHE_DIR`` / numba's user cache when that is read-only). Delete the cache files
    to force a recompile. ``NUMBA_DISABLE_JIT=1`` runs every kernel as plain Python (tests,
    coverage). Nothing here is compiled at ``import fastmlp``: this module is imported only
    when the numba backend is first used.

Conventions
    - Compilation flags live in ``FLAGS`` below, nowhere else. ``error_model="numpy"``: a
      division by zero gives inf/nan as in NumPy instead of a Python exception check that
      stops vectorisation (the Adam loop ran 2.1x slower without it). Kernels are serial;
      the ``parallel_*`` drivers near the end split a standalone elementwise op over numba's
      threads, each chunk one call of the serial kernel (docs/numba.md, "Thread policy").
    - No global configuration is read here (numba freezes globals at compile time); every
      run-time choice is an argument.
    - Scalars arrive already cast to the arrays' dtype, and literals below are float32
      constants that are exact in both dtypes (0, 0.5, 1, 2, 3), so float32 arithmetic stays
      float32 (vectorisable, and rounded like the reference) and float64 stays float64.
      Irrational constants are passed in, cast by the caller.
    - Optimizer kernels take their scalars as one coefficient array ``c`` (dtype of ``p``),
      whose layout is written above each kernel; the Python side builds it in
      ``numba_backend._<name>_coefficients``. The same kernels run inside ``train_step``.
    - Flush to zero: the decaying optimizer states (moments, running averages) are set to 0
      once their magnitude falls below the dtype's smallest normal number ``tiny`` (last
      entry of ``c``), so dead units never fill the state with denormals, whose arithmetic is
      many times slower. The difference from the reference is below ``tiny`` (~1e-38).
"""

from __future__ import annotations

import warnings

import numba
import numba.extending
import numpy as np
from numba import prange

# numba's pedantic IR check ("variable ... is not in scope", "an internal pedantic check")
# misfires when kernels inline the _by_dtype overloads below; the code is right (every kernel
# is tested against the reference). numba raises it from its own modules (numba.core.ssa) or
# from this file, so the filter is by category and message, for the process: only that check.
warnings.filterwarnings("ignore", message=r"variable '.*' is not in scope",
                        category=numba.core.errors.NumbaIRAssumptionWarning)

# The one place for compilation flags.
FLAGS = dict(cache=True, nogil=True, error_model="numpy")

kernel = numba.njit(**FLAGS)
# the parallel drivers (prange over chunks, each chunk one serial kernel call)
parallel = numba.njit(parallel=True, **FLAGS)
# scalar helpers are inlined at numba's IR level: a call left in a loop stops LLVM vectorising it
helper = numba.njit(inline="always", **FLAGS)

# Literals exact in float32 and float64: float32 scalars keep float32 arithmetic in float32
# and promote to float64 against float64 operands.
_0 = np.float32(0.0)
_HALF = np.float32(0.5)
_1 = np.float32(1.0)
_2 = np.float32(2.0)
_3 = np.float32(3.0)

# Activation codes of the fused kernels (dense epilogue and train_step). 0-3 are the
# FUSED_ACTIVATIONS, whose derivative is a function of the output Y alone.
ACT_IDENTITY = 0
ACT_RELU = 1
ACT_SIGMOID = 2
ACT_TANH = 3
ACT_LEAKY_RELU = 4
ACT_ELU = 5
ACT_SELU = 6
ACT_GELU = 7  # h0 = 1: the tanh approximation
ACT_SILU = 8
ACT_SOFTPLUS = 9
ACT_MISH = 10
ACT_SOFTSIGN = 11
ACT_LOG_SIGMOID = 12
ACT_SINC = 13  # standalone ops only (the parallel drivers), never in train_step
ACT_STEP = 14

# Optimizer codes of train_step.
OPT_SGD = 0
OPT_MOMENTUM = 1
OPT_ADAGRAD = 2
OPT_RMSPROP = 3
OPT_ADAM = 4
OPT_ADAMAX = 5
OPT_NADAM = 6
OPT_ADADELTA = 7

# Loss codes of train_step.
LOSS_CROSS_ENTROPY = 0
LOSS_MSE = 1


# ============================================================================ scalar helpers
# exp, tanh, expm1, log1p and erf that vectorise, in float32 and in float64. numba's wheels
# have no SVML: np.exp, np.tanh, np.log1p, math.erf on a scalar are libm calls, one element at
# a time, several times slower than NumPy's SIMD loops (exact GELU with math.erf: 20 ns per
# element; float64 tanh f+b 0.59x the reference). These use only multiply, add, divide,
# compare and an integer-to-float bit cast, so LLVM vectorises the loops that call them. The
# float32 ones (accurate to the float32 tolerance) serve the float32 kernels, the float64 ones
# (within ~5e-16, under the 1e-12 tolerance) the others: ``_exp`` and its kin below pick by the
# argument's type (``_by_dtype``).


# The float of type ``dtype`` (np.float32 or np.float64) whose bits are the integer i, of the
# same width (a bit cast, as C's memcpy / std::bit_cast): 2^n is the float with exponent field
# n + 127 (float32) or n + 1023 (float64). Plain Python without the JIT; inside the JIT one LLVM
# bitcast instruction. (A table of the 2^n, the earlier way, made every loop gather from
# memory: float32 exp ran at 1.15 ns per element, 0.52 with the cast.)
_INT_OF = {np.float32: np.int32, np.float64: np.int64}


def _float_from_bits(i, dtype):
    return np.array(i, _INT_OF[dtype]).view(dtype)[()]


@numba.extending.intrinsic
def _bitcast_to(typingctx, i, dtype):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(signature.return_type))
    return dtype.instance_type(i, dtype), codegen


@numba.extending.overload(_float_from_bits, inline="always")
def _float_from_bits_jit(i, dtype):
    as_int = _INT_OF[numba.np.numpy_support.as_dtype(dtype.instance_type).type]
    return lambda i, dtype: _bitcast_to(as_int(i), dtype)


# A scalar function that runs f32 on a float32 argument and f64 on any other: inside the JIT
# the choice is made when the caller compiles, by the argument's type, so the loop holds only
# the one taken (a run-time flag left the float64 branch in the float32 loops, which LLVM did
# not remove: float32 sigmoid ran at 0.85 ns per element against 0.54; silu's d(beta) loop 2.5x
# slower); without the JIT, by isinstance.
def _by_dtype(f32, f64):
    def by_dtype(x):
        return f32(x) if isinstance(x, np.float32) else f64(x)

    @numba.extending.overload(by_dtype, inline="always")
    def by_dtype_jit(x):
        # the helpers' own Python functions: a closure over them inlined with a numba warning
        return f32.py_func if x == numba.types.float32 else f64.py_func

    return by_dtype


# exp (Cephes expf): n = round(x log2 e), r = x - n ln 2 (ln 2 split in two for exactness),
# e^r by its degree-7 minimax polynomial on [-ln2/2, ln2/2], e^x = 2^n e^r with 2^n built from
# its bits. x is clamped to [-87.34, 88.03] (2^n stays normal), e^x is 0 below that range (a
# denormal, flushed) and e^88.03 = 1.6e38 above it (not inf); NaN is passed through.
# Max relative error 8e-8 (measured against float64 exp on 2M points).
_LOG2E = np.float32(1.44269504088896341)
_LN2_HI = np.float32(0.693359375)
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_P = (np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3),
          np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1))
_EXP_LO = np.float32(-87.33654)
_EXP_HI = np.float32(88.02969)


@helper
def _expf(x):
    xc = _EXP_LO if not x >= _EXP_LO else (_EXP_HI if x > _EXP_HI else x)
    n = np.floor(xc * _LOG2E + _HALF)
    r = xc - n * _LN2_HI - n * _LN2_LO
    p0, p1, p2, p3, p4, p5 = _EXP_P
    e = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * r * r + r + _1
    y = e * _float_from_bits((np.int32(n) + 127) << 23, np.float32)
    y = y if x >= _EXP_LO else _0 * y  # below: 0 (the true value is a denormal)
    return y if x == x else x


# tanh: above |x| = 0.3, tanh|x| = 1 - 2 / (e^{2|x|} + 1) through _expf (which also keeps
# 1 - tanh^2, the derivative, accurate near saturation); below, the odd Taylor series to x^11
# (truncation < 1e-9 relative). Max error 8.3e-8 absolute, 2.4e-7 relative (float32's own tanh:
# 6e-8, 1.1e-7).
_TANH_SPLIT = np.float32(0.3)
_TANH_SERIES = (np.float32(-1 / 3), np.float32(2 / 15), np.float32(-17 / 315), np.float32(62 / 2835),
                np.float32(-1382 / 155925))


@helper
def _tanhf(x):
    a = abs(x)
    x2 = x * x
    c3, c5, c7, c9, c11 = _TANH_SERIES
    small = x * (_1 + x2 * (c3 + x2 * (c5 + x2 * (c7 + x2 * (c9 + x2 * c11)))))  # keeps -0 (-0 + 0 is +0)
    big = _1 - _2 / (_expf(_2 * a) + _1)
    return small if a < _TANH_SPLIT else (big if x > _0 else -big)  # NaN: -NaN


# expm1: e^x - 1, by its Taylor series to x^7 where |x| < 0.35 (no cancellation), else e^x - 1
_EXPM1_BOUND = np.float32(0.35)
_INV_FACT = (np.float32(1 / 5040), np.float32(1 / 720), np.float32(1 / 120), np.float32(1 / 24),
             np.float32(1 / 6))


@helper
def _expm1f(x):
    c7, c6, c5, c4, c3 = _INV_FACT
    series = x * (_1 + x * (_HALF + x * (c3 + x * (c4 + x * (c5 + x * (c6 + x * c7))))))
    direct = _expf(x) - _1
    return series if abs(x) < _EXPM1_BOUND else direct


# log1p(u) for 0 <= u <= 1, the only range the kernels need (u = e^-|z|; the argument is named x
# like the other helpers', as _by_dtype requires); the algorithm of the
# C++ backend's vlog1p. w = 1 + u in [1, 2]; m = w, or w/2 above sqrt 2, so m lies in
# [sqrt2/2, sqrt2]; with f = (m - 1)/(m + 1) (|f| <= 0.1716), log m = 2 atanh f =
# 2 f (1 + f^2/3 + f^4/5 + f^6/7 + f^8/9) (truncation < 1e-9 relative), log w = log m (+ ln 2).
# Goldberg's correction log1p(u) = log(w) u / (w - 1) undoes the rounding of 1 + u (and is u
# where w rounds to 1). NaN propagates. Max error 3.1e-7 relative, ~5 ulp (measured against
# float64 log1p on 2.2M points of [0, 1], down to 1e-38).
_SQRT2 = np.float32(1.41421356237309504880)
_LN2 = np.float32(0.69314718055994530942)
_ATANH_SERIES = (np.float32(1 / 3), np.float32(1 / 5), np.float32(1 / 7), np.float32(1 / 9))


@helper
def _log1pf(x):
    w = _1 + x
    big = w > _SQRT2
    m = w * _HALF if big else w
    f = (m - _1) / (m + _1)
    f2 = f * f
    c3, c5, c7, c9 = _ATANH_SERIES
    log_w = (_LN2 if big else _0) + _2 * f * (_1 + f2 * (c3 + f2 * (c5 + f2 * (c7 + f2 * c9))))
    d = w - _1
    return x if d == _0 else log_w * (x / d)


# erf: Abramowitz & Stegun 7.1.26, as the C++ backend's verf<float> (and PyTorch's vectorised
# float erf): erf|x| = 1 - (a1 t + a2 t^2 + ... + a5 t^5) e^{-x^2}, t = 1 / (1 + p |x|), odd.
# |error| <= 1.4e-7 absolute in exact arithmetic; in float32 arithmetic 5.4e-7 near |x| = 0.05,
# where 1 - P(t) e^{-x^2} cancels (measured against math.erf on 3M points of [0, 6]; the
# reference rounds 1 + erf to float32: 0.6e-7). erf(+-inf) = +-1 (t = 0, e^-inf = 0); NaN
# propagates.
_ERF_P = np.float32(0.3275911)
_ERF_A = (np.float32(1.061405429), np.float32(-1.453152027), np.float32(1.421413741),
          np.float32(-0.284496736), np.float32(0.254829592))


@helper
def _erff(x):
    a = abs(x)
    t = _1 / (_1 + _ERF_P * a)
    a5, a4, a3, a2, a1 = _ERF_A
    r = _1 - (((((a5 * t + a4) * t + a3) * t + a2) * t + a1) * t) * _expf(-a * a)
    return -r if x < _0 else r


# float64 exp, expm1 and tanh that vectorise, for the float64 kernels (Cephes exp.c, expm1.c,
# tanh.c; libm's are scalar calls here: float64 tanh f+b ran at 0.59x NumPy's SIMD tanh).
# exp: n = round(x log2 e), r = x - n ln 2 (ln 2 in two parts), e^r = 1 + 2 r P(r^2) / (Q(r^2) -
# r P(r^2)) (Pade), times 2^n built from its bits. x is clamped to [-708.39, 709.43] as _expf
# clamps: 0 below (the true value is a denormal), 1.4e308 above (not inf; the kernels only take
# exp of arguments <= 20). NaN passes through. Max error 3.1e-16 relative (measured against
# math.exp on 2M points of [-700, 700] and 1M of [-1, 1]).
_EXPD_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_EXPD_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
           2.00000000000000000009e0)
_LN2D_HI = 6.93145751953125e-1
_LN2D_LO = 1.42860682030941723212e-6
_EXPD_LO = -708.39
_EXPD_HI = 709.43  # n <= 1023: 2^n stays finite


@helper
def _expd_pade(r):
    # e^r - 1 for |r| <= ln2 / 2, as 2 r P / (Q - r P)
    r2 = r * r
    p0, p1, p2 = _EXPD_P
    q0, q1, q2, q3 = _EXPD_Q
    px = r * ((p0 * r2 + p1) * r2 + p2)
    return 2.0 * px / ((((q0 * r2 + q1) * r2 + q2) * r2 + q3) - px)


@helper
def _expd(x):
    xc = _EXPD_LO if not x >= _EXPD_LO else (_EXPD_HI if x > _EXPD_HI else x)
    n = np.floor(xc * 1.4426950408889634 + 0.5)
    r = xc - n * _LN2D_HI - n * _LN2D_LO
    y = (1.0 + _expd_pade(r)) * _float_from_bits((np.int64(n) + 1023) << 52, np.float64)
    y = y if x >= _EXPD_LO else 0.0 * y
    return y if x == x else x


# expm1: the Pade form itself where |x| <= 1/2 (no cancellation), else e^x - 1. Max error
# 5.9e-16 relative (against math.expm1 on 2M points of [-40, 0], 1M of [-1, 1] and of
# [-1e-6, 1e-6]).
@helper
def _expm1d(x):
    return _expd_pade(x) if abs(x) <= 0.5 else _expd(x) - 1.0


# tanh: below |x| = 0.625, x (1 + x^2 P(x^2) / Q(x^2)); above, 1 - 2 / (e^{2|x|} + 1). Max error
# 4.4e-16 relative (against math.tanh on 2M points of [-20, 20] and of [-1, 1]); tanh(-0) = -0.
_TANHD_P = (-9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3)
_TANHD_Q = (1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3)


@helper
def _tanhd(x):
    a = abs(x)
    z = x * x
    p0, p1, p2 = _TANHD_P
    q0, q1, q2 = _TANHD_Q
    small = x * (1.0 + z * (((p0 * z + p1) * z + p2) / (((z + q0) * z + q1) * z + q2)))  # keeps -0
    big = 1.0 - 2.0 / (_expd(2.0 * a) + 1.0)
    return small if a < 0.625 else (big if x > 0.0 else -big)  # NaN: -NaN


_exp = _by_dtype(_expf, _expd)


_tanh = _by_dtype(_tanhf, _tanhd)


_expm1 = _by_dtype(_expm1f, _expm1d)


# float64 log1p(u) for 0 <= u <= 1: _log1pf's algorithm with the atanh series to f^21
# (truncation < 1e-18), as the C++ backend's vlog1p<double>. Max error 5.2e-16 relative
# (against math.log1p on 2M points of [0, 1] and 1M of [1e-300, 1e-6]).
_ATANH_SERIES_D = tuple(1.0 / k for k in range(21, 1, -2))  # 1/21, 1/19, ... 1/3


@helper
def _log1pd(x):
    w = 1.0 + x
    big = w > 1.4142135623730951
    m = w * 0.5 if big else w
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    c21, c19, c17, c15, c13, c11, c9, c7, c5, c3 = _ATANH_SERIES_D
    s = ((((((((((c21 * f2 + c19) * f2 + c17) * f2 + c15) * f2 + c13) * f2 + c11) * f2 + c9) * f2 + c7) * f2
           + c5) * f2 + c3) * f2 + 1.0)
    log_w = (0.6931471805599453 if big else 0.0) + 2.0 * f * s
    d = w - 1.0
    return x if d == 0.0 else log_w * (x / d)


_log1p = _by_dtype(_log1pf, _log1pd)


# float64 erf (Cephes ndtr.c): x T(x^2) / U(x^2) below |x| = 1; above, 1 - erfc|x| with
# erfc|x| = e^{-x^2} P(|x|) / Q(|x|) (R / S from |x| = 8), odd. Max error 4e-16 absolute
# (against math.erf on 2M points of [-7, 7]).
_ERFD_T = (9.60497373987051638749e0, 9.00260197203842689217e1, 2.23200534594684319226e3,
           7.00332514112805075473e3, 5.55923013010394962768e4)
_ERFD_U = (3.35617141647503099647e1, 5.21357949780152679795e2, 4.59432382970980127987e3,
           2.26290000613890934246e4, 4.92673942608635921086e4)
_ERFD_P = (2.46196981473530512524e-10, 5.64189564831068821977e-1, 7.46321056442269912687e0,
           4.86371970985681366614e1, 1.96520832956077098242e2, 5.26445194995477358631e2,
           9.34528527171957607540e2, 1.02755188689515710272e3, 5.57535335369399327526e2)
_ERFD_Q = (1.32281951154744992508e1, 8.67072140885989742329e1, 3.54937778887819891062e2,
           9.75708501743205489753e2, 1.82390916687909736289e3, 2.24633760818710981792e3,
           1.65666309194161350182e3, 5.57535340817727675546e2)
_ERFD_R = (5.64189583547755073984e-1, 1.27536670759978104416e0, 5.01905042251180477414e0,
           6.16021097993053585195e0, 7.40974269950448939160e0, 2.97886665372100240670e0)
_ERFD_S = (2.26052863220117276590e0, 9.39603524938001434673e0, 1.20489539808096656605e1,
           1.70814450747565897222e1, 9.60896809063285878198e0, 3.36907645100081516050e0)


@helper
def _erfd(x):
    a = abs(x)
    z = x * x
    t0, t1, t2, t3, t4 = _ERFD_T
    u0, u1, u2, u3, u4 = _ERFD_U
    small = x * ((((t0 * z + t1) * z + t2) * z + t3) * z + t4) / (((((z + u0) * z + u1) * z + u2) * z + u3) * z + u4)
    a = min(a, 30.0)  # erfc(30) = 0 as well: keeps inf out of the ratios (inf / inf)
    p0, p1, p2, p3, p4, p5, p6, p7, p8 = _ERFD_P
    q0, q1, q2, q3, q4, q5, q6, q7 = _ERFD_Q
    r0, r1, r2, r3, r4, r5 = _ERFD_R
    s0, s1, s2, s3, s4, s5 = _ERFD_S
    p = (((((((p0 * a + p1) * a + p2) * a + p3) * a + p4) * a + p5) * a + p6) * a + p7) * a + p8
    q = (((((((a + q0) * a + q1) * a + q2) * a + q3) * a + q4) * a + q5) * a + q6) * a + q7
    r = ((((r0 * a + r1) * a + r2) * a + r3) * a + r4) * a + r5
    s = (((((a + s0) * a + s1) * a + s2) * a + s3) * a + s4) * a + s5
    erfc = _expd(-z) * (p / q if a < 8.0 else r / s)
    big = 1.0 - erfc
    out = small if z < 1.0 else (big if x > 0.0 else -big)
    return out if x == x else x


_erf = _by_dtype(_erff, _erfd)


@helper
def _sigmoid(z):
    # sigma(z) = 1 / (1 + e^-z) for z >= 0, e^z / (1 + e^z) for z < 0 (no overflow)
    e = _exp(-abs(z))
    return _1 / (_1 + e) if z >= _0 else e / (_1 + e)


@helper
def _sigmoid_pair(z):
    # (sigma(z), sigma(-z) = 1 - sigma(z)), each to its own relative precision: 1 - sigma(z)
    # computed as a difference loses it where sigma(z) rounds near 1
    e = _exp(-abs(z))
    big = _1 / (_1 + e)
    small = e / (_1 + e)
    return (big, small) if z >= _0 else (small, big)


# Parameter gradients sum N terms that cancel, in float64: a loop with a float64 running sum
# does not vectorise (its additions must keep their order), so the kernels write each block's
# terms here in a loop that does, then add the block with _block_sum.
_TERMS_BLOCK = 256


@helper
def _block_sum(terms, n):
    # terms[:n] summed in four running sums, independent chains the CPU overlaps
    s0 = s1 = s2 = s3 = 0.0
    m = n - n % 4
    for i in range(0, m, 4):
        s0 += terms[i]
        s1 += terms[i + 1]
        s2 += terms[i + 2]
        s3 += terms[i + 3]
    for i in range(m, n):
        s0 += terms[i]
    return (s0 + s1) + (s2 + s3)


@helper
def _log1pexp(z):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
    return max(z, _0) + _log1p(_exp(-abs(z)))


@helper
def _ftz(x, tiny):
    # flush a decaying state to zero below the smallest normal number
    return x if abs(x) >= tiny else _0 * x


# ============================================================================ activations
# Elementwise kernels take 1-D contiguous arrays (the callers pass ravelled views) and write
# Y (forward) or dZ (backward); dZ may alias dY. Every one has the same signature,
# (Z, Y, h0, h1, consts) forward and (dY, Z, Y, dZ, h0, h1, consts, need_param) backward, and
# ignores what it does not use: h0, h1 are the hyper-parameters (leaky_relu: slope; elu and
# selu: alpha, scale; silu: beta; softplus: beta, threshold; gelu: 1 for the tanh form, else 0;
# sinc: the scale of z), consts the constants of gelu and of sinc's backward, all cast to the
# dtype; need_param asks silu and softplus for d(beta), which their backward returns (float64).
# So activation_forward/activation_backward below dispatch them by code in one way, and the
# Python wrappers call any of them alike (compiling only the one they call).

# y = z
@kernel
def identity_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        Y[i] = Z[i]


# dz = dy
@kernel
def identity_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        dZ[i] = dY[i]


# y = max(z, 0)
@kernel
def relu_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        z = Z[i]
        Y[i] = z if z > _0 else _0 * z


# dz = dy [y > 0]   (relu'(0) = 0; y > 0 iff z > 0)
@kernel
def relu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        dZ[i] = dY[i] if Y[i] > _0 else _0


# y = 1 / (1 + e^-z)
@kernel
def sigmoid_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        Y[i] = _sigmoid(Z[i])


# dz = dy y (1 - y)
@kernel
def sigmoid_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        y = Y[i]
        dZ[i] = dY[i] * y * (_1 - y)


# y = tanh z
@kernel
def tanh_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        Y[i] = _tanh(Z[i])


# dz = dy (1 - y^2)
@kernel
def tanh_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        y = Y[i]
        dZ[i] = dY[i] * (_1 - y * y)


# y = z if z > 0 else slope z
@kernel
def leaky_relu_forward(Z, Y, h0, h1, consts):
    slope = h0
    for i in range(Z.size):
        z = Z[i]
        Y[i] = z if z > _0 else z * slope


# dz = dy if z > 0 else slope dy
@kernel
def leaky_relu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    slope = h0
    for i in range(dY.size):
        d = dY[i]
        dZ[i] = d if Z[i] > _0 else d * slope


# y = scale (z if z > 0 else alpha (e^z - 1))      (elu: scale = 1)
@kernel
def elu_forward(Z, Y, h0, h1, consts):
    alpha, scale = h0, h1
    for i in range(Z.size):
        z = Z[i]
        em = _expm1(min(z, _0))
        Y[i] = scale * (z if z > _0 else alpha * em)


# dz = scale dy (1 if z > 0 else alpha e^z)
@kernel
def elu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    alpha, scale = h0, h1
    for i in range(dY.size):
        z = Z[i]
        d = dY[i]
        e = _exp(min(z, _0))
        dZ[i] = scale * (d if z > _0 else d * alpha * e)


# selu(z) = SCALE elu(z, ALPHA)  (the constants are passed in, cast to the dtype)
@kernel
def selu_forward(Z, Y, h0, h1, consts):
    elu_forward(Z, Y, h0, h1, consts)


@kernel
def selu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    elu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)


# y = max(0, z) + alpha min(0, z) = z if z > 0 else alpha z (PyTorch's test; NaN -> NaN),
# alpha of size 1 or C (last axis). Z, Y: (R, C)
@kernel
def prelu_forward(Z, alpha, Y):
    R, C = Z.shape
    shared = alpha.size == 1
    for r in range(R):
        for j in range(C):
            z = Z[r, j]
            a = alpha[0] if shared else alpha[j]
            Y[r, j] = z if z > _0 else a * z


# dz = dy if z > 0 else alpha dy  (PyTorch: slope alpha at z = 0 and -0);
# dalpha_j += sum_r (0 if z > 0 else dy z) = sum_r dy min(0, z)  (float64 accumulator)
@kernel
def prelu_backward(dY, Z, alpha, dZ, dalpha, need_param):
    R, C = Z.shape
    shared = alpha.size == 1
    for r in range(R):
        for j in range(C):
            z = Z[r, j]
            d = dY[r, j]
            a = alpha[0] if shared else alpha[j]
            dZ[r, j] = d if z > _0 else a * d
            if need_param and not z > _0:
                dalpha[0 if shared else j] += np.float64(d) * np.float64(z)


# y = (1/beta) log(1 + e^{beta z}), y = z where beta z > threshold
@kernel
def softplus_forward(Z, Y, h0, h1, consts):
    beta, threshold = h0, h1
    for i in range(Z.size):
        z = Z[i]
        bz = beta * z
        Y[i] = z if bz > threshold else _log1pexp(bz) / beta


# dz = dy sigma(beta z);  dbeta = sum dy (z sigma(beta z) - y) / beta  (0 where linear)
# z s - y cancels where beta z > 0 (s -> 1, y -> z): there it is (z - y) - z sigma(-beta z),
# z - y exact in float64 and the small product to float32's relative precision, so each term
# is accurate to ~1e-7 of itself with the float32 sigmoid (Y as given, like the reference).
@kernel
def softplus_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    beta, threshold = h0, h1
    acc = np.float64(0.0)
    n = dY.size
    if not need_param:
        for i in range(n):
            d = dY[i]
            bz = beta * Z[i]
            dZ[i] = d if bz > threshold else d * _sigmoid(bz)
        return acc
    terms = np.empty(_TERMS_BLOCK)
    inv_beta = 1.0 / np.float64(beta)
    for lo in range(0, n, _TERMS_BLOCK):
        m = min(n - lo, _TERMS_BLOCK)
        # block views, indexed from 0: an index numba cannot prove >= 0 gets a wraparound
        # check per access, and the loop turns into gathers and scatters
        dYb, Zb, Yb, dZb = dY[lo:lo + m], Z[lo:lo + m], Y[lo:lo + m], dZ[lo:lo + m]
        for k in range(m):
            z = Zb[k]
            d = dYb[k]
            bz = beta * z
            s, q = _sigmoid_pair(bz)
            linear = bz > threshold
            dZb[k] = d if linear else d * s
            z64 = np.float64(z)
            y64 = np.float64(Yb[k])
            gap = (z64 - y64) - z64 * np.float64(q) if bz > _0 else z64 * np.float64(s) - y64
            terms[k] = 0.0 if linear else np.float64(d) * gap * inv_beta
        acc += _block_sum(terms, m)
    return acc


# y = z / (1 + |z|)
@kernel
def softsign_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        z = Z[i]
        Y[i] = z / (_1 + abs(z))


# dz = dy / (1 + |z|)^2
@kernel
def softsign_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        d = _1 + abs(Z[i])
        dZ[i] = dY[i] / (d * d)


# y = log sigma(z) = -log(1 + e^-z)
@kernel
def log_sigmoid_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        Y[i] = -_log1pexp(-Z[i])


# dz = dy sigma(-z)
@kernel
def log_sigmoid_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        dZ[i] = dY[i] * _sigmoid(-Z[i])


# y = z sigma(beta z)
@kernel
def silu_forward(Z, Y, h0, h1, consts):
    beta = h0
    for i in range(Z.size):
        z = Z[i]
        Y[i] = z * _sigmoid(beta * z)


# s = sigma(beta z): dz = dy (s + beta z s (1 - s));  dbeta = sum dy z^2 s (1 - s)
# Without dbeta one plain loop; with it, the terms go through blocks (_TERMS_BLOCK) so it vectorises too.
@kernel
def silu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    beta = h0
    acc = np.float64(0.0)
    if not need_param:
        for i in range(dY.size):
            z = Z[i]
            s = _sigmoid(beta * z)
            dZ[i] = dY[i] * (s + beta * z * (s * (_1 - s)))
        return acc
    # d(beta) sums terms d z^2 s (1 - s), in float64, with 1 - s as sigma(-beta z)
    n = dY.size
    terms = np.empty(_TERMS_BLOCK)
    for lo in range(0, n, _TERMS_BLOCK):
        m = min(n - lo, _TERMS_BLOCK)
        dYb, Zb, dZb = dY[lo:lo + m], Z[lo:lo + m], dZ[lo:lo + m]  # as in softplus_backward
        for k in range(m):
            z = Zb[k]
            d = dYb[k]
            s, q = _sigmoid_pair(beta * z)
            dZb[k] = d * (s + beta * z * (s * (_1 - s)))
            z64 = np.float64(z)
            terms[k] = np.float64(d) * z64 * z64 * (np.float64(s) * np.float64(q))
        acc += _block_sum(terms, m)
    return acc


# y = z tanh(softplus(z)) = z n / (n + 2) with n = e^z (e^z + 2), since
# tanh(log(1 + e^z)) = ((1 + e^z)^2 - 1) / ((1 + e^z)^2 + 1): one exp, no tanh, no log.
# y = z where z > 20 (tanh(softplus(20)) = 1 - 8e-18).
_MISH_LINEAR = np.float32(20.0)


@helper
def _mish_t(z):
    e = _exp(min(z, _MISH_LINEAR))
    n = e * (e + _2)
    return n / (n + _2), e


@kernel
def mish_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        z = Z[i]
        t, _ = _mish_t(z)
        Y[i] = z * t


# t = tanh(softplus(z)), sigma(z) = e^z / (1 + e^z): dz = dy (t + z sigma(z) (1 - t^2))
@kernel
def mish_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        z = Z[i]
        t, e = _mish_t(z)
        s = e / (_1 + e)
        dZ[i] = dY[i] * (t + z * s * (_1 - t * t))


# exact:  y = z/2 (1 + erf(z / sqrt 2))
# tanh:   y = z/2 (1 + tanh(k (z + c z^3))),  k = sqrt(2/pi), c = 0.044715
# consts = (1/sqrt 2, 1/sqrt(2 pi), k, c) cast to the dtype
@kernel
def gelu_forward(Z, Y, h0, h1, consts):
    approximate_tanh = h0 != _0
    inv_sqrt2, k, c = consts[0], consts[2], consts[3]
    one = Z.dtype.type(1.0)  # math.erf returns a Python float without the JIT: keep the dtype
    if approximate_tanh:
        for i in range(Z.size):
            z = Z[i]
            Y[i] = _HALF * z * (_1 + _tanh(k * (z + c * z * z * z)))
    else:
        for i in range(Z.size):
            z = Z[i]
            Y[i] = _HALF * z * (one + _erf(z * inv_sqrt2))


# exact:  dz = dy (Phi(z) + z phi(z)),  phi(z) = e^{-z^2/2} / sqrt(2 pi)
# tanh:   dz = dy (0.5 (1 + t) + 0.5 z (1 - t^2) k (1 + 3 c z^2))
@kernel
def gelu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    approximate_tanh = h0 != _0
    inv_sqrt2, inv_sqrt2pi, k, c = consts[0], consts[1], consts[2], consts[3]
    one = dY.dtype.type(1.0)
    if approximate_tanh:
        for i in range(dY.size):
            z = Z[i]
            t = _tanh(k * (z + c * z * z * z))
            dZ[i] = dY[i] * (_HALF * (_1 + t) + _HALF * z * (_1 - t * t) * k * (_1 + _3 * c * z * z))
    else:
        for i in range(dY.size):
            z = Z[i]
            cdf = _HALF * (one + _erf(z * inv_sqrt2))
            pdf = _exp(-_HALF * z * z) * inv_sqrt2pi
            dZ[i] = dY[i] * (cdf + z * pdf)


# y = sin(u) / u with u = scale z (scale = 1, or pi when normalized); y = 1 at u = 0
@kernel
def sinc_forward(Z, Y, h0, h1, consts):
    scale = h0
    for i in range(Z.size):
        u = scale * Z[i]
        Y[i] = _1 if u == _0 else np.sin(u) / u


# d/du sin(u)/u = (cos u - sin(u)/u) / u, by its Taylor series
# -u/3 + u^3/30 - u^5/840 + u^7/45360 where |u| < bound;  dz = dy scale d/du
# consts = (scale, bound, 1/3, 1/30, 1/840, 1/45360)
@kernel
def sinc_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    scale, bound = consts[0], consts[1]
    c3, c30, c840, c45360 = consts[2], consts[3], consts[4], consts[5]
    for i in range(dY.size):
        u = scale * Z[i]
        if abs(u) < bound:
            u2 = u * u
            d = u * (-c3 + u2 * (c30 + u2 * (-c840 + u2 * c45360)))
        else:
            d = (np.cos(u) - np.sin(u) / u) / u
        dZ[i] = dY[i] * (scale * d)


# y = 1 if z > 0 else 0
@kernel
def step_forward(Z, Y, h0, h1, consts):
    for i in range(Z.size):
        Y[i] = _1 if Z[i] > _0 else _0


# the step's derivative is 0 wherever it exists
@kernel
def step_backward(dY, Z, Y, dZ, h0, h1, consts, need_param):
    for i in range(dY.size):
        dZ[i] = _0


# Softmax family along the last axis of (R, C) arrays.
# y_i = e^{z_i - max z} / sum_j e^{z_j - max z}
@kernel
def softmax_forward(Z, Y):
    R, C = Z.shape
    for r in range(R):
        m = Z[r, 0]
        for j in range(1, C):
            m = max(m, Z[r, j])
        s = _0 * m
        for j in range(C):
            e = np.exp(Z[r, j] - m)
            Y[r, j] = e
            s += e
        inv = _1 / s
        for j in range(C):
            Y[r, j] *= inv


# dz = y (dy - sum_j dy_j y_j)
@kernel
def softmax_backward(dY, Z, Y, dZ):
    R, C = Y.shape
    for r in range(R):
        s = _0 * Y[r, 0]
        for j in range(C):
            s += dY[r, j] * Y[r, j]
        for j in range(C):
            dZ[r, j] = Y[r, j] * (dY[r, j] - s)


# y_i = z_i - max z - log sum_j e^{z_j - max z}
@kernel
def log_softmax_forward(Z, Y):
    R, C = Z.shape
    for r in range(R):
        m = Z[r, 0]
        for j in range(1, C):
            m = max(m, Z[r, j])
        s = _0 * m
        for j in range(C):
            s += np.exp(Z[r, j] - m)
        lse = m + np.log(s)
        for j in range(C):
            Y[r, j] = Z[r, j] - lse


# dz = dy - e^y sum_j dy_j
@kernel
def log_softmax_backward(dY, Z, Y, dZ):
    R, C = Y.shape
    for r in range(R):
        s = _0 * Y[r, 0]
        for j in range(C):
            s += dY[r, j]
        for j in range(C):
            dZ[r, j] = dY[r, j] - np.exp(Y[r, j]) * s


# An elementwise activation by its code (the parallel drivers and train_step), with the
# kernels' common arguments.
@kernel
def activation_forward(code, Z, Y, h0, h1, consts):
    if code == ACT_IDENTITY:
        identity_forward(Z, Y, h0, h1, consts)
    elif code == ACT_RELU:
        relu_forward(Z, Y, h0, h1, consts)
    elif code == ACT_SIGMOID:
        sigmoid_forward(Z, Y, h0, h1, consts)
    elif code == ACT_TANH:
        tanh_forward(Z, Y, h0, h1, consts)
    elif code == ACT_LEAKY_RELU:
        leaky_relu_forward(Z, Y, h0, h1, consts)
    elif code == ACT_ELU or code == ACT_SELU:
        elu_forward(Z, Y, h0, h1, consts)
    elif code == ACT_GELU:
        gelu_forward(Z, Y, h0, h1, consts)
    elif code == ACT_SILU:
        silu_forward(Z, Y, h0, h1, consts)
    elif code == ACT_SOFTPLUS:
        softplus_forward(Z, Y, h0, h1, consts)
    elif code == ACT_MISH:
        mish_forward(Z, Y, h0, h1, consts)
    elif code == ACT_SOFTSIGN:
        softsign_forward(Z, Y, h0, h1, consts)
    elif code == ACT_LOG_SIGMOID:
        log_sigmoid_forward(Z, Y, h0, h1, consts)
    elif code == ACT_SINC:
        sinc_forward(Z, Y, h0, h1, consts)
    elif code == ACT_STEP:
        step_forward(Z, Y, h0, h1, consts)


# dZ (which may alias dY); with need_param, returns the float64 d(beta) of silu and softplus
# (0 otherwise)
@kernel
def activation_backward(code, dY, Z, Y, dZ, h0, h1, consts, need_param):
    if code == ACT_IDENTITY:
        identity_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_RELU:
        relu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_SIGMOID:
        sigmoid_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_TANH:
        tanh_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_LEAKY_RELU:
        leaky_relu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_ELU or code == ACT_SELU:
        elu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_GELU:
        gelu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_SILU:
        return silu_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_SOFTPLUS:
        return softplus_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_MISH:
        mish_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_SOFTSIGN:
        softsign_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_LOG_SIGMOID:
        log_sigmoid_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_SINC:
        sinc_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    elif code == ACT_STEP:
        step_backward(dY, Z, Y, dZ, h0, h1, consts, need_param)
    return np.float64(0.0)


# ============================================================================ dense
# Epilogue of the GEMM, in place on Y (N, M): y = act(y + b). b of size 0 means no bias.
@kernel
def _bias_activation(Y, b, act):
    N, M = Y.shape
    has_bias = b.size > 0
    for n in range(N):
        if has_bias:
            for j in range(M):
                Y[n, j] += b[j]
        if act == ACT_RELU:
            for j in range(M):
                y = Y[n, j]
                Y[n, j] = y if y > _0 else _0 * y
        elif act == ACT_SIGMOID:
            for j in range(M):
                Y[n, j] = _sigmoid(Y[n, j])
        elif act == ACT_TANH:
            for j in range(M):
                Y[n, j] = _tanh(Y[n, j])


# One pass over dY (N, M): dz = dy act'(y) written to dZ (may alias dY), and
# db_j = sum_n dz_nj (float64 accumulator, then cast) when db has size M. Each row is computed
# into the float32/64 scratch row ``d`` first: written straight to dZ and summed from there,
# a dZ that may alias dY kept LLVM from vectorising (7.2 us instead of 2.6 on 64 x 128).
@kernel
def _activation_grad_bias_grad(dY, Y, act, dZ, db):
    N, M = dY.shape
    need_db = db.size > 0
    acc = np.zeros(M if need_db else 0, np.float64)
    d = np.empty(M, dY.dtype)
    for n in range(N):
        if act == ACT_RELU:
            for j in range(M):
                d[j] = dY[n, j] if Y[n, j] > _0 else _0
        elif act == ACT_SIGMOID:
            for j in range(M):
                y = Y[n, j]
                d[j] = dY[n, j] * y * (_1 - y)
        elif act == ACT_TANH:
            for j in range(M):
                y = Y[n, j]
                d[j] = dY[n, j] * (_1 - y * y)
        else:
            for j in range(M):
                d[j] = dY[n, j]
        for j in range(M):
            dZ[n, j] = d[j]
        if need_db:
            for j in range(M):
                acc[j] += d[j]
    for j in range(acc.size):
        db[j] = acc[j]


# Y = act(X W^T + b):  X (N, K), W (M, K), b (M,) or empty, Y (N, M) C-contiguous.
# The GEMM is BLAS (sgemm/dgemm; W^T is a transpose flag, not a copy); bias and activation
# are applied in one pass over Y.
@kernel
def dense_forward(X, W, b, act, Y):
    np.dot(X, W.T, Y)
    _bias_activation(Y, b, act)


# dZ = dY act'(Y) and db = sum_n dZ in one pass, then the GEMMs dW = dZ^T X, dX = dZ W.
# dZ is a scratch (N, M) (may be dY itself); db, dX of size 0 mean "not wanted".
@kernel
def dense_backward(dY, X, W, Y, act, dZ, dW, db, dX):
    _activation_grad_bias_grad(dY, Y, act, dZ, db)
    np.dot(dZ.T, X, dW)
    if dX.size > 0:
        np.dot(dZ, W, dX)


# ============================================================================ input checks
# True if x (1-D, contiguous) holds no NaN or Inf: x - x is 0 for a finite x and NaN for
# +-Inf and NaN. An integer OR over the comparisons, so the loop vectorises (a float sum would
# not: its order is fixed) and reads x once, where NumPy's isfinite(x).all() writes a mask first.
@kernel
def all_finite(x):
    bad = 0
    for i in range(x.size):
        d = x[i] - x[i]
        bad |= d != d
    return bad == 0


# True if every label lies in [0, C): one pass for the min and the max check.
@kernel
def labels_in_range(labels, C):
    bad = 0
    for i in range(labels.size):
        v = labels[i]
        bad |= (v < 0) | (v >= C)
    return bad == 0


# ============================================================================ losses
# Each loss kernel returns the float64 sum of the per-element (per-row) losses; it writes
# them into L when L is not empty (reduction "none") and the gradient, scaled by r, into G
# when need_grad.

# Per row n: lse = max z + log s with s = sum_c e^{z_c - max z}, logp_c = z_c - lse,
# q = (1 - ls) onehot(t_n) + ls / C (labels) or the given probabilities P (smoothed alike),
# L_n = -sum_c q_c logp_c, G_nc = (e^{z_c - max z} / s - q_c) r. One exponential per element,
# kept in a scratch row for the gradient (a second exp of logp_c made the kernel exp-bound).
@kernel
def cross_entropy_loss(logits, labels, P, use_probs, ls, r, need_grad, L, G):
    N, C = logits.shape
    keep = L.size > 0
    uniform = ls / logits.dtype.type(C)
    onems = _1 - ls
    E = np.empty(C, logits.dtype)
    total = np.float64(0.0)
    for n in range(N):
        m = logits[n, 0]
        for c in range(1, C):
            m = max(m, logits[n, c])
        s = np.float64(0.0)
        for c in range(C):
            e = _exp(logits[n, c] - m)
            E[c] = e
            s += e
        lse = m + np.log(s)
        row = np.float64(0.0)
        if use_probs:
            for c in range(C):
                q = P[n, c] * onems + uniform
                row -= q * (logits[n, c] - lse)
        else:
            t = labels[n]
            row = -onems * (logits[n, t] - lse)
            if ls != _0:
                acc = np.float64(0.0)
                for c in range(C):
                    acc += logits[n, c] - lse
                row -= uniform * acc
        total += row
        if keep:
            L[n] = row
        if need_grad:
            inv = 1.0 / s
            for c in range(C):
                q = P[n, c] * onems + uniform if use_probs else (uniform + onems if c == labels[n] else uniform)
                G[n, c] = (E[c] * inv - q) * r
    return total


# L = -logp[n, t_n];  G = -onehot(t) r
@kernel
def nll_loss(logp, labels, r, need_grad, L, G):
    N, C = logp.shape
    keep = L.size > 0
    total = np.float64(0.0)
    for n in range(N):
        v = -logp[n, labels[n]]
        total += v
        if keep:
            L[n] = v
        if need_grad:
            for c in range(C):
                G[n, c] = _0
            G[n, labels[n]] = -r
    return total


# d = o - t: L = d^2, G = 2 r d   (flat arrays)
@kernel
def mse_loss(O, T, r, need_grad, L, G):
    keep = L.size > 0
    r2 = _2 * r
    total = np.float64(0.0)
    for i in range(O.size):
        d = O[i] - T[i]
        v = d * d
        total += v
        if keep:
            L[i] = v
        if need_grad:
            G[i] = d * r2
    return total


# L = |o - t|, G = sign(o - t) r  (0 at 0)
@kernel
def l1_loss(O, T, r, need_grad, L, G):
    keep = L.size > 0
    total = np.float64(0.0)
    for i in range(O.size):
        d = O[i] - T[i]
        v = abs(d)
        total += v
        if keep:
            L[i] = v
        if need_grad:
            G[i] = r if d > _0 else (-r if d < _0 else _0 * d)
    return total


# L = d^2/2 if |d| <= delta else delta (|d| - delta/2);  G = clip(d, -delta, delta) r
@kernel
def huber_loss(O, T, delta, r, need_grad, L, G):
    keep = L.size > 0
    total = np.float64(0.0)
    for i in range(O.size):
        d = O[i] - T[i]
        a = abs(d)
        v = _HALF * d * d if a <= delta else delta * (a - _HALF * delta)
        total += v
        if keep:
            L[i] = v
        if need_grad:
            G[i] = min(max(d, -delta), delta) * r
    return total


# L = max(z, 0) - z t + log(1 + e^{-|z|});  G = (sigma(z) - t) r
@kernel
def bce_with_logits_loss(Z, T, r, need_grad, L, G):
    keep = L.size > 0
    total = np.float64(0.0)
    for i in range(Z.size):
        z = Z[i]
        t = T[i]
        v = max(z, _0) - z * t + np.log1p(np.exp(-abs(z)))
        total += v
        if keep:
            L[i] = v
        if need_grad:
            G[i] = (_sigmoid(z) - t) * r
    return total


# L = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100));
# G = (p - t) / max(p (1 - p), 1e-12) r        (PyTorch's clamps; floor = (-100, 1e-12))
@kernel
def bce_loss(Pr, T, r, floor, need_grad, L, G):
    keep = L.size > 0
    log_floor, eps = floor[0], floor[1]
    total = np.float64(0.0)
    for i in range(Pr.size):
        p = Pr[i]
        t = T[i]
        lp = np.log(p)  # -inf at 0, nan below: clamped to the floor, nan kept
        lp = log_floor if lp < log_floor else lp
        l1p = np.log1p(-p)
        l1p = log_floor if l1p < log_floor else l1p
        v = -(t * lp + (_1 - t) * l1p)
        total += v
        if keep:
            L[i] = v
        if need_grad:
            G[i] = (p - t) / max(p * (_1 - p), eps) * r
    return total


# ============================================================================ optimizers
# One pass over the flat arena: each kernel reads p, g and its state once and writes p and
# the state once. g is never written.
# Divisions and square roots share one unit that retires 8 float32 lanes only every ~5-6
# cycles: Adam with v / (1 - b2^t), sqrt and m / d ran at 2 cycles per element, bound by that
# unit and not by memory (35 GB/s in L2, the C++ kernel 52). So a division by a per-step
# constant is a multiplication by its reciprocal, computed once in float64 by the caller, and
# each kernel keeps at most one sqrt and one division per element.

# PyTorch SGD.  c = (lr, wd, mu, 1 - dampening, nesterov, first_step, tiny)
# g' = g + wd p;  b = g' (first step) or mu b + (1 - dampening) g';
# g' = g' + mu b (Nesterov) or b;  p = p - lr g'
@kernel
def sgd_step(p, g, buf, c):
    lr, wd, mu, omd, nesterov, first, tiny = c[0], c[1], c[2], c[3], c[4] != _0, c[5] != _0, c[6]
    for i in range(p.size):
        gi = g[i]
        if wd != _0:
            gi = gi + wd * p[i]
        if mu != _0:
            b = gi if first else _ftz(buf[i] * mu + omd * gi, tiny)
            buf[i] = b
            gi = gi + mu * b if nesterov else b
        p[i] = p[i] - lr * gi


# The course's momentum.  c = (wd, beta, 1 - beta, nesterov, scale, tiny)
# m = beta m + (1 - beta) g';  u = m or beta m + (1 - beta) g' (Nesterov);  p = p - scale u
# with scale = lr / (1 - beta^t) (bias correction) or lr
@kernel
def momentum_step(p, g, m, c):
    wd, beta, omb, nesterov, scale, tiny = c[0], c[1], c[2], c[3] != _0, c[4], c[5]
    for i in range(p.size):
        gi = g[i]
        if wd != _0:
            gi = gi + wd * p[i]
        mi = _ftz(m[i] * beta + omb * gi, tiny)
        m[i] = mi
        u = beta * mi + omb * gi if nesterov else mi
        p[i] = p[i] - scale * u


# PyTorch Adagrad.  c = (wd, clr, eps_root, eps),  clr = lr / (1 + (t - 1) lr_decay)
# s = s + g'^2;  p = p - clr g' / (sqrt(s + eps_root) + eps)
@kernel
def adagrad_step(p, g, state_sum, c):
    wd, clr, eps_root, eps = c[0], c[1], c[2], c[3]
    for i in range(p.size):
        gi = g[i]
        if wd != _0:
            gi = gi + wd * p[i]
        s = state_sum[i] + gi * gi
        state_sum[i] = s
        p[i] = p[i] - clr * gi / (np.sqrt(s + eps_root) + eps)


# PyTorch RMSprop + the course's bias correction.
# c = (wd, alpha, 1 - alpha, bc, centered, eps_root, eps, mu, lr, tiny), bc = 1 / (1 - alpha^t) or 1
# v = alpha v + (1 - alpha) g'^2;  centered: a = alpha a + (1 - alpha) g', v~ = v bc - (a bc)^2;
# d = sqrt(v~ + eps_root) + eps;  buf = mu buf + g'/d, p = p - lr buf (mu > 0), else p = p - lr g'/d
@kernel
def rmsprop_step(p, g, square_avg, grad_avg, momentum_buffer, c):
    wd, alpha, oma, bc, centered = c[0], c[1], c[2], c[3], c[4] != _0
    eps_root, eps, mu, lr, tiny = c[5], c[6], c[7], c[8], c[9]
    for i in range(p.size):
        gi = g[i]
        if wd != _0:
            gi = gi + wd * p[i]
        v = _ftz(square_avg[i] * alpha + oma * gi * gi, tiny)
        square_avg[i] = v
        v = v * bc
        if centered:
            a = _ftz(grad_avg[i] * alpha + oma * gi, tiny)
            grad_avg[i] = a
            a = a * bc
            v = v - a * a
        d = np.sqrt(v + eps_root) + eps
        if mu != _0:
            b = _ftz(momentum_buffer[i] * mu + gi / d, tiny)
            momentum_buffer[i] = b
            p[i] = p[i] - lr * b
        else:
            p[i] = p[i] - lr * gi / d


# PyTorch Adam / AdamW + eps_root.
# c = (decay, wd, b1, 1 - b1, b2, 1 - b2, amsgrad, lr / (1 - b1^t), 1 / (1 - b2^t), eps_root, eps, tiny)
# p = decay p (AdamW: decay = 1 - lr wd), else g' = g + wd p;
# m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  AMSGrad: vmax = max(vmax, v), v := vmax;
# p = p - lr / (1 - b1^t) m / (sqrt(v / (1 - b2^t) + eps_root) + eps)
@kernel
def adam_step(p, g, exp_avg, exp_avg_sq, max_exp_avg_sq, c):
    decay, wd, b1, omb1, b2, omb2 = c[0], c[1], c[2], c[3], c[4], c[5]
    amsgrad, step_size, inv_bc2, eps_root, eps, tiny = c[6] != _0, c[7], c[8], c[9], c[10], c[11]
    for i in range(p.size):
        pi = p[i] * decay
        gi = g[i]
        if wd != _0:
            gi = gi + wd * pi
        m = _ftz(exp_avg[i] * b1 + omb1 * gi, tiny)
        v = _ftz(exp_avg_sq[i] * b2 + omb2 * gi * gi, tiny)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        p[i] = pi - step_size * m / (np.sqrt(v * inv_bc2 + eps_root) + eps)


# PyTorch Adamax.  c = (wd, b1, 1 - b1, b2, eps, lr / (1 - b1^t), tiny)
# m = b1 m + (1 - b1) g';  u = max(b2 u, |g'| + eps);  p = p - lr / (1 - b1^t) m / u
@kernel
def adamax_step(p, g, exp_avg, exp_inf, c):
    wd, b1, omb1, b2, eps, step_size, tiny = c[0], c[1], c[2], c[3], c[4], c[5], c[6]
    for i in range(p.size):
        gi = g[i]
        if wd != _0:
            gi = gi + wd * p[i]
        m = _ftz(exp_avg[i] * b1 + omb1 * gi, tiny)
        exp_avg[i] = m
        u = max(exp_inf[i] * b2, abs(gi) + eps)
        exp_inf[i] = u
        p[i] = p[i] - step_size * m / u


# PyTorch NAdam.  c = (decay, wd, b1, 1 - b1, b2, 1 - b2, 1 / (1 - b2^t), eps, c_g, c_m, tiny)
# with c_g = lr (1 - mu_t) / (1 - prod mu), c_m = lr mu_{t+1} / (1 - prod mu * mu_{t+1});
# m, v as Adam;  d = sqrt(v / (1 - b2^t)) + eps;  p = p - (c_g g' + c_m m) / d
@kernel
def nadam_step(p, g, exp_avg, exp_avg_sq, c):
    decay, wd, b1, omb1, b2, omb2 = c[0], c[1], c[2], c[3], c[4], c[5]
    inv_bc2, eps, cg, cm, tiny = c[6], c[7], c[8], c[9], c[10]
    for i in range(p.size):
        pi = p[i] * decay
        gi = g[i]
        if wd != _0:
            gi = gi + wd * pi
        m = _ftz(exp_avg[i] * b1 + omb1 * gi, tiny)
        v = _ftz(exp_avg_sq[i] * b2 + omb2 * gi * gi, tiny)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        d = np.sqrt(v * inv_bc2) + eps
        p[i] = pi - (cg * gi + cm * m) / d


# PyTorch Adadelta.  c = (wd, rho, 1 - rho, eps, lr, tiny)
# s = rho s + (1 - rho) g'^2;  delta = sqrt((D + eps) / (s + eps)) g';
# D = rho D + (1 - rho) delta^2;  p = p - lr delta
@kernel
def adadelta_step(p, g, square_avg, acc_delta, c):
    wd, rho, omr, eps, lr, tiny = c[0], c[1], c[2], c[3], c[4], c[5]
    for i in range(p.size):
        gi = g[i]
        if wd != _0:
            gi = gi + wd * p[i]
        s = _ftz(square_avg[i] * rho + omr * gi * gi, tiny)
        square_avg[i] = s
        delta = np.sqrt((acc_delta[i] + eps) / (s + eps)) * gi
        acc_delta[i] = _ftz(acc_delta[i] * rho + omr * delta * delta, tiny)
        p[i] = p[i] - lr * delta


@kernel
def _optimizer_step(code, p, g, s1, s2, s3, c):
    if code == OPT_SGD:
        sgd_step(p, g, s1, c)
    elif code == OPT_MOMENTUM:
        momentum_step(p, g, s1, c)
    elif code == OPT_ADAGRAD:
        adagrad_step(p, g, s1, c)
    elif code == OPT_RMSPROP:
        rmsprop_step(p, g, s1, s2, s3, c)
    elif code == OPT_ADAM:
        adam_step(p, g, s1, s2, s3, c)
    elif code == OPT_ADAMAX:
        adamax_step(p, g, s1, s2, c)
    elif code == OPT_NADAM:
        nadam_step(p, g, s1, s2, c)
    elif code == OPT_ADADELTA:
        adadelta_step(p, g, s1, s2, c)


# ============================================================================ parallel drivers
# The standalone elementwise ops on large arrays, split over numba's threads: prange over
# chunks of ``chunk`` elements (of ``chunk`` rows for the row-wise kernels), each chunk one
# call of the serial kernel above on contiguous slices, so every formula has one home. The
# caller chooses the chunk (about size / threads) and whether to call a driver at all
# (numba_backend: NumbaBackend._run); train_step stays serial. A reduction sums each chunk
# into its own float64 partial, then the partials in chunk order.
@helper
def _span(k, chunk, n):
    lo = k * chunk
    return lo, min(lo + chunk, n)


# code, s1..s3, c as _optimizer_step; p, g and the states are flat (unused states empty)
@parallel
def parallel_optimizer_step(chunk, code, p, g, s1, s2, s3, c):
    n = p.size
    for k in prange((n + chunk - 1) // chunk):
        lo, hi = _span(k, chunk, n)
        _optimizer_step(code, p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi], s3[lo:hi], c)


# activation_forward over chunks; Z, Y flat
@parallel
def parallel_activation_forward(chunk, code, Z, Y, h0, h1, consts):
    n = Z.size
    for k in prange((n + chunk - 1) // chunk):
        lo, hi = _span(k, chunk, n)
        activation_forward(code, Z[lo:hi], Y[lo:hi], h0, h1, consts)


# activation_backward over chunks, the parameter gradient summed over their float64 partials
@parallel
def parallel_activation_backward(chunk, code, dY, Z, Y, dZ, h0, h1, consts, need_param):
    n = dY.size
    nc = (n + chunk - 1) // chunk
    partial = np.zeros(nc)
    for k in prange(nc):
        lo, hi = _span(k, chunk, n)
        partial[k] = activation_backward(code, dY[lo:hi], Z[lo:hi], Y[lo:hi], dZ[lo:hi], h0, h1, consts,
                                         need_param)
    total = np.float64(0.0)
    for k in range(nc):
        total += partial[k]
    return total


# Z, Y: (R, C), chunks of rows
@parallel
def parallel_prelu_forward(chunk, Z, alpha, Y):
    R = Z.shape[0]
    for k in prange((R + chunk - 1) // chunk):
        lo, hi = _span(k, chunk, R)
        prelu_forward(Z[lo:hi], alpha, Y[lo:hi])


# dalpha += the chunks' partial sums (float64, one row of partials per chunk)
@parallel
def parallel_prelu_backward(chunk, dY, Z, alpha, dZ, dalpha, need_param):
    R = Z.shape[0]
    nc = (R + chunk - 1) // chunk
    partial = np.zeros((nc, dalpha.size))
    for k in prange(nc):
        lo, hi = _span(k, chunk, R)
        prelu_backward(dY[lo:hi], Z[lo:hi], alpha, dZ[lo:hi], partial[k], need_param)
    for k in range(nc):
        for j in range(dalpha.size):
            dalpha[j] += partial[k, j]


# softmax (log False) or log_softmax (log True) of (R, C) arrays, chunks of rows
@parallel
def parallel_softmax_forward(chunk, log, Z, Y):
    R = Z.shape[0]
    for k in prange((R + chunk - 1) // chunk):
        lo, hi = _span(k, chunk, R)
        if log:
            log_softmax_forward(Z[lo:hi], Y[lo:hi])
        else:
            softmax_forward(Z[lo:hi], Y[lo:hi])


@parallel
def parallel_softmax_backward(chunk, log, dY, Z, Y, dZ):
    R = Y.shape[0]
    for k in prange((R + chunk - 1) // chunk):
        lo, hi = _span(k, chunk, R)
        if log:
            log_softmax_backward(dY[lo:hi], Z[lo:hi], Y[lo:hi], dZ[lo:hi])
        else:
            softmax_backward(dY[lo:hi], Z[lo:hi], Y[lo:hi], dZ[lo:hi])


# ============================================================================ whole step
# One training step of a Sequential of Linear layers, each followed by at most one
# elementwise activation, in one call: forward, loss, backward, optimizer step.
#
# layers (L, 7) int64, one row per Linear: w_off, b_off (-1: no bias), in, out, act,
#     z_off (-1: the activation's derivative needs only Y, or identity), y_off
# hyper (L, 2): activation hyper-parameters; consts: gelu's constants (see gelu_forward)
# params, grads: the flat arena (views of W, b are reshaped slices: no copy)
# Zbuf, Ybuf: per-layer pre-activations / outputs, (N, out) each at z_off / y_off
# D0, D1: two (N, max width) scratch buffers for dY / dZ / dX (ping-pong)
# loss: LOSS_CROSS_ENTROPY (labels, label smoothing ls) or LOSS_MSE (target T); r the
#     gradient scale (1/N or 1/numel for "mean", 1 for "sum")
# opt, s1..s3, c: the optimizer code, its state buffers and coefficients (see *_step)
# Returns the summed loss (float64). If it is not finite, nothing is updated: the caller
# raises, as the reference does before its backward pass.
@kernel
def train_step(X, labels, T, loss, ls, r, layers, hyper, consts, params, grads, Zbuf, Ybuf,
               D0, D1, opt, s1, s2, s3, c):
    N = X.shape[0]
    nl = layers.shape[0]
    empty = params[:0]
    # forward
    A = X
    for l in range(nl):
        w_off, b_off, n_in, n_out, act, z_off, y_off = (
            layers[l, 0], layers[l, 1], layers[l, 2], layers[l, 3], layers[l, 4], layers[l, 5],
            layers[l, 6])
        W = params[w_off:w_off + n_out * n_in].reshape((n_out, n_in))
        b = params[b_off:b_off + n_out] if b_off >= 0 else empty
        Yf = Ybuf[y_off:y_off + N * n_out]
        Y = Yf.reshape((N, n_out))
        if z_off < 0:
            dense_forward(A, W, b, act, Y)
        else:
            Zf = Zbuf[z_off:z_off + N * n_out]
            dense_forward(A, W, b, ACT_IDENTITY, Zf.reshape((N, n_out)))
            activation_forward(act, Zf, Yf, hyper[l, 0], hyper[l, 1], consts)
        A = Y
    # loss and its gradient, into D0
    n_out = layers[nl - 1, 3]
    G = D0[:N * n_out].reshape((N, n_out))
    if loss == LOSS_CROSS_ENTROPY:
        total = cross_entropy_loss(A, labels, A, False, ls, r, True, empty, G)
    else:
        total = mse_loss(A.reshape(-1), T.reshape(-1), r, True, empty, G.reshape(-1))
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
        Yf = Ybuf[y_off:y_off + N * n_out]
        dYf = dcur[:N * n_out]
        if l > 0:
            p_off, p_out = layers[l - 1, 6], layers[l - 1, 3]
            A = Ybuf[p_off:p_off + N * p_out].reshape((N, p_out))
        else:
            A = X
        dX = dnext[:N * n_in].reshape((N, n_in)) if l > 0 else empty.reshape((0, 0))
        if z_off < 0:
            dense_backward(dYf.reshape((N, n_out)), A, W, Yf.reshape((N, n_out)), act,
                           dYf.reshape((N, n_out)), dW, db, dX)
        else:
            Zf = Zbuf[z_off:z_off + N * n_out]
            activation_backward(act, dYf, Zf, Yf, dYf, hyper[l, 0], hyper[l, 1], consts, False)
            dense_backward(dYf.reshape((N, n_out)), A, W, Yf.reshape((N, n_out)), ACT_IDENTITY,
                           dYf.reshape((N, n_out)), dW, db, dX)
        dcur, dnext = dnext, dcur
    # optimizer
    _optimizer_step(opt, params, grads, s1, s2, s3, c)
    return total
