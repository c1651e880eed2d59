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
