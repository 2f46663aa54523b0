// The CUDA executor: runs one call-free IR function on a device stream, its values planned once into one device arena.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cpu/executor.h"
#include "backends/cuda/device.h"
#include "ir/module.h"

namespace pf::cuda {

/// Choices fixed when an executor is built (as cpu::ExecutorOptions).
struct ExecutorOptions {
  /// Results the caller binds before every run (a stage's stash, its sent
  /// activations): planned outside the arena.
  std::vector<int> caller_outputs;
  /// What a failing CUDA call names as the stage (CheckScope), e.g. "stage 3
  /// on cuda:0"; empty: "stage <lane> on cuda:<ordinal>".
  std::string name;
  /// The number reported with bad data for the first op (LaunchContext::step):
  /// executors that share a stream number their ops apart, so that whoever
  /// synchronises it can name the op (see op_at_step).
  int first_step = 0;
  /// Times every op with a pair of CUDA events (op_times()). Each profiled
  /// run then waits for its own work before returning, so stages and
  /// streams no longer overlap: for finding the slow ops, not for step times.
  bool profile = false;
};

/// Runs a verified, call-free function on stage `stage` of a CudaDevice.
///
/// The device twin of cpu::Executor, with the same compile-once design:
/// attributes, kernels (cuda::forward_kernel), the memory plan (the CPU
/// backend's plan_memory: it only computes offsets) and pointer arrays are
/// fixed in the constructor, and the arena is one device allocation of the
/// device's caching allocator. Floats are stored as `float_dtype` (f32, or
/// bf16 for the ops that have bf16 kernels); integers and bools keep their
/// dtype. Reshapes that are not returned alias their operand, as on the CPU.
///
/// Parameters, arguments and bound results are device pointers (on this
/// device). run() only queues work on the stage's stream and returns; the
/// caller orders other streams after it with an Event, and calls finish()
/// to wait for it and to turn bad data found by a kernel (an index out of
/// range) into pf::Error naming the op. One run at a time; not copyable.
class Executor {
 public:
  Executor(const Function& f, const DimBinding& binding, CudaDevice& device, int stage, DType float_dtype = DType::f32,
           const ExecutorOptions& options = {});
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Parameter `name`: a device buffer of param_type(name) that outlives the runs.
  void bind_param(std::string_view name, void* device_data);
  std::vector<std::string> param_names() const;
  const TensorType& param_type(std::string_view name) const;

  /// Function argument `arg`: a device buffer of input_type(arg), unchanged
  /// until the queued run has read it.
  void bind_input(int arg, const void* device_data);
  const TensorType& input_type(int arg) const;

  /// Result `result` is written into `device_data` by the next runs; nullptr
  /// returns it to the arena (except for a caller output).
  void bind_output(int result, void* device_data);

  /// Queues every op on the stage's stream. Throws pf::Error naming the op
  /// for host-side failures (a CUDA call that fails, an unsupported shape)
  /// and naming what is unbound.
  void run();
  /// Waits for the queued work, then throws pf::Error for bad data a kernel
  /// found ("running %e = embedding ...: embedding: index 9 at position 2 is
  /// out of range [0, 8)").
  void finish();

  /// Result `result` of the last run, on the device: valid once the stream
  /// has done the run's work, until the next run.
  const void* output(int result) const;
  const TensorType& output_type(int result) const;
  int num_outputs() const;
  int64_t arena_bytes() const;
  /// The text of the op that reports bad data as `step` ("" when none of this
  /// executor's ops does).
  std::string op_at_step(int64_t step) const;

  /// With profiling on: each op's device time, summed over the runs since
  /// the last reset_profile(), in run order (ops that launch nothing left out).
  std::vector<cpu::OpTime> op_times() const;
  void reset_profile();
  void set_profile(bool on);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::cuda
