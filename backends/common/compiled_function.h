// What a compiled function is wherever it runs: its values, the bindings of its arguments, parameters and results, its kernel calls and their profile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backends/common/kernel_args.h"
#include "backends/common/memory_plan.h"
#include "backends/common/op_time.h"
#include "ir/diagnostic.h"
#include "ir/module.h"

namespace pf::backend {

/// Choices fixed when an executor is built, on every backend.
struct ExecutorOptions {
  /// Results (indices into the function's returns) that the caller binds
  /// with bind_output before every run, such as activations stashed per
  /// micro-batch. They are planned outside the arena and cost it no bytes;
  /// running with one of them unbound is an error. Any other result may be
  /// bound too, but keeps its (then idle) arena bytes.
  std::vector<int> caller_outputs;
  /// Times every kernel call and adds its seconds to its op (op_times()) and
  /// its op kind (op_seconds()). Off by default: a run then reads no clock.
  bool profile = false;
  /// The ranks whose partial products tp_reduce sums (see KernelArgs::group);
  /// it outlives the executor. Null: a function with tp_reduce cannot run.
  TensorParallelGroup* tensor_parallel = nullptr;
  /// The replicas the ep_ ops meet (KernelArgs::expert_group); it outlives
  /// the executor. Null: a function with an ep_ op cannot run.
  TensorParallelGroup* expert_parallel = nullptr;
  /// CPU: every f32 product rounds its operands to bf16 and sums their
  /// exact products in f32 (cpu::Bf16Products), as a stage compiled with
  /// --dtype bf16 computes; every value stays f32. (A CUDA executor's float
  /// dtype says how it computes.)
  bool bf16_products = false;
};

/// The dtype an op's kernel is looked up with, on every backend: the float
/// dtype when any operand or result is a float, else the first result's own.
DType kernel_dtype(const Function& f, const Op& op, DType float_dtype);

/// A verified, call-free function compiled for a device, as far as the
/// device does not matter: the base of cpu::Executor and cuda::Executor.
///
/// It keeps every value's stored type (floats in the executor's float dtype;
/// integers and bools keep theirs) and where it lives now, the bindings of
/// arguments, parameters and results, the kernel calls in run order with the
/// pointer arrays their KernelArgs read, and their profile. An executor
/// decides the rest in its constructor (which kernels, which values share
/// bytes, when ops run for the planner, where the arena is) and runs the
/// calls; pointers are in the memory of the executor's device.
///
/// Reshape aliasing: a `reshape` whose result is not returned runs no kernel;
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
/// Not copyable (the kernels' pointer arrays point into its own storage);
/// movable.
class CompiledFunction {
 public:
  /// Parameters by name: `data` holds the parameter's elements as
  /// param_type(name) stores them and outlives the runs. Throws pf::Error for
  /// a name that no `param` op of the function defines.
  void bind_param(std::string_view name, void* data);
  /// The names of the parameters, in op order.
  std::vector<std::string> param_names() const;
  /// The stored type of parameter `name` (floats in the float dtype).
  const TensorType& param_type(std::string_view name) const;

  /// Function argument `arg`; `data` holds its elements as input_type(arg)
  /// stores them and stays unchanged until a run has read it.
  void bind_input(int arg, const void* data);
  const TensorType& input_type(int arg) const;

  /// Result `result` is written into `data` (output_type(result).bytes()
  /// bytes) by the next runs; nullptr returns it to executor-owned memory,
  /// except for a caller output, which must be bound again before a run.
  void bind_output(int result, void* data);

  /// With `on`, the next runs add result `result` into the buffer bound to
  /// it instead of overwriting it (gradients summed over micro-batches);
  /// with `off`, they overwrite it again. Where the op computing the result
  /// can add as it writes (a GEMM with beta = 1: mark_accumulating) and
  /// nothing else reads it, its kernel adds into the buffer; otherwise the
  /// result is computed in the executor's memory and added at the end of
  /// the run. Throws pf::Error for a result that is not bound, is no float,
  /// or is left to the caller.
  void accumulate_output(int result, bool on);

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

  /// With profiling on: the seconds each op kind's kernels took, summed over
  /// the runs since construction or the last reset_profile(); all zeros
  /// otherwise.
  const OpSeconds& op_seconds() const;
  /// The same per op, in run order (ops that run no kernel are left out).
  std::vector<OpTime> op_times() const;
  void reset_profile();
  /// Turns per-op timing on or off for the next runs (ExecutorOptions::profile).
  void set_profile(bool on);

 protected:
  /// Describes `f` for an executor of `backend` ("cpu", "cuda": errors say
  /// "<backend> executor: ..."), floats stored as `float_dtype`, one of
  /// `float_dtypes`. Throws pf::Error for any other float dtype, a value
  /// without a type, two parameters of one name and a caller output that is
  /// no result.
  CompiledFunction(const Function& f, std::string_view backend, DType float_dtype,
                   std::span<const DType> float_dtypes, const ExecutorOptions& options);
  ~CompiledFunction();
  CompiledFunction(CompiledFunction&&) noexcept;
  CompiledFunction& operator=(CompiledFunction&&) noexcept;
  CompiledFunction(const CompiledFunction&) = delete;
  CompiledFunction& operator=(const CompiledFunction&) = delete;

  // ---- Compiling, in this order: aliases, calls, placement.

  /// Per value: kept outside the arena (arguments, parameters, caller
  /// outputs), as plan_memory takes it.
  const std::vector<bool>& external() const;
  /// Per value: the value whose bytes it reads (an unreturned reshape reads
  /// its operand's), or -1. An executor adds its own aliases and passes the
  /// whole to set_aliases and plan_memory.
  std::vector<ValueId> reshape_aliases() const;
  void set_aliases(const std::vector<ValueId>& alias_of);
  /// Per value: the value whose bytes it uses (alias_groups' root).
  const std::vector<ValueId>& roots() const;
  /// Whether op `op` runs no kernel of any backend: a `param` (bound by the
  /// caller) or a reshape that reads its operand's bytes.
  bool runs_no_kernel(const Op& op) const;

  /// `compile()` (a kernel lookup), with a pf::Error it throws restated as
  /// "compiling <op>: <cause>" at op `op`.
  template <class F>
  auto compiling(int op, F&& compile) const {
    try {
      return compile();
    } catch (const Error& e) {
      throw compile_error(op, e);
    }
  }
  /// Appends the next kernel call: op `op` (index `index`), profiled as
  /// `kind`, reading `operands` and writing `results`, with the op's
  /// attributes evaluated under `binding`. A result that aliases another
  /// value is written as that value's bytes.
  void add_call(const Op& op, int index, OpKind kind, std::span<const ValueId> operands,
                std::span<const ValueId> results, const DimBinding& binding);
  /// Sizes the arena (the plan's values, then bytes of their own for copied
  /// results that the caller does not bind), gets it from `allocate` and
  /// points every value and result into it. Called once, after the last
  /// add_call: the calls' KernelArgs are built here, once the arrays they
  /// point into are final.
  void place(const MemoryPlan& plan, const std::function<std::byte*(int64_t bytes)>& allocate);

  // ---- Running.

  /// Throws pf::Error naming the first argument, parameter or caller output
  /// that is not bound, so that a failed run has not half-written anything.
  void check_bound() const;
  size_t num_calls() const;
  /// Call k's op index and its kernel's arguments.
  int call_op(size_t k) const;
  const KernelArgs& call_args(size_t k) const;
  /// The printed text of op `op` ("%y = matmul %x, %w : f32[2,4]").
  const std::string& op_text(int op) const;
  /// `call()` (call k's kernel), with any std::exception restated as
  /// "running <op>: <cause>" at call k's op.
  template <class F>
  auto running(size_t k, F&& call) const {
    try {
      return call();
    } catch (const Error& e) {
      throw run_error(k, e.message());
    } catch (const std::exception& e) {
      throw run_error(k, e.what());
    }
  }
  /// Call k's kernel can add its result into the bytes it writes rather
  /// than overwrite them, when KernelArgs::accumulate says so (see
  /// accumulate_output). Called while compiling, after add_call(k).
  void mark_accumulating(size_t k);
  /// Calls copy(dst, src, bytes) for each result the run copies at its end
  /// (pass-through and repeated results) and that is not already in place.
  template <class F>
  void for_each_copy(F&& copy) const {
    for (size_t i = 0; i < num_copied(); ++i) {
      const Copy c = copied(i);
      if (c.bytes > 0 && c.dst != c.src) copy(c.dst, c.src, c.bytes);
    }
  }
  /// Calls add(dst, src, type) for each accumulated result that the run adds
  /// at its end (accumulate_output): dst += src, element by element.
  template <class F>
  void for_each_added(F&& add) const {
    for (size_t i = 0; i < num_added(); ++i) {
      const Added a = added(i);
      if (a.type) add(a.dst, a.src, *a.type);
    }
  }
  bool profiling() const;
  /// Adds `seconds` to call k's op and op kind.
  void record(size_t k, double seconds);

 private:
  struct Copy {
    void* dst;
    const void* src;
    size_t bytes;
  };
  struct Added {
    void* dst;
    const void* src;
    const TensorType* type;
  };
  size_t num_copied() const;
  Copy copied(size_t i) const;
  size_t num_added() const;
  Added added(size_t i) const;
  Error compile_error(int op, const Error& cause) const;
  Error run_error(size_t k, std::string_view cause) const;

  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace pf::backend
