// The launcher half of the CUDA-on-CPU emulation (see cuda_emu.h): included once, after the
// kernel source, by the generated translation unit.
//
// emu::launch(kernel, grid, block, args, threaded) runs kernel<<<grid, block>>>(args...), where
// args is CUDA's kernelParams: one pointer per parameter, to a value of the parameter's type.
//   threaded = 0: every CUDA thread runs after the other (grid-stride kernels without
//                 __syncthreads); a __syncthreads() is then reported as an error.
//   threaded = 1: every CUDA thread of a block gets its own stack and context (a fiber:
//                 ucontext), and __syncthreads() switches back to a scheduler that resumes the
//                 next thread; a block's barrier is passed when every thread of the block has
//                 reached it. Blocks run one after another.
// Why fibers rather than one OS thread per CUDA thread: a barrier among 256 OS threads on a
// 2-core machine costs about a millisecond, a fiber switch well under a microsecond, and the
// schedule is deterministic: a missing __syncthreads makes thread 0 read shared memory before
// the other threads have written it, every time (an OS-thread race shows up only sometimes);
// a __syncthreads reached by some threads of a block but not others (undefined in CUDA) is
// reported as an error.
// emu::signature(kernel) describes the parameter types ("*float32", "int64", ...) so that the
// Python launcher can reject a wrong argument before anything runs.
#pragma once

#include <ucontext.h>

#include <cstdlib>
#include <functional>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
extern "C" void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom, std::size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                std::size_t* size_old);
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

thread_local emu_dim3 threadIdx;
thread_local emu_dim3 blockIdx;
thread_local emu_dim3 blockDim;
thread_local emu_dim3 gridDim;

namespace emu {

enum { OK = 0, SYNC_WITHOUT_THREADS = 2, DIVERGENT_BARRIER = 3 };

struct Fiber {
    ucontext_t ctx;
    char* stack = nullptr;
    emu_dim3 tid{};
    bool done = false;
};

constexpr std::size_t kStack = 64u << 10;  // the kernels need little; ASan clears the shadow of a whole stack at every switch

static std::mutex g_launch_mutex;
static bool g_fibers_running = false;
static bool g_sync_outside_threaded = false;
static ucontext_t g_scheduler;
static Fiber* g_current = nullptr;
static std::function<void()>* g_body = nullptr;
static std::vector<Fiber> g_fibers;  // grown as needed, stacks kept across launches
#if EMU_ASAN
static const void* g_sched_bottom = nullptr;
static std::size_t g_sched_size = 0;
#endif

inline void to_scheduler(bool dying) {
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(dying ? nullptr : &fake, g_sched_bottom, g_sched_size);
    swapcontext(&g_current->ctx, &g_scheduler);
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
    (void)dying;
    swapcontext(&g_current->ctx, &g_scheduler);
#endif
}

inline void resume(Fiber& f) {
    g_current = &f;
    threadIdx = f.tid;
#if EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, kStack);
    swapcontext(&g_scheduler, &f.ctx);
    __sanitizer_finish_switch_fiber(fake, &g_sched_bottom, &g_sched_size);
#else
    swapcontext(&g_scheduler, &f.ctx);
#endif
}

inline void fiber_entry() {
#if EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_sched_bottom, &g_sched_size);
#endif
    (*g_body)();
    g_current->done = true;
    to_scheduler(true);  // never resumed again
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

// Runs one block as fibers; returns OK or DIVERGENT_BARRIER.
inline int run_block(unsigned n_threads, const emu_dim3& block, std::function<void()>& body) {
    while (g_fibers.size() < n_threads) {
        g_fibers.emplace_back();
        g_fibers.back().stack = static_cast<char*>(std::malloc(kStack));
    }
    g_body = &body;
    for (unsigned t = 0; t < n_threads; ++t) {
        Fiber& f = g_fibers[t];
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack;
        f.ctx.uc_stack.ss_size = kStack;
        f.ctx.uc_link = nullptr;
        makecontext(&f.ctx, fiber_entry, 0);
        set_index(f.tid, t, block);
        f.done = false;
    }
    for (;;) {  // one round: every live thread runs to its next barrier or to its end
        unsigned finished = 0;
        for (unsigned t = 0; t < n_threads; ++t) {
            if (!g_fibers[t].done) resume(g_fibers[t]);
            finished += g_fibers[t].done;
        }
        if (finished == n_threads) return OK;
        if (finished != 0) {  // some threads left the kernel while others wait at a barrier
            return DIVERGENT_BARRIER;
        }
    }
}

template <class... A>
int launch(void (*f)(A...), const unsigned* g, const unsigned* b, void** args, int threaded) {
    std::lock_guard<std::mutex> lock(g_launch_mutex);
    const emu_dim3 grid{g[0], g[1], g[2]}, block{b[0], b[1], b[2]};
    const unsigned n_blocks = grid.x * grid.y * grid.z, n_threads = block.x * block.y * block.z;
    auto seq = std::index_sequence_for<A...>{};
    gridDim = grid;
    blockDim = block;
    g_sync_outside_threaded = false;
    if (!threaded) {
        for (unsigned bi = 0; bi < n_blocks; ++bi) {
            set_index(blockIdx, bi, grid);
            for (unsigned ti = 0; ti < n_threads; ++ti) {
                set_index(threadIdx, ti, block);
                invoke(f, args, seq);
            }
        }
        return g_sync_outside_threaded ? SYNC_WITHOUT_THREADS : OK;
    }
    std::function<void()> body = [&] { invoke(f, args, seq); };
    g_fibers_running = true;
    int rc = OK;
    for (unsigned bi = 0; bi < n_blocks && rc == OK; ++bi) {
        set_index(blockIdx, bi, grid);
        rc = run_block(n_threads, block, body);
    }
    g_fibers_running = false;
    return rc;
}

}  // namespace emu

void __syncthreads() {
    if (emu::g_fibers_running) {
        emu::to_scheduler(false);
    } else {
        emu::g_sync_outside_threaded = true;
    }
}
