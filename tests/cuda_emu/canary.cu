// The bug the AddressSanitizer run exists to catch, on purpose: a kernel without its bounds
// check. Launched with more threads than elements it writes past the end of the array; a plain
// run usually survives that (the bytes after a heap block belong to the allocator), an
// AddressSanitizer build stops at the first byte. tests/test_cupy_asan.py checks that it does,
// so the ASan run of the real kernels is known to be able to fail.

template <typename T>
__global__ void scale_unchecked(T* x, long long n) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;  // no `if (i < n)`
    x[i] = x[i] * T(2);
}

// Two more bugs the emulation must report, used by tests/test_cupy_kernels.py.
// A block sum whose barrier between the shared-memory writes and the reads may be left out
// (with_barrier = 0): thread 0 then reads what the other threads have not written yet.
template <typename T>
__global__ void block_sum_barrier(const T* x, T* out, int with_barrier) {
    __shared__ T sh[64];
    __syncthreads();
    sh[threadIdx.x] = x[threadIdx.x];
    if (with_barrier) __syncthreads();
    if (threadIdx.x == 0) {
        T s = T(0);
        for (unsigned i = 0; i < blockDim.x; ++i) s += sh[i];
        out[0] = s;
    }
}

// A barrier that thread 0 never reaches (undefined behaviour in CUDA).
template <typename T>
__global__ void divergent_barrier(T* x) {
    if (threadIdx.x == 0) return;
    __syncthreads();
    x[threadIdx.x] = T(1);
}
