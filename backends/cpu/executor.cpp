// The CPU executor: compiles a function once (fusions, kernels, memory plan, arena), runs it without allocating.
#include "backends/cpu/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <exception>
#include <new>

#include "backends/cpu/blas.h"
#include "backends/cpu/fusion.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/parallel.h"

namespace pf::cpu {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::array<DType, 2> kFloatDtypes = {DType::f32, DType::f64};

/// The arena: one aligned block, freed with the alignment it was allocated with.
struct ArenaDeleter {
  void operator()(std::byte* p) const { ::operator delete (p, std::align_val_t{backend::kArenaAlignment}); }
};
using ArenaPtr = std::unique_ptr<std::byte, ArenaDeleter>;

/// The kernels that honour KernelArgs::accumulate: GEMMs add their product
/// with beta = 1 (a weight's gradient summed over micro-batches costs no
/// pass of its own), a scatter-add skips clearing its table.
bool adds_into_result(OpKind kind) {
  return kind == OpKind::matmul || kind == OpKind::conv2d_grad_weight || kind == OpKind::embedding_grad;
}

template <class T>
void add_into(void* dst, const void* src, int64_t n) {
  auto* d = static_cast<T*>(dst);
  const auto* s = static_cast<const T*>(src);
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) d[i] += s[i];
  });
}

}  // namespace

struct Executor::Impl {
  /// Per call: its kernel, and whether it runs at the same time as the next
  /// call when the device has two threads (GemmPair).
  struct Call {
    Kernel kernel;
    bool with_next;
  };
  std::vector<Call> calls;
  ArenaPtr arena;
  bool bf16_products = false;  // ExecutorOptions::bf16_products
};

Executor::Executor(const Function& f, const DimBinding& binding, DType float_dtype, const ExecutorOptions& options)
    : CompiledFunction(f, "cpu", float_dtype, kFloatDtypes, options), impl_(std::make_unique<Impl>()) {
  impl_->bf16_products = options.bf16_products;
  std::vector<ValueId> alias_of = reshape_aliases();
  const std::vector<BiasFusion> fusions = find_bias_fusions(f, alias_of);
  for (const BiasFusion& fused : fusions)
    alias_of[f.ops[fused.matmul].results.at(0)] = f.ops[fused.add].results.at(0);
  set_aliases(alias_of);
  const std::vector<GemmPair> pairs = find_gemm_pairs(f, binding, roots(), fusions);
  const backend::MemoryPlan plan = backend::plan_memory(f, float_dtype, external(), alias_of, run_times(f, pairs));

  // Per op: the bias its GEMM starts from, or that it runs in its matmul.
  std::vector<ValueId> bias_of(f.ops.size(), -1);
  std::vector<bool> folded(f.ops.size(), false), paired_with_next(f.ops.size(), false);
  for (const BiasFusion& fused : fusions) {
    bias_of[fused.matmul] = fused.bias;
    folded[fused.add] = true;
  }
  // The next call is the pair's second op: only reshapes that run no kernel lie between.
  for (const GemmPair& p : pairs) paired_with_next[p.first] = true;
  for (size_t i = 0; i < f.ops.size(); ++i) {
    const Op& op = f.ops[i];
    const int index = static_cast<int>(i);
    if (runs_no_kernel(op) || folded[i]) continue;
    const Kernel kernel =
        compiling(index, [&] { return forward_kernel(op.kind, backend::kernel_dtype(f, op, float_dtype)); });
    std::vector<ValueId> operands = op.operands;
    if (bias_of[i] >= 0) operands.push_back(bias_of[i]);
    add_call(op, index, op.kind, operands, op.results, binding);
    if (adds_into_result(op.kind) && bias_of[i] < 0) mark_accumulating(impl_->calls.size());
    impl_->calls.push_back({kernel, paired_with_next[i]});
  }

  // Allocated and touched once here, so that no run pays first touch.
  place(plan, [&](int64_t bytes) {
    const auto size = static_cast<size_t>(std::max(bytes, backend::kArenaAlignment));  // never null, even when empty
    impl_->arena.reset(static_cast<std::byte*>(::operator new (size, std::align_val_t{backend::kArenaAlignment})));
    std::memset(impl_->arena.get(), 0, size);
    return impl_->arena.get();
  });
}

Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

double Executor::call(size_t k) {
  const Kernel kernel = impl_->calls[k].kernel;
  return running(k, [&] {
    if (!profiling()) {
      kernel(call_args(k));
      return 0.0;
    }
    const Clock::time_point start = Clock::now();
    kernel(call_args(k));
    return std::chrono::duration<double>(Clock::now() - start).count();
  });
}

void Executor::run() {
  check_bound();
  const Bf16Products products(impl_->bf16_products);
  for (size_t k = 0; k < num_calls(); ++k) {
    if (impl_->calls[k].with_next && kernel_threads() == 2) {
      // One GEMM per thread; their own BLAS calls run whole on it (a loop
      // inside a chunk runs inline).
      double seconds[2] = {};
      std::exception_ptr error[2];
      const Clock::time_point start = profiling() ? Clock::now() : Clock::time_point{};
      parallel_for(2, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) try {
            seconds[i] = call(k + static_cast<size_t>(i));
          } catch (...) {
            error[i] = std::current_exception();
          }
      });
      for (const std::exception_ptr& e : error)
        if (e) std::rethrow_exception(e);
      if (profiling()) {
        // Each kernel's share of the pair's wall time, so that shares add up to the step.
        const double wall = std::chrono::duration<double>(Clock::now() - start).count();
        const double scale = seconds[0] + seconds[1] > 0 ? wall / (seconds[0] + seconds[1]) : 0.5;
        record(k, seconds[0] * scale);
        record(k + 1, seconds[1] * scale);
      }
      ++k;
      continue;
    }
    const double seconds = call(k);
    if (profiling()) record(k, seconds);
  }
  for_each_copy([](void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); });
  for_each_added([](void* dst, const void* src, const TensorType& type) {
    if (type.dtype == DType::f64)
      add_into<double>(dst, src, type.numel());
    else
      add_into<float>(dst, src, type.numel());
  });
}

}  // namespace pf::cpu
