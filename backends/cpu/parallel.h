// Splitting the CPU kernels' large loops over the device's thread budget (internal to backends/cpu and the runtime).
#pragma once

#include <cstdint>
#include <memory>
#include <type_traits>

namespace pf::cpu {

/// The threads a loop or a GEMM may be split over: the budget of the pool the
/// calling thread computes on (KernelPoolScope), or else the process-wide one
/// (1 until set_cpu_threads is called).
int kernel_threads();
/// Called by set_cpu_threads.
void set_kernel_threads(int threads);

/// One CPU device's kernel threads: a budget and the sleeping workers a
/// loop is split over. Each worker of a pipeline owns the pool of its
/// device, so that stages computing at once each split their loops over
/// their own threads instead of contending for one pool.
class KernelPool {
 public:
  explicit KernelPool(int threads);
  ~KernelPool();
  KernelPool(const KernelPool&) = delete;
  KernelPool& operator=(const KernelPool&) = delete;

  int threads() const { return threads_; }

  struct Workers;  // internal to parallel.cpp

 private:
  friend void run_parallel(int64_t, int64_t, void (*)(void*, int64_t, int64_t), void*);
  int threads_;
  std::unique_ptr<Workers> workers_;
};

/// While it lives, the calling thread's kernels split over `pool` (nullptr:
/// over the process-wide budget); the previous pool is restored after.
class KernelPoolScope {
 public:
  explicit KernelPoolScope(KernelPool* pool);
  ~KernelPoolScope();
  KernelPoolScope(const KernelPoolScope&) = delete;
  KernelPoolScope& operator=(const KernelPoolScope&) = delete;

 private:
  KernelPool* previous_;
};

/// Runs `fn(ctx, begin, end)` over [0, n) in contiguous chunks of at least
/// `grain` items, at most one per thread of the budget; the calling thread
/// runs the first chunk and returns when all are done. Chunks begin at
/// multiples of min(grain, kChunkAlignment) items: an element of a loop
/// over elements then falls in its loop's vector body, or its scalar tail,
/// whatever the split, and a vector exp and the scalar one differ in the
/// last bits. Small loops (n <
/// 2 * grain), a budget of 1, and calls made while another loop holds the
/// pool (two pipeline stages at once, or a nested call) run inline as one
/// chunk. `fn` must not throw. Workers sleep between loops rather than spin,
/// so they never take a core from another stage's thread.
void run_parallel(int64_t n, int64_t grain, void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx);

/// Where chunks may begin (run_parallel): a multiple of the widest vector
/// loop's step (16 floats, unrolled four times).
inline constexpr int64_t kChunkAlignment = 64;

/// run_parallel with a callable `f(begin, end)`.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_parallel(
      n, grain, [](void* ctx, int64_t begin, int64_t end) { (*static_cast<Fn*>(ctx))(begin, end); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

/// Elements per chunk of an elementwise loop: small enough to split a
/// [1024, 512] activation, large enough that waking a thread (some
/// microseconds) is paid back.
inline constexpr int64_t kElementwiseGrain = 1 << 15;

}  // namespace pf::cpu
