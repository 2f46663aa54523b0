// The CPU executor: runs one call-free IR function on buffers planned once and reused by every run.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ir/module.h"

namespace pf::cpu {

/// Choices fixed when an executor is built.
struct ExecutorOptions {
  /// Results (indices into the function's returns) that the caller binds
  /// with bind_output before every run, such as activations stashed per
  /// micro-batch. They are planned outside the arena and cost it no bytes;
  /// running with one of them unbound is an error. Any other result may be
  /// bound too, but keeps its (then idle) arena bytes.
  std::vector<int> caller_outputs;
  /// Times every kernel call and adds its seconds to its op kind's total
  /// (op_seconds()). Off by default: run() then reads no clock at all.
  bool profile = false;
};

/// Seconds spent in the kernels of each op kind, indexed by OpKind.
using OpSeconds = std::array<double, kNumOps>;

/// One op's kernel time under ExecutorOptions::profile, summed over runs.
struct OpTime {
  std::string function;     // the function's name, e.g. "gpt.backward"
  int op = 0;               // index into the function's ops
  OpKind kind = OpKind::add;
  std::string text;         // "matmul f32[8,128,512] x f32[512,1536] transpose_b" : kind, operand types, flags
  double seconds = 0;
};

struct KernelArgs;
/// OpTime::text of a call: the op's kind, its operand types and its transpose flags.
std::string call_text(OpKind kind, const KernelArgs& args);

/// Runs a verified, call-free function (a forward or a backward program).
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
/// Reshape aliasing: a `reshape` whose result is not returned does not run;
/// its result reads the bytes of its operand (row-major order is unchanged).
/// This is safe because no kernel writes its operands and every value is
/// written once per run, so the shared bytes hold the operand's value for as
/// long as either is live: the planner keeps them reserved until the last use
/// of both. A returned reshape result is copied, because the caller may bind
/// it to a buffer of its own.
///
/// Results: a returned value produced by an op is written straight into the
/// buffer given to bind_output, or else into the arena, where it stays valid
/// until the next run (the planner keeps it live to the end). A result that is
/// an argument, a parameter, or a value returned a second time is copied at
/// the end of the run into the bound buffer, or else into bytes of its own.
///
/// Fusions (fusion.h): a bias add fed by a matmul runs inside that matmul's
/// GEMM (the product is written as the add's bytes; errors and profiles name
/// the matmul, with the bias as a third operand), and on a device of two
/// threads a layer's two gradient GEMMs run side by side.
///
/// One run at a time. Not copyable (the kernels' pointer arrays point into
/// the executor's own storage); movable.
class Executor {
 public:
  Executor(const Function& f, const DimBinding& binding, DType float_dtype, const ExecutorOptions& options = {});
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  /// Parameters by name: `data` must hold the parameter's elements in
  /// float_dtype and outlive the executor's runs. Throws pf::Error for a name
  /// that no `param` op of the function defines.
  void bind_param(std::string_view name, void* data);
  /// The names of the parameters, in op order.
  std::vector<std::string> param_names() const;
  /// The stored type of parameter `name` (floats in float_dtype).
  const TensorType& param_type(std::string_view name) const;

  /// Function argument `arg`; `data` must hold its elements (floats in
  /// float_dtype) and stay unchanged while a run reads it.
  void bind_input(int arg, const void* data);
  const TensorType& input_type(int arg) const;

  /// Result `result` is written into `data` (output_type(result).bytes()
  /// bytes) by the next runs; nullptr returns it to executor-owned memory,
  /// except for a caller output, which must be bound again before a run.
  void bind_output(int result, void* data);

  /// Runs every op once. Throws pf::Error naming the op ("running %y = matmul
  /// %x, %w : f32[2,4]: <cause>") when a kernel fails, and naming the
  /// parameter, argument or result that a run needs but that is not bound.
  void run();

  /// Result `result` of the last run: the bound buffer, or executor-owned
  /// memory valid until the next run.
  const void* output(int result) const;
  const TensorType& output_type(int result) const;
  int num_outputs() const;

  /// The bytes of the arena: planned values, then copies of pass-through and
  /// repeated results.
  int64_t arena_bytes() const;
  /// The arena's size without reuse between values (MemoryPlan::naive_bytes).
  int64_t naive_bytes() const;

  /// With ExecutorOptions::profile: the seconds each op kind's kernels took,
  /// summed over the runs since construction or the last reset_profile();
  /// all zeros otherwise.
  const OpSeconds& op_seconds() const;
  /// The same per op, in run order (ops that run no kernel are left out).
  std::vector<OpTime> op_times() const;
  void reset_profile();
  /// Turns per-op timing on or off for the next runs (see ExecutorOptions::profile).
  void set_profile(bool on);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf::cpu
