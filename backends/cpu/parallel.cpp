// Pools of sleeping worker threads that split the kernels' large loops over a device's thread budget.
#include "backends/cpu/parallel.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "backends/cpu/blas.h"

namespace pf::cpu {

namespace {

std::atomic<int> g_threads{1};
// The pool of the device the calling thread computes for (KernelPoolScope).
thread_local KernelPool* t_pool = nullptr;
// Set on a thread while it runs a chunk: a loop started inside a chunk runs
// inline (the pool is busy with the outer loop, and a std::mutex may not be
// tried again by the thread that holds it).
thread_local bool t_in_chunk = false;

void run_chunk(void (*fn)(void*, int64_t, int64_t), void* ctx, int64_t begin, int64_t end) {
  t_in_chunk = true;
  fn(ctx, begin, end);
  t_in_chunk = false;
}

}  // namespace

/// One loop at a time. Each worker sleeps on its own `go` counter (a futex
/// wait, not a spin); the caller writes a worker's chunk, then bumps its
/// counter, and waits on `pending` reaching 0. A worker reads its chunk only
/// after seeing its counter move, and the caller writes the next loop only
/// after every worker of this one has finished, so nothing is read while it
/// is written. Workers a loop does not need are not woken.
struct KernelPool::Workers {
  ~Workers() {
    for (auto& w : workers_) {
      w->stop.store(true);
      w->go.fetch_add(1);
      w->go.notify_one();
      w->thread.join();
    }
  }

  /// Runs the chunks of one loop, each starting at a multiple of `align`;
  /// false (nothing run) when another loop holds the pool.
  bool run(int chunks, int64_t n, int64_t align, void (*fn)(void*, int64_t, int64_t), void* ctx) {
    std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
    if (!lock.owns_lock()) return false;
    while (static_cast<int>(workers_.size()) < chunks - 1) {
      workers_.push_back(std::make_unique<Worker>());
      Worker* w = workers_.back().get();
      w->thread = std::thread([this, w] { work(*w); });
    }
    fn_ = fn;
    ctx_ = ctx;
    bf16_products_ = bf16_products();
    pending_.store(chunks - 1);
    auto start = [&](int c) { return c == chunks ? n : n * c / chunks / align * align; };
    for (int c = 1; c < chunks; ++c) {
      Worker& w = *workers_[c - 1];
      w.begin = start(c);
      w.end = start(c + 1);
      w.go.fetch_add(1);  // publishes the fields above (sequentially consistent)
      w.go.notify_one();
    }
    run_chunk(fn, ctx, 0, start(1));
    for (int left = pending_.load(); left != 0; left = pending_.load()) pending_.wait(left);
    return true;
  }

 private:
  struct Worker {
    std::atomic<uint32_t> go{0};
    std::atomic<bool> stop{false};
    int64_t begin = 0, end = 0;
    std::thread thread;
  };

  void work(Worker& w) {
    uint32_t seen = 0;
    for (;;) {
      w.go.wait(seen);
      seen = w.go.load();
      if (w.stop.load()) return;
      const Bf16Products as_the_caller(bf16_products_);
      run_chunk(fn_, ctx_, w.begin, w.end);
      if (pending_.fetch_sub(1) == 1) pending_.notify_one();
    }
  }

  std::mutex busy_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int> pending_{0};
  // The current loop's function, and its caller's product precision (a
  // chunk's GEMMs compute as the caller's would); written before any worker
  // is woken.
  void (*fn_)(void*, int64_t, int64_t) = nullptr;
  void* ctx_ = nullptr;
  bool bf16_products_ = false;
};

namespace {

KernelPool::Workers& process_pool() {
  static KernelPool::Workers p;
  return p;
}

}  // namespace

KernelPool::KernelPool(int threads) : threads_(std::max(1, threads)), workers_(std::make_unique<Workers>()) {}
KernelPool::~KernelPool() = default;

KernelPoolScope::KernelPoolScope(KernelPool* pool) : previous_(t_pool) { t_pool = pool; }
KernelPoolScope::~KernelPoolScope() { t_pool = previous_; }

int kernel_threads() { return t_pool ? t_pool->threads() : g_threads.load(std::memory_order_relaxed); }

void set_kernel_threads(int threads) { g_threads.store(std::max(1, threads), std::memory_order_relaxed); }

void run_parallel(int64_t n, int64_t grain, void (*fn)(void* ctx, int64_t begin, int64_t end), void* ctx) {
  if (n <= 0) return;
  const int64_t by_size = n / std::max<int64_t>(grain, 1);
  const int chunks = static_cast<int>(std::min<int64_t>(kernel_threads(), by_size));
  if (chunks <= 1 || t_in_chunk) return fn(ctx, 0, n);
  KernelPool::Workers& workers = t_pool ? *t_pool->workers_ : process_pool();
  const int64_t align = std::min<int64_t>(std::max<int64_t>(grain, 1), kChunkAlignment);
  if (!workers.run(chunks, n, align, fn, ctx)) fn(ctx, 0, n);
}

}  // namespace pf::cpu
