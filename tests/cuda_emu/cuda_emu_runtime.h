// The launcher half of the CUDA-on-CPU emulation (see cuda_emu.h): included once, after the
// kernel source, by the generated translation unit.
//
// emu::launch(kernel, grid, block, args, threaded) runs kernel<<<grid, block>>>(args...), where
// args is CUDA's kernelParams: one pointer per parameter, to a value of the parameter's type.
//   threaded = 0: every CUDA thread runs after the other on the calling thread (grid-stride
//                 kernels without __syncthreads); a __syncthreads() is then reported as an error.
//   threaded = 1: one OS thread per CUDA thread of a block, all blocks run in turn by the same
//                 threads, a std::barrier for __syncthreads() and between blocks. The OS threads
//                 are kept in a pool across launches (creating 256 threads per launch would
//                 dominate the run time of the tests).
// emu::signature(kernel) describes the parameter types ("*float32", "int64", ...) so that the
// Python launcher can reject a wrong argument before anything runs.
#pragma once

#include <barrier>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

thread_local emu_dim3 threadIdx;
thread_local emu_dim3 blockIdx;
thread_local emu_dim3 blockDim;
thread_local emu_dim3 gridDim;

namespace emu {

static std::barrier<>* g_barrier = nullptr;
static bool g_sync_outside_threaded = false;
static std::mutex g_launch_mutex;

// Worker threads that outlive launches: execute(n, f) runs f(0) ... f(n - 1) on n of them
// concurrently and returns when all are done. Never destroyed (threads blocked in a wait at exit
// are simply ended with the process).
class Pool {
  public:
    void execute(unsigned n, std::function<void(unsigned)> f) {
        std::unique_lock<std::mutex> lk(m_);
        while (workers_.size() < n) {
            unsigned id = static_cast<unsigned>(workers_.size());
            workers_.emplace_back([this, id] { work(id); });
        }
        job_ = std::move(f);
        job_threads_ = n;
        remaining_ = n;
        ++generation_;
        start_.notify_all();
        done_.wait(lk, [this] { return remaining_ == 0; });
        job_ = nullptr;
    }

  private:
    void work(unsigned id) {
        std::uint64_t seen = 0;
        std::unique_lock<std::mutex> lk(m_);
        for (;;) {
            start_.wait(lk, [&] { return generation_ != seen; });
            seen = generation_;
            if (id >= job_threads_) continue;
            auto& job = job_;
            lk.unlock();
            job(id);
            lk.lock();
            if (--remaining_ == 0) done_.notify_all();
        }
    }
    std::mutex m_;
    std::condition_variable start_, done_;
    std::vector<std::thread> workers_;
    std::function<void(unsigned)> job_;
    unsigned job_threads_ = 0, remaining_ = 0;
    std::uint64_t generation_ = 0;
};

inline Pool& pool() {
    static Pool* p = new Pool;  // leaked on purpose, see above
    return *p;
}

template <class T> const char* scalar_code();
template <> inline const char* scalar_code<float>() { return "float32"; }
template <> inline const char* scalar_code<double>() { return "float64"; }
template <> inline const char* scalar_code<long long>() { return "int64"; }
template <> inline const char* scalar_code<int>() { return "int32"; }
template <> inline const char* scalar_code<unsigned>() { return "uint32"; }
template <> inline const char* scalar_code<bool>() { return "bool"; }

template <class A> std::string arg_code() {
    using U = std::remove_cv_t<A>;
    if constexpr (std::is_pointer_v<U>) {
        using E = std::remove_pointer_t<U>;
        return std::string(std::is_const_v<E> ? "*const " : "*") + scalar_code<std::remove_cv_t<E>>();
    } else {
        return scalar_code<U>();
    }
}

template <class... A> std::string signature(void (*)(A...)) {
    std::string s;
    ((s += arg_code<A>() + ","), ...);
    if (!s.empty()) s.pop_back();
    return s;
}

template <class... A, std::size_t... I>
void invoke(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

inline void set_index(emu_dim3& v, unsigned linear, const emu_dim3& extent) {
    v.x = linear % extent.x;
    v.y = (linear / extent.x) % extent.y;
    v.z = linear / (extent.x * extent.y);
}

// Returns 0, or 2 when a kernel called __syncthreads() in serial mode.
template <class... A>
int launch(void (*f)(A...), const unsigned* g, const unsigned* b, void** args, int threaded) {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    const emu_dim3 grid{g[0], g[1], g[2]}, block{b[0], b[1], b[2]};
    const unsigned n_blocks = grid.x * grid.y * grid.z, n_threads = block.x * block.y * block.z;
    auto seq = std::index_sequence_for<A...>{};
    g_sync_outside_threaded = false;
    if (!threaded) {
        gridDim = grid;
        blockDim = block;
        for (unsigned bi = 0; bi < n_blocks; ++bi) {
            set_index(blockIdx, bi, grid);
            for (unsigned ti = 0; ti < n_threads; ++ti) {
                set_index(threadIdx, ti, block);
                invoke(f, args, seq);
            }
        }
        return g_sync_outside_threaded ? 2 : 0;
    }
    std::barrier<> bar(n_threads);
    g_barrier = &bar;
    pool().execute(n_threads, [&](unsigned ti) {
        gridDim = grid;
        blockDim = block;
        set_index(threadIdx, ti, block);
        for (unsigned bi = 0; bi < n_blocks; ++bi) {
            set_index(blockIdx, bi, grid);
            invoke(f, args, seq);
            bar.arrive_and_wait();  // the whole block is done before the next one starts
        }
    });
    g_barrier = nullptr;
    return 0;
}

}  // namespace emu

void __syncthreads() {
    if (emu::g_barrier) {
        emu::g_barrier->arrive_and_wait();
    } else {
        emu::g_sync_outside_threaded = true;
    }
}
