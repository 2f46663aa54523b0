// The CPU executor: runs one call-free IR function on buffers planned once and reused by every run.
#pragma once

#include <memory>

#include "backends/common/compiled_function.h"
#include "ir/module.h"

namespace pf::cpu {

/// Choices fixed when an executor is built: nothing beyond every backend's.
using ExecutorOptions = backend::ExecutorOptions;

/// Runs a verified, call-free function (a forward or a backward program) on
/// the host; bindings, results and profile are backend::CompiledFunction's.
///
/// Floats are stored as `float_dtype` (f32, or f64 for reference runs: every
/// float value, parameter, argument and result is then double; f16 and bf16
/// values too, as the CPU backend stores no half types); integers and bools
/// keep their dtype. Everything is decided in the constructor: the attributes
/// of every op, its kernel, the arena offsets of its operands and results
/// (plan_memory), and the pointer arrays its kernel reads; the executor keeps
/// no reference to `f`. The arena is allocated and touched once there, so
/// run() allocates nothing of its own and pays no first touch (a kernel may
/// still make its own small allocations, see kernels.h).
///
/// Fusions (fusion.h): a bias add fed by a matmul runs inside that matmul's
/// GEMM (the product is written as the add's bytes; errors and profiles name
/// the matmul, with the bias as a third operand), and on a device of two
/// threads a layer's two gradient GEMMs run side by side.
///
/// One run at a time. Not copyable; movable.
class Executor : public backend::CompiledFunction {
 public:
  Executor(const Function& f, const DimBinding& binding, DType float_dtype, const ExecutorOptions& options = {});
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;

  /// Runs every op once. Throws pf::Error naming the op ("running %y = matmul
  /// %x, %w : f32[2,4]: <cause>") when a kernel fails, and naming the
  /// parameter, argument or result that a run needs but that is not bound.
  void run();

 private:
  /// Runs call k's kernel; its seconds when profiling, else 0. Throws pf::Error naming the op.
  double call(size_t k);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::cpu
