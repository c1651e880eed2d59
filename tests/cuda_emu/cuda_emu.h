// CUDA on the CPU: just enough of the CUDA C++ dialect for g++ to compile a .cu source unchanged.
//
// What it provides
//   - the keywords __global__, __device__, __host__, __forceinline__ (empty or `inline`);
//   - __shared__ as `static`: one array per kernel instantiation, shared by the simulated
//     threads of the block being run (blocks run one after another);
//   - the built-ins threadIdx, blockIdx, blockDim, gridDim as `thread_local` variables, set by
//     the launcher (cuda_emu_runtime.h) before each simulated thread runs or resumes;
//   - __syncthreads(), a barrier of the block (the launcher runs the threads of a block as
//     fibers and resumes them in turn);
//   - the float and double math functions CUDA provides in device code (from <cmath>).
// Included before the kernel source by the translation unit tests/cuda_emu/emu.py generates.
#pragma once

#include <cmath>
#include <cstddef>

using std::cos;
using std::erf;
using std::exp;
using std::expm1;
using std::fabs;
using std::log;
using std::log1p;
using std::sin;
using std::sqrt;
using std::tanh;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static

struct emu_dim3 {
    unsigned x, y, z;
};

extern thread_local emu_dim3 threadIdx;
extern thread_local emu_dim3 blockIdx;
extern thread_local emu_dim3 blockDim;
extern thread_local emu_dim3 gridDim;

void __syncthreads();
