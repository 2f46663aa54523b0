// The CUDA executor: runs one call-free IR function on a device stream, its values planned once into one device arena.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/common/compiled_function.h"
#include "backends/cuda/device.h"
#include "ir/module.h"

namespace pf::cuda {

/// Choices fixed when an executor is built: every backend's (caller outputs,
/// profile), and where a CUDA executor runs among others.
struct ExecutorOptions : backend::ExecutorOptions {
  /// What a failing CUDA call names as the stage (CheckScope), e.g. "stage 3
  /// on cuda:0"; empty: "stage <lane> on cuda:<ordinal>".
  std::string name;
  /// The number reported with bad data for the first op (LaunchContext::step):
  /// executors that share a stream number their ops apart, so that whoever
  /// synchronises it can name the op (see op_at_step).
  int first_step = 0;
};

/// Runs a verified, call-free function on stage `stage` of a CudaDevice;
/// bindings, results and profile are backend::CompiledFunction's, with
/// device pointers (on this device) for parameters, arguments and results.
///
/// The device twin of cpu::Executor, with the same compile-once design:
/// attributes, kernels (cuda::forward_kernel), the memory plan and pointer
/// arrays are fixed in the constructor, and the arena is one device
/// allocation of the device's caching allocator. Floats are stored as
/// `float_dtype` (f32, or bf16 for the ops that have bf16 kernels); integers
/// and bools keep their dtype.
///
/// run() only queues work on the stage's stream and returns; the caller
/// orders other streams after it with an Event, and calls finish() to wait
/// for it and to turn bad data found by a kernel (an index out of range)
/// into pf::Error naming the op. Profiling times every op with a pair of
/// CUDA events; each profiled run then waits for its own work before
/// returning, so stages and streams no longer overlap: for finding the slow
/// ops, not for step times. One run at a time; not copyable.
class Executor : public backend::CompiledFunction {
 public:
  Executor(const Function& f, const DimBinding& binding, CudaDevice& device, int stage, DType float_dtype = DType::f32,
           const ExecutorOptions& options = {});
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;

  /// Queues every op on the stage's stream. Throws pf::Error naming the op
  /// for host-side failures (a CUDA call that fails, an unsupported shape)
  /// and naming what is unbound.
  void run();
  /// Waits for the queued work, then throws pf::Error for bad data a kernel
  /// found ("running %e = embedding ...: embedding: index 9 at position 2 is
  /// out of range [0, 8)").
  void finish();

  /// The text of the op that reports bad data as `step` ("" when none of this
  /// executor's ops does).
  std::string op_at_step(int64_t step) const;

 private:
  /// Adds the device time of each op of the run just queued (waits for it).
  void record_profile();

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::cuda
