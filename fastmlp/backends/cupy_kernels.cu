// fastmlp CUDA kernels for the `cupy` backend (fastmlp/backends/cupy_backend.py).
//
// Every kernel of the backend lives in this one file, named after the op it implements, so
// `grep -rn relu_forward` finds the Python reference, every backend and this CUDA version.
// GEMMs are not here: they go to cuBLAS through cupy.matmul. What is here is everything
// around them:
//   dense_forward        the GEMM epilogue: Y = act(Z + b), in place over the GEMM output Z
//   dense_backward       dZ = dY * act'(Y) fused with db = sum_n dZ (a block reduction)
//   activation_forward   y = act(z) for every elementwise activation (<name>_forward below)
//   activation_backward  dz = dy * act'(z), plus the per-element d/dbeta of softplus / silu
//   prelu_forward/backward, softmax_/log_softmax_forward/backward (one block per row)
//   cross_entropy_loss   softmax + cross-entropy, value per row and gradient, one pass
//   mse_loss ... nll_loss  the other losses: per-element value and gradient (the sum is cupy's)
//   <optimizer>_step     one pass over the flat parameter / gradient / state buffers
//
// Conventions
//   - Templates over the floating type T (float, double) are exported through
//     `name_expressions` ("dense_forward<float>"); there are no extern "C" kernels.
//     Every helper is `__device__`. Math is done in T: float32 models get float32 state and
//     float32 math (as apex's fused optimizers), float64 models stay float64.
//   - Sizes are `long long` (pass np.int64), flags and codes `int` (np.int32), real scalars T
//     (np.float32 / np.float64): CuPy passes a Python float as a double and a Python int as
//     a long long, so the backend always passes explicit NumPy scalars.
//   - An optional array is a pointer that may be NULL (CuPy passes None as NULL).
//   - Elementwise kernels are grid-stride loops: any grid and block size is correct.
//     Reduction kernels use __shared__ memory and __syncthreads: any block size up to
//     MAX_BLOCK threads is correct; the reductions do not assume a power of two.
//   - No #include: NVRTC cannot include <cstdint> and friends, and the math functions are
//     built in. The same source compiles on the CPU with g++ for the tests, through the
//     emulation header tests/cuda_emu/cuda_emu.h (CUDA keywords and built-ins).
//
// Rebuild: nothing to do. CuPy compiles this file with NVRTC on first use of the backend
// (cupy.RawModule, cached by CuPy on disk). To check it compiles for every architecture
// without a GPU:  pytest tests/test_cupy_compile.py   (NVRTC, the options CuPy uses)
// To run its kernels on the CPU against the NumPy reference:  pytest tests/test_cupy_emulated.py

#define MAX_BLOCK 1024

// Activation codes: the Python backend reads this enum from this file (one source of truth).
enum ActivationCode {
    ACT_IDENTITY = 0,
    ACT_RELU = 1,
    ACT_SIGMOID = 2,
    ACT_TANH = 3,
    ACT_LEAKY_RELU = 4,
    ACT_ELU = 5,
    ACT_SOFTPLUS = 6,
    ACT_SOFTSIGN = 7,
    ACT_LOG_SIGMOID = 8,
    ACT_SILU = 9,
    ACT_MISH = 10,
    ACT_GELU = 11,
    ACT_GELU_TANH = 12,
    ACT_SELU = 13,
    ACT_SINC = 14,
    ACT_SINC_NORMALIZED = 15,
    ACT_STEP = 16
};

#define SELU_ALPHA 1.6732632423543772848170429916717
#define SELU_SCALE 1.0507009873554804934193349852946
#define PI_D 3.14159265358979323846
#define SQRT_2_OVER_PI 0.79788456080286535588
#define INV_SQRT_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

// ------------------------------------------------------------------ scalar helpers

// sigma(z) = 1 / (1 + e^{-z}), without overflow: e = e^{-|z|} <= 1.
template <typename T>
__device__ __forceinline__ T sigmoid_value(T z) {
    T e = exp(-fabs(z));
    return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
}

// log(1 + e^x) = max(x, 0) + log1p(e^{-|x|})   (numpy's logaddexp(0, x))
template <typename T>
__device__ __forceinline__ T log1p_exp(T x) {
    return (x > T(0) ? x : T(0)) + log1p(exp(-fabs(x)));
}

// ------------------------------------------------------------------ activations, one pair per op
// Forward y = f(z); backward returns act'(z) so that dz = dy * act'(z). h1, h2 are the
// hyper-parameters in the order of the Python op (slope, alpha, beta, threshold...).

template <typename T> __device__ __forceinline__ T relu_forward(T z) { return z > T(0) ? z : T(0); }
// relu'(z) = [z > 0]; 0 at the kink (PyTorch). y > 0 iff z > 0, so Y may stand for Z.
template <typename T> __device__ __forceinline__ T relu_backward(T z) { return z > T(0) ? T(1) : T(0); }

template <typename T> __device__ __forceinline__ T sigmoid_forward(T z) { return sigmoid_value(z); }
// sigma' = y (1 - y)
template <typename T> __device__ __forceinline__ T sigmoid_backward(T y) { return y * (T(1) - y); }

template <typename T> __device__ __forceinline__ T tanh_forward(T z) { return tanh(z); }
// tanh' = 1 - y^2
template <typename T> __device__ __forceinline__ T tanh_backward(T y) { return T(1) - y * y; }

// leaky_relu(z) = z if z > 0 else slope z
template <typename T> __device__ __forceinline__ T leaky_relu_forward(T z, T slope) { return z > T(0) ? z : z * slope; }
template <typename T> __device__ __forceinline__ T leaky_relu_backward(T z, T slope) { return z > T(0) ? T(1) : slope; }

// elu(z) = z if z > 0 else alpha (e^z - 1);  elu' = 1 if z > 0 else alpha e^z
template <typename T> __device__ __forceinline__ T elu_forward(T z, T alpha) { return z > T(0) ? z : alpha * expm1(z); }
template <typename T> __device__ __forceinline__ T elu_backward(T z, T alpha) { return z > T(0) ? T(1) : alpha * exp(z); }

// softplus_beta(z) = log(1 + e^{beta z}) / beta, linear (= z) where beta z > threshold
template <typename T> __device__ __forceinline__ T softplus_forward(T z, T beta, T threshold) {
    T bz = beta * z;
    return bz > threshold ? z : log1p_exp(bz) / beta;
}
// d/dz = sigma(beta z) (1 in the linear region)
template <typename T> __device__ __forceinline__ T softplus_backward(T z, T beta, T threshold) {
    T bz = beta * z;
    return bz > threshold ? T(1) : sigmoid_value(bz);
}
// dy d/dbeta = dy (z sigma(beta z) - y) / beta (0 in the linear region); the products are
// associated as in the reference, since the backend sums these terms (a sum that may cancel)
template <typename T> __device__ __forceinline__ T softplus_dbeta(T dy, T z, T y, T beta, T threshold) {
    T bz = beta * z;
    return bz > threshold ? T(0) : dy * (z * sigmoid_value(bz) - y) / beta;
}

// softsign(z) = z / (1 + |z|);  softsign' = 1 / (1 + |z|)^2
template <typename T> __device__ __forceinline__ T softsign_forward(T z) { return z / (T(1) + fabs(z)); }
template <typename T> __device__ __forceinline__ T softsign_backward(T z) {
    T d = T(1) + fabs(z);
    return T(1) / (d * d);
}

// log sigma(z) = -log(1 + e^{-z});  derivative sigma(-z)
template <typename T> __device__ __forceinline__ T log_sigmoid_forward(T z) { return -log1p_exp(-z); }
template <typename T> __device__ __forceinline__ T log_sigmoid_backward(T z) { return sigmoid_value(-z); }

// silu_beta(z) = z sigma(beta z);  d/dz = s + beta z s (1 - s);  d/dbeta = z^2 s (1 - s)
template <typename T> __device__ __forceinline__ T silu_forward(T z, T beta) { return z * sigmoid_value(beta * z); }
template <typename T> __device__ __forceinline__ T silu_backward(T z, T beta) {
    T s = sigmoid_value(beta * z);
    return s + beta * z * (s * (T(1) - s));
}
template <typename T> __device__ __forceinline__ T silu_dbeta(T dy, T z, T beta) {
    T s = sigmoid_value(beta * z);
    return dy * z * z * (s * (T(1) - s));  // dy d/dbeta, associated as in the reference
}

// mish(z) = z tanh(softplus(z));  mish' = t + z sigma(z) (1 - t^2), t = tanh(softplus(z))
template <typename T> __device__ __forceinline__ T mish_forward(T z) { return z * tanh(log1p_exp(z)); }
template <typename T> __device__ __forceinline__ T mish_backward(T z) {
    T t = tanh(log1p_exp(z));
    return t + z * sigmoid_value(z) * (T(1) - t * t);
}

// exact gelu(z) = z Phi(z) = z/2 (1 + erf(z / sqrt 2));  gelu' = Phi(z) + z phi(z)
// tanh form: z/2 (1 + tanh(k (z + c z^3))), k = sqrt(2/pi), c = 0.044715;
//   derivative 0.5 (1 + t) + 0.5 z (1 - t^2) k (1 + 3 c z^2)
template <typename T> __device__ __forceinline__ T gelu_forward(T z, int tanh_form) {
    if (tanh_form) {
        T t = tanh(T(SQRT_2_OVER_PI) * (z + T(0.044715) * z * z * z));
        return T(0.5) * z * (T(1) + t);
    }
    return T(0.5) * z * (T(1) + erf(z * T(INV_SQRT_2)));
}
template <typename T> __device__ __forceinline__ T gelu_backward(T z, int tanh_form) {
    if (tanh_form) {
        T k = T(SQRT_2_OVER_PI), c = T(0.044715);
        T t = tanh(k * (z + c * z * z * z));
        return T(0.5) * (T(1) + t) + T(0.5) * z * (T(1) - t * t) * k * (T(1) + T(3) * c * z * z);
    }
    T cdf = T(0.5) * (T(1) + erf(z * T(INV_SQRT_2)));
    T pdf = exp(T(-0.5) * z * z) * T(INV_SQRT_2PI);
    return cdf + z * pdf;
}

// selu(z) = scale (z if z > 0 else alpha (e^z - 1));  selu' = scale (1 if z > 0 else alpha e^z)
template <typename T> __device__ __forceinline__ T selu_forward(T z) { return T(SELU_SCALE) * elu_forward(z, T(SELU_ALPHA)); }
template <typename T> __device__ __forceinline__ T selu_backward(T z) { return T(SELU_SCALE) * elu_backward(z, T(SELU_ALPHA)); }

// sinc(z) = sin(u) / u with u = z (or pi z when normalized), 1 at 0. Computed as numpy's
// np.sinc(x) = sin(pi x) / (pi x) with x = z / pi (or z), so both round alike.
template <typename T> __device__ __forceinline__ T sinc_forward(T z, int normalized) {
    T x = normalized ? z : z * T(1.0 / PI_D);
    T y = T(PI_D) * (x == T(0) ? T(1e-20) : x);
    return sin(y) / y;
}
// d/du sin(u)/u = (cos u - sin(u)/u) / u, by its Taylor series -u/3 + u^3/30 - u^5/840 + u^7/45360
// where |u| < 0.1 (no cancellation); times pi when normalized.
template <typename T> __device__ __forceinline__ T sinc_backward(T z, int normalized) {
    T scale = normalized ? T(PI_D) : T(1);
    T u = z * scale;
    T d;
    if (fabs(u) < T(0.1)) {
        T u2 = u * u;
        d = u * (T(-1.0 / 3.0) + u2 * (T(1.0 / 30.0) + u2 * (T(-1.0 / 840.0) + u2 / T(45360))));
    } else {
        d = (cos(u) - sin(u) / u) / u;
    }
    return scale * d;
}

// step(z) = [z > 0]; its derivative is 0 wherever it exists
template <typename T> __device__ __forceinline__ T step_forward(T z) { return z > T(0) ? T(1) : T(0); }
template <typename T> __device__ __forceinline__ T step_backward(T z) { return T(0); }

// y = act(z) for an activation code.
template <typename T>
__device__ T activation_value(int act, T z, T h1, T h2) {
    switch (act) {
        case ACT_RELU: return relu_forward(z);
        case ACT_SIGMOID: return sigmoid_forward(z);
        case ACT_TANH: return tanh_forward(z);
        case ACT_LEAKY_RELU: return leaky_relu_forward(z, h1);
        case ACT_ELU: return elu_forward(z, h1);
        case ACT_SOFTPLUS: return softplus_forward(z, h1, h2);
        case ACT_SOFTSIGN: return softsign_forward(z);
        case ACT_LOG_SIGMOID: return log_sigmoid_forward(z);
        case ACT_SILU: return silu_forward(z, h1);
        case ACT_MISH: return mish_forward(z);
        case ACT_GELU: return gelu_forward(z, 0);
        case ACT_GELU_TANH: return gelu_forward(z, 1);
        case ACT_SELU: return selu_forward(z);
        case ACT_SINC: return sinc_forward(z, 0);
        case ACT_SINC_NORMALIZED: return sinc_forward(z, 1);
        case ACT_STEP: return step_forward(z);
        default: return z;  // ACT_IDENTITY
    }
}

// act'(z) for an activation code, from z (and y where the derivative is cheaper from y).
template <typename T>
__device__ T activation_derivative(int act, T z, T y, T h1, T h2) {
    switch (act) {
        case ACT_RELU: return relu_backward(y);
        case ACT_SIGMOID: return sigmoid_backward(y);
        case ACT_TANH: return tanh_backward(y);
        case ACT_LEAKY_RELU: return leaky_relu_backward(z, h1);
        case ACT_ELU: return elu_backward(z, h1);
        case ACT_SOFTPLUS: return softplus_backward(z, h1, h2);
        case ACT_SOFTSIGN: return softsign_backward(z);
        case ACT_LOG_SIGMOID: return log_sigmoid_backward(z);
        case ACT_SILU: return silu_backward(z, h1);
        case ACT_MISH: return mish_backward(z);
        case ACT_GELU: return gelu_backward(z, 0);
        case ACT_GELU_TANH: return gelu_backward(z, 1);
        case ACT_SELU: return selu_backward(z);
        case ACT_SINC: return sinc_backward(z, 0);
        case ACT_SINC_NORMALIZED: return sinc_backward(z, 1);
        case ACT_STEP: return step_backward(z);
        default: return T(1);  // ACT_IDENTITY
    }
}

// ------------------------------------------------------------------ block reductions
// Sum (or max) of one value per thread of a block of any size <= MAX_BLOCK. Every thread of
// the block must call it; every thread gets the result. `sh` is a __shared__ T[MAX_BLOCK].
template <typename T>
__device__ T block_sum(T v, T* sh) {
    unsigned tid = threadIdx.x + threadIdx.y * blockDim.x;
    unsigned nt = blockDim.x * blockDim.y;
    sh[tid] = v;
    __syncthreads();
    for (unsigned s = 1; s < nt; s *= 2) {
        if (tid % (2 * s) == 0 && tid + s < nt) sh[tid] += sh[tid + s];
        __syncthreads();
    }
    T total = sh[0];
    __syncthreads();  // sh may be reused right after
    return total;
}

template <typename T>
__device__ T block_max(T v, T* sh) {
    unsigned tid = threadIdx.x + threadIdx.y * blockDim.x;
    unsigned nt = blockDim.x * blockDim.y;
    sh[tid] = v;
    __syncthreads();
    for (unsigned s = 1; s < nt; s *= 2) {
        if (tid % (2 * s) == 0 && tid + s < nt && sh[tid + s] > sh[tid]) sh[tid] = sh[tid + s];
        __syncthreads();
    }
    T m = sh[0];
    __syncthreads();
    return m;
}

// ------------------------------------------------------------------ dense
// Epilogue of Y = act(X W^T + b): Z is the (rows, cols) GEMM output X W^T, overwritten with
//   Y[n, j] = act(Z[n, j] + b[j])          (b may be NULL: no bias)
// Grid-stride over rows * cols elements.
template <typename T>
__global__ void dense_forward(T* Z, const T* b, long long rows, long long cols, int act, T h1, T h2) {
    long long n = rows * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T z = Z[i];
        if (b) z += b[i % cols];
        Z[i] = activation_value(act, z, h1, h2);
    }
}

// Backward of the epilogue, fused with the bias gradient:
//   dZ[n, j] = dY[n, j] * act'(Y[n, j])       (act in identity, relu, sigmoid, tanh: Y suffices)
//   db[j]    = sum_n dZ[n, j]                 (db may be NULL: no bias)
// 2-D blocks: threadIdx.x walks columns (coalesced), threadIdx.y walks rows with stride
// blockDim.y; the partial sums of a column tile are reduced over y in shared memory.
// Grid-stride over column tiles of blockDim.x columns. dZ may alias dY (in place).
template <typename T>
__global__ void dense_backward(const T* dY, const T* Y, T* dZ, T* db, long long rows, long long cols,
                               int act) {
    __shared__ T sh[MAX_BLOCK];
    unsigned tx = threadIdx.x, ty = threadIdx.y;
    for (long long c0 = (long long)blockIdx.x * blockDim.x; c0 < cols; c0 += (long long)gridDim.x * blockDim.x) {
        long long j = c0 + tx;
        T acc = T(0);
        if (j < cols) {
            for (long long r = ty; r < rows; r += blockDim.y) {
                long long i = r * cols + j;
                T y = Y[i];
                T d = dY[i] * activation_derivative(act, y, y, T(0), T(0));
                dZ[i] = d;
                acc += d;
            }
        }
        if (db) {  // uniform over the block: every thread reaches the barriers or none does
            sh[ty * blockDim.x + tx] = acc;
            __syncthreads();
            if (ty == 0 && j < cols) {
                T s = T(0);
                for (unsigned k = 0; k < blockDim.y; ++k) s += sh[k * blockDim.x + tx];
                db[j] = s;
            }
            __syncthreads();
        }
    }
}

// ------------------------------------------------------------------ activations
// Y[i] = act(Z[i]) over n elements (Y may alias Z).
template <typename T>
__global__ void activation_forward(const T* Z, T* Y, long long n, int act, T h1, T h2) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        Y[i] = activation_value(act, Z[i], h1, h2);
    }
}

// dZ[i] = dY[i] * act'(Z[i]) over n elements; when dparam is not NULL, also the per-element
// contribution to the gradient of a trainable beta (softplus, silu):
//   softplus: dparam[i] = dY (z sigma(beta z) - y) / beta      silu: dparam[i] = dY z^2 s (1 - s)
// (the backend sums it). dZ may alias dY.
template <typename T>
__global__ void activation_backward(const T* dY, const T* Z, const T* Y, T* dZ, T* dparam, long long n,
                                    int act, T h1, T h2) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T dy = dY[i], z = Z[i], y = Y[i];
        if (dparam) {
            if (act == ACT_SOFTPLUS) dparam[i] = softplus_dbeta(dy, z, y, h1, h2);
            else if (act == ACT_SILU) dparam[i] = silu_dbeta(dy, z, h1);
            else dparam[i] = T(0);
        }
        dZ[i] = dy * activation_derivative(act, z, y, h1, h2);
    }
}

// prelu(z) = z if z > 0 else alpha[i % n_alpha] z   (n_alpha = 1 shared, or = features;
// PyTorch's test z > 0, NaN -> NaN)
template <typename T>
__global__ void prelu_forward(const T* Z, const T* alpha, T* Y, long long n, long long n_alpha) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T z = Z[i];
        Y[i] = z > T(0) ? z : alpha[i % n_alpha] * z;
    }
}

// dZ = dY if z > 0 else alpha dY (PyTorch: slope alpha at z = 0 and -0);
// contrib[i] = 0 if z > 0 else dY z (= dY min(0, z); NULL: not wanted), which the
// backend sums per alpha (dalpha = sum of contrib over every axis alpha is broadcast along).
template <typename T>
__global__ void prelu_backward(const T* dY, const T* Z, const T* alpha, T* dZ, T* contrib, long long n,
                               long long n_alpha) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T z = Z[i], dy = dY[i];
        bool pos = z > T(0);
        if (contrib) contrib[i] = pos ? T(0) : dy * z;
        dZ[i] = pos ? dy : alpha[i % n_alpha] * dy;
    }
}

// ------------------------------------------------------------------ softmax family (one block per row)
// softmax(z)_i = e^{z_i - max z} / sum_j e^{z_j - max z}, along rows of length cols.
// Grid-stride over rows; the threads of a block (1-D) share a row.
template <typename T>
__global__ void softmax_forward(const T* Z, T* Y, long long rows, long long cols) {
    __shared__ T sh[MAX_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* z = Z + r * cols;
        T* y = Y + r * cols;
        T m = z[0];  // cols >= 1: the backend never launches on an empty row
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) m = z[j] > m ? z[j] : m;
        m = block_max(m, sh);
        T s = T(0);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {
            T e = exp(z[j] - m);
            y[j] = e;
            s += e;
        }
        s = block_sum(s, sh);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) y[j] = y[j] / s;
    }
}

// log_softmax(z)_i = z_i - max z - log sum_j e^{z_j - max z}
template <typename T>
__global__ void log_softmax_forward(const T* Z, T* Y, long long rows, long long cols) {
    __shared__ T sh[MAX_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* z = Z + r * cols;
        T* y = Y + r * cols;
        T m = z[0];  // cols >= 1: the backend never launches on an empty row
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) m = z[j] > m ? z[j] : m;
        m = block_max(m, sh);
        T s = T(0);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += exp(z[j] - m);
        s = block_sum(s, sh);
        T lse = log(s);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) y[j] = (z[j] - m) - lse;
    }
}

// dz = y * (dy - sum_j dy_j y_j)
template <typename T>
__global__ void softmax_backward(const T* dY, const T* Y, T* dZ, long long rows, long long cols) {
    __shared__ T sh[MAX_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        long long o = r * cols;
        T s = T(0);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += dY[o + j] * Y[o + j];
        s = block_sum(s, sh);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) dZ[o + j] = Y[o + j] * (dY[o + j] - s);
    }
}

// dz = dy - e^y * sum_j dy_j
template <typename T>
__global__ void log_softmax_backward(const T* dY, const T* Y, T* dZ, long long rows, long long cols) {
    __shared__ T sh[MAX_BLOCK];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        long long o = r * cols;
        T s = T(0);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) s += dY[o + j];
        s = block_sum(s, sh);
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) dZ[o + j] = dY[o + j] - exp(Y[o + j]) * s;
    }
}

// ------------------------------------------------------------------ losses
// Softmax + cross-entropy from logits (rows, cols), one block per row:
//   log p_c = (z_c - max z) - log sum_k e^{z_k - max z}
//   q_c = (1 - ls) [c == t] + ls / C      (labels t, int64)   or   (1 - ls) Q_c + ls / C (probs)
//   L[n] = -sum_c q_c log p_c,   G[n, c] = (p_c - q_c) * r   (G may be NULL)
// Exactly one of labels / probs is not NULL.
template <typename T>
__global__ void cross_entropy_loss(const T* logits, const long long* labels, const T* probs, T* L, T* G,
                                   long long rows, long long cols, T ls, T r) {
    __shared__ T sh[MAX_BLOCK];
    T uniform = ls / T(cols);
    for (long long n = blockIdx.x; n < rows; n += gridDim.x) {
        const T* z = logits + n * cols;
        T m = z[0];  // cols >= 1: the backend never launches on an empty row
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) m = z[c] > m ? z[c] : m;
        m = block_max(m, sh);
        T s = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) s += exp(z[c] - m);
        s = block_sum(s, sh);
        T log_s = log(s);
        long long t = labels ? labels[n] : -1;
        T loss = T(0);
        for (long long c = threadIdx.x; c < cols; c += blockDim.x) {
            T q = labels ? (c == t ? T(1) : T(0)) : probs[n * cols + c];
            if (ls != T(0)) q = q * (T(1) - ls) + uniform;
            T logp = (z[c] - m) - log_s;
            loss -= q * logp;
            if (G) G[n * cols + c] = (exp(logp) - q) * r;
        }
        loss = block_sum(loss, sh);
        if (threadIdx.x == 0) L[n] = loss;
    }
}

// Pointwise losses over n elements, d = out - t: value L[i] and gradient G[i] (G may be NULL),
// r = 1/n for reduction "mean" else 1; the backend sums L.
//   mse:   L = d^2,                    G = 2 d r
//   l1:    L = |d|,                    G = sign(d) r
//   huber: L = d^2/2 if |d| <= delta else delta (|d| - delta/2),   G = clip(d, -delta, delta) r
template <typename T>
__global__ void mse_loss(const T* out, const T* target, T* L, T* G, long long n, T r) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T d = out[i] - target[i];
        L[i] = d * d;
        if (G) G[i] = d * (T(2) * r);
    }
}

template <typename T>
__global__ void l1_loss(const T* out, const T* target, T* L, T* G, long long n, T r) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T d = out[i] - target[i];
        L[i] = fabs(d);
        if (G) G[i] = (d > T(0) ? T(1) : (d < T(0) ? T(-1) : T(0))) * r;
    }
}

template <typename T>
__global__ void huber_loss(const T* out, const T* target, T* L, T* G, long long n, T delta, T r) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T d = out[i] - target[i];
        T a = fabs(d);
        L[i] = a <= delta ? T(0.5) * d * d : delta * (a - T(0.5) * delta);
        if (G) G[i] = (d > delta ? delta : (d < -delta ? -delta : d)) * r;
    }
}

// Binary cross-entropy from logits z: L = max(z, 0) - z t + log(1 + e^{-|z|}),
// G = (sigma(z) - t) r
template <typename T>
__global__ void bce_with_logits_loss(const T* z, const T* target, T* L, T* G, long long n, T r) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T x = z[i], t = target[i];
        L[i] = (x > T(0) ? x : T(0)) - x * t + log1p(exp(-fabs(x)));
        if (G) G[i] = (sigmoid_value(x) - t) * r;
    }
}

// Binary cross-entropy of probabilities p: L = -(t max(log p, -100) + (1 - t) max(log(1 - p), -100)),
// G = (p - t) / max(p (1 - p), 1e-12) r   (PyTorch's clamps)
template <typename T>
__global__ void bce_loss(const T* p, const T* target, T* L, T* G, long long n, T r) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T x = p[i], t = target[i];
        T lp = log(x), l1p = log1p(-x);
        lp = lp > T(-100) ? lp : T(-100);
        l1p = l1p > T(-100) ? l1p : T(-100);
        L[i] = -(t * lp + (T(1) - t) * l1p);
        if (G) {
            T v = x * (T(1) - x);
            G[i] = (x - t) / (v > T(1e-12) ? v : T(1e-12)) * r;
        }
    }
}

// Negative log-likelihood from log-probabilities (rows, cols) and int64 labels t:
//   L[n] = -logp[n, t_n],   G[n, c] = -r [c == t_n]    (G may be NULL)
// Grid-stride over rows * cols elements (G is written whole, so no memset is needed).
template <typename T>
__global__ void nll_loss(const T* logp, const long long* labels, T* L, T* G, long long rows, long long cols,
                         T r) {
    long long n = rows * cols;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long row = i / cols, c = i % cols;
        long long t = labels[row];
        if (c == t) L[row] = -logp[i];
        if (G) G[i] = c == t ? -r : T(0);
    }
}

// ------------------------------------------------------------------ optimizers
// One pass over n parameters: read p, g and the state once, write p and the state once.
// g is never written. Scalars that depend only on the hyper-parameters and the step (1 - beta,
// bias corrections, schedules) are computed on the host in double and passed rounded to T, as
// the reference does (in float32, 1 - 0.9f is not the float nearest to 0.1). Optional state
// may be NULL.

// SGD (PyTorch): g' = g + wd p; with momentum mu: buf = g' at the first step, else
//   buf = mu buf + (1 - dampening) g';  u = g' + mu buf (nesterov) or buf;  p -= lr u
template <typename T>
__global__ void sgd_step(T* p, const T* g, T* buf, long long n, T lr, T momentum, T one_minus_dampening,
                         T weight_decay, int nesterov, int first_step) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        if (weight_decay != T(0)) gi += weight_decay * p[i];
        if (buf) {
            T b = first_step ? gi : momentum * buf[i] + one_minus_dampening * gi;
            buf[i] = b;
            gi = nesterov ? gi + momentum * b : b;
        }
        p[i] -= lr * gi;
    }
}

// The course's momentum: m = beta m + (1 - beta) g';  u = m or beta m + (1 - beta) g' (nesterov);
//   p -= scale u,  scale = lr / (1 - beta^t) with bias correction, else lr
template <typename T>
__global__ void momentum_step(T* p, const T* g, T* m, long long n, T scale, T beta, T one_minus_beta,
                              T weight_decay, int nesterov) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        if (weight_decay != T(0)) gi += weight_decay * p[i];
        T mi = beta * m[i] + one_minus_beta * gi;
        m[i] = mi;
        T u = nesterov ? beta * mi + one_minus_beta * gi : mi;
        p[i] -= scale * u;
    }
}

// Adagrad: s += g'^2;  p -= clr g' / (sqrt(s + eps_root) + eps),  clr = lr / (1 + (t - 1) lr_decay)
template <typename T>
__global__ void adagrad_step(T* p, const T* g, T* state_sum, long long n, T clr, T weight_decay, T eps,
                             T eps_root) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        if (weight_decay != T(0)) gi += weight_decay * p[i];
        T s = state_sum[i] + gi * gi;
        state_sum[i] = s;
        p[i] -= clr * gi / (sqrt(s + eps_root) + eps);
    }
}

// RMSprop: v = alpha v + (1 - alpha) g'^2;  centered: a = alpha a + (1 - alpha) g', v~ = v c - (a c)^2
// (c = 1 / (1 - alpha^t) with bias correction, else 1);  d = sqrt(v~ + eps_root) + eps;
// momentum: buf = mu buf + g' / d, p -= lr buf;  else p -= lr g' / d.
// grad_avg is NULL unless centered, momentum_buffer NULL unless momentum > 0.
template <typename T>
__global__ void rmsprop_step(T* p, const T* g, T* square_avg, T* grad_avg, T* momentum_buffer, long long n,
                             T lr, T alpha, T one_minus_alpha, T eps, T weight_decay, T momentum, T c,
                             T eps_root) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        if (weight_decay != T(0)) gi += weight_decay * p[i];
        T v = alpha * square_avg[i] + one_minus_alpha * gi * gi;
        square_avg[i] = v;
        v = v * c;
        if (grad_avg) {
            T a = alpha * grad_avg[i] + one_minus_alpha * gi;
            grad_avg[i] = a;
            a = a * c;
            v = v - a * a;
        }
        T d = sqrt(v + eps_root) + eps;
        if (momentum_buffer) {
            T b = momentum * momentum_buffer[i] + gi / d;
            momentum_buffer[i] = b;
            p[i] -= lr * b;
        } else {
            p[i] -= lr * gi / d;
        }
    }
}

// Adam / AdamW: decoupled: p *= 1 - lr wd, else g' = g + wd p;
//   m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  AMSGrad: vmax = max(vmax, v), v := vmax;
//   p -= step_size m / (sqrt(v / bc2 + eps_root) + eps),  step_size = lr / (1 - b1^t), bc2 = 1 - b2^t
// max_exp_avg_sq is NULL unless amsgrad.
template <typename T>
__global__ void adam_step(T* p, const T* g, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, long long n,
                          T step_size, T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps,
                          T weight_decay, T decay_factor, T bc2, T eps_root, int decoupled) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        T pi = p[i];
        if (weight_decay != T(0)) {
            if (decoupled) pi *= decay_factor;
            else gi += weight_decay * pi;
        }
        T m = beta1 * exp_avg[i] + one_minus_beta1 * gi;
        T v = beta2 * exp_avg_sq[i] + one_minus_beta2 * gi * gi;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (max_exp_avg_sq) {
            T vm = max_exp_avg_sq[i];
            v = v > vm ? v : vm;
            max_exp_avg_sq[i] = v;
        }
        p[i] = pi - step_size * m / (sqrt(v / bc2 + eps_root) + eps);
    }
}

// Adamax: m = b1 m + (1 - b1) g';  u = max(b2 u, |g'| + eps);  p -= step_size m / u,
//   step_size = lr / (1 - b1^t)
template <typename T>
__global__ void adamax_step(T* p, const T* g, T* exp_avg, T* exp_inf, long long n, T step_size, T beta1,
                            T one_minus_beta1, T beta2, T eps, T weight_decay) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        if (weight_decay != T(0)) gi += weight_decay * p[i];
        T m = beta1 * exp_avg[i] + one_minus_beta1 * gi;
        T a = beta2 * exp_inf[i], b = fabs(gi) + eps;
        T u = a > b ? a : b;
        exp_avg[i] = m;
        exp_inf[i] = u;
        p[i] -= step_size * m / u;
    }
}

// NAdam: m = b1 m + (1 - b1) g';  v = b2 v + (1 - b2) g'^2;  d = sqrt(v / bc2) + eps;
//   p -= c_grad g' / d;  p -= c_avg m / d
// with c_grad = lr (1 - mu_t) / (1 - mu_product), c_avg = lr mu_{t+1} / (1 - mu_product mu_{t+1})
template <typename T>
__global__ void nadam_step(T* p, const T* g, T* exp_avg, T* exp_avg_sq, long long n, T c_grad, T c_avg,
                           T beta1, T one_minus_beta1, T beta2, T one_minus_beta2, T eps, T weight_decay,
                           T decay_factor, T bc2, int decoupled) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        T pi = p[i];
        if (weight_decay != T(0)) {
            if (decoupled) pi *= decay_factor;
            else gi += weight_decay * pi;
        }
        T m = beta1 * exp_avg[i] + one_minus_beta1 * gi;
        T v = beta2 * exp_avg_sq[i] + one_minus_beta2 * gi * gi;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        T d = sqrt(v / bc2) + eps;
        pi -= c_grad * gi / d;
        pi -= c_avg * m / d;
        p[i] = pi;
    }
}

// Adadelta: s = rho s + (1 - rho) g'^2;  delta = sqrt(D + eps) / sqrt(s + eps) g';
//   D = rho D + (1 - rho) delta^2;  p -= lr delta
template <typename T>
__global__ void adadelta_step(T* p, const T* g, T* square_avg, T* acc_delta, long long n, T lr, T rho,
                              T one_minus_rho, T eps, T weight_decay) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T gi = g[i];
        if (weight_decay != T(0)) gi += weight_decay * p[i];
        T s = rho * square_avg[i] + one_minus_rho * gi * gi;
        square_avg[i] = s;
        T delta = sqrt(acc_delta[i] + eps) / sqrt(s + eps) * gi;
        acc_delta[i] = rho * acc_delta[i] + one_minus_rho * delta * delta;
        p[i] -= lr * delta;
    }
}
