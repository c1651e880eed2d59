// fastmlp cpp backend: the one thread pool of the backend (no Python in here).
//
// Why one pool: OpenBLAS keeps its own pool, whose idle threads spin after each GEMM; a second
// pool next to it (OpenMP, or std::threads started per call) fought it for the two cores: a
// step 30-40x slower with OpenMP's spin-wait, and with std::threads started for the optimizer
// a B step 1.66 ms instead of 1.18. So the backend runs OpenBLAS at one thread (set when the
// module loads) and parallelises everything itself on this pool: the training step splits each
// GEMM by rows (forward, dX) or by output units (dW) over the threads, the elementwise work by
// rows, the optimizer by arena chunks (csrc/train_step.h).
//
//   Pool::run(nt, f)   f(t, nt) on the caller (t = 0) and nt - 1 persistent workers, returns when
//                      all are done. Nested or concurrent calls (another Python thread, the
//                      pool already busy) run f(0, 1) on the caller: correct, serial.
//   Pool::barrier(nt)  inside f(t, nt): wait until the nt threads of the job reach it.
//   split(n, t, nt)    part t of [0, n) cut in nt contiguous parts.
//
// Workers wait for a job by spinning for kSpin (a training loop calls again within tens of
// microseconds, and waking a sleeping thread costs more than that), then sleep on a condition
// variable. Barriers spin with pause, and yield after kSpin so an oversubscribed machine still
// progresses. Threads: set_num_threads(n) (1: everything on the caller). After fork() the child
// starts a new pool (the parent's workers do not exist there).
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include <pthread.h>

#if defined(__SSE2__) || defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FASTMLP_PAUSE() _mm_pause()
#else
#define FASTMLP_PAUSE() std::this_thread::yield()
#endif

namespace fastmlp {

using i64 = std::int64_t;

inline std::atomic<int>& thread_count() {
    static std::atomic<int> n{1};
    return n;
}
inline void set_num_threads(int n) { thread_count().store(n < 1 ? 1 : n); }
inline int get_num_threads() { return thread_count().load(); }

class Pool {
  public:
    // The process's pool (a new one in a forked child). Never destroyed: its workers live as
    // long as the process, and destroying joinable std::threads at exit would abort.
    static Pool& instance() {
        static const bool registered = [] {
            pthread_atfork(nullptr, nullptr, [] { current() = nullptr; });
            return true;
        }();
        (void)registered;
        Pool*& p = current();
        if (!p) p = new Pool();
        return *p;
    }

    template <class F>
    void run(int nt, F&& f) {
        if (nt <= 1 || busy_.exchange(true, std::memory_order_acquire)) {
            f(0, 1);
            return;
        }
        grow(nt - 1);
        ctx_ = &f;
        call_ = [](void* c, int t, int n) { (*static_cast<std::remove_reference_t<F>*>(c))(t, n); };
        nt_ = nt;
        arrived_.store(0, std::memory_order_relaxed);
        pending_.store(nt - 1, std::memory_order_relaxed);
        generation_.fetch_add(1, std::memory_order_seq_cst);
        if (sleeping_.load(std::memory_order_seq_cst) > 0) {
            { std::lock_guard<std::mutex> lk(mutex_); }
            cv_.notify_all();
        }
        f(0, nt);
        spin_until([&] { return pending_.load(std::memory_order_acquire) == 0; });
        busy_.store(false, std::memory_order_release);
    }

    // Sense-reversing barrier of the running job's nt threads (f's nt; 1: no-op, which is what
    // a job run serially on the caller passes).
    void barrier(int nt) {
        if (nt <= 1) return;
        const int phase = phase_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) == nt - 1) {
            arrived_.store(0, std::memory_order_relaxed);
            phase_.store(phase + 1, std::memory_order_release);
        } else {
            spin_until([&] { return phase_.load(std::memory_order_acquire) != phase; });
        }
    }

  private:
    static constexpr auto kSpin = std::chrono::microseconds(200);

    Pool() = default;
    static Pool*& current() {
        static Pool* p = nullptr;
        return p;
    }

    // Spin (pause) on ready() for kSpin, then yield between checks.
    template <class R>
    static void spin_until(R&& ready) {
        for (int i = 0; i < 64; ++i) {
            if (ready()) return;
            FASTMLP_PAUSE();
        }
        const auto until = std::chrono::steady_clock::now() + kSpin;
        while (!ready()) {
            for (int i = 0; i < 16; ++i) FASTMLP_PAUSE();
            if (std::chrono::steady_clock::now() > until) std::this_thread::yield();
        }
    }

    void grow(int workers) {
        while (int(threads_.size()) < workers) {
            // the generation before run() announces the job: a worker that starts late must
            // still see that job as new
            const int id = int(threads_.size()) + 1;
            const std::uint64_t seen = generation_.load(std::memory_order_relaxed);
            threads_.emplace_back([this, id, seen] { work(id, seen); });
        }
    }

    void work(int id, std::uint64_t seen) {
        for (;;) {
            // wait for a new job: spin for kSpin, then sleep until run() notifies
            const auto until = std::chrono::steady_clock::now() + kSpin;
            while (generation_.load(std::memory_order_acquire) == seen) {
                for (int i = 0; i < 16; ++i) FASTMLP_PAUSE();
                if (std::chrono::steady_clock::now() > until) {
                    std::unique_lock<std::mutex> lk(mutex_);
                    sleeping_.fetch_add(1, std::memory_order_seq_cst);
                    cv_.wait(lk, [&] { return generation_.load(std::memory_order_seq_cst) != seen; });
                    sleeping_.fetch_sub(1, std::memory_order_relaxed);
                }
            }
            seen = generation_.load(std::memory_order_acquire);
            if (id < nt_) {
                call_(ctx_, id, nt_);
                pending_.fetch_sub(1, std::memory_order_acq_rel);
            }
        }
    }

    std::vector<std::thread> threads_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::atomic<bool> busy_{false};
    std::atomic<std::uint64_t> generation_{0};
    std::atomic<int> sleeping_{0}, pending_{0}, arrived_{0}, phase_{0};
    void (*call_)(void*, int, int) = nullptr;
    void* ctx_ = nullptr;
    int nt_ = 1;
};

// [begin, end) of part t of n split in nt parts, the boundaries multiples of align.
struct Range {
    i64 begin, end;
    i64 size() const { return end - begin; }
};
inline Range split(i64 n, int t, int nt, i64 align = 1) {
    const i64 chunk = ((n + nt - 1) / nt + align - 1) / align * align;
    return {std::min(n, t * chunk), std::min(n, (t + 1) * chunk)};
}

}  // namespace fastmlp
