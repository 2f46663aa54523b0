// The CPU executor: compiles a function once (kernels, memory plan, pointer arrays), runs it without allocating.
#include "backends/cpu/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <map>
#include <new>

#include "backends/cpu/fusion.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/memory_plan.h"
#include "backends/cpu/parallel.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "ir/printer.h"
#include "ir/verifier.h"

namespace pf::cpu {

namespace {

using Clock = std::chrono::steady_clock;

/// The arena: one aligned block, freed with the alignment it was allocated with.
struct ArenaDeleter {
  void operator()(std::byte* p) const { ::operator delete (p, std::align_val_t{kArenaAlignment}); }
};
using ArenaPtr = std::unique_ptr<std::byte, ArenaDeleter>;

}  // namespace

struct Executor::Impl {
  /// One kernel call, in op order; its KernelArgs point into the flat arrays below.
  struct Step {
    Kernel kernel;
    int op;
    OpKind kind;
    size_t in_begin, in_count, out_begin, out_count;
    bool with_next;  // runs at the same time as the next step when the device has two threads (GemmPair)
  };

  /// One entry of the function's returns.
  using Result = ResultSlot;

  std::string function_name;
  std::vector<std::string> value_name;  // per value, for messages
  std::vector<Location> value_loc;
  std::vector<TensorType> type;               // per value, as stored (floats in float_dtype)
  std::vector<ValueId> root;                  // per value: whose bytes it uses (itself unless an aliasing reshape)
  std::vector<std::vector<ValueId>> members;  // per root: the values sharing its bytes, itself first
  std::vector<const void*> ptr;               // per value: where it lives now (nullptr: an unbound external)
  std::vector<ValueId> args;
  std::vector<std::string> op_text;  // per op: its printed text, for error messages
  std::vector<Location> op_loc;

  /// A `param` op: its result is bound by the caller, by name.
  struct Param {
    std::string name;
    ValueId value;
    int op;
  };
  std::vector<Param> params;                               // in op order
  std::map<std::string, size_t, std::less<>> param_index;  // name -> position in params

  // Kernel arguments of all steps, flat; slots are patched when a binding changes.
  std::vector<TensorType> in_types, out_types;
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  std::vector<std::vector<size_t>> in_slots, out_slots;  // per root: its positions in in_ptrs / out_ptrs
  std::vector<OpAttrs> attrs;                            // per step
  std::vector<Step> steps;
  std::vector<KernelArgs> kernel_args;  // per step, built once the arrays are final

  std::vector<Result> results;
  std::vector<int> copied;  // results copied at the end of a run

  bool profile = false;
  OpSeconds op_seconds{};
  std::vector<double> step_seconds;  // per step, with profile

  ArenaPtr arena;
  int64_t arena_size = 0;
  int64_t naive_size = 0;

  Impl(const Function& f, const DimBinding& binding, DType float_dtype, const ExecutorOptions& options);

  // The constructor's steps, in order.
  void describe(const Function& f, DType float_dtype);
  void build_steps(const Function& f, const DimBinding& binding, DType float_dtype,
                   const std::vector<ValueId>& alias_of, const std::vector<BiasFusion>& fusions,
                   const std::vector<GemmPair>& pairs);
  void allocate_arena(const MemoryPlan& plan);

  /// Runs step k's kernel; its seconds with profile, else 0. Throws pf::Error naming the op.
  double call(size_t k);
  /// Adds seconds of step k to the profile.
  void record(size_t k, double seconds);

  /// Points every reader (and writer) of `r`'s bytes at `p`.
  void set_storage(ValueId r, void* p);
  void set_read_only_storage(ValueId r, const void* p);
  std::string op_error(int op, std::string_view cause) const;
  const Param& param(std::string_view name) const;
  /// `i` as an index into `results` / the argument value of `i`; throw pf::Error when out of range.
  size_t result_index(int i) const;
  ValueId arg(int i) const;
};

Executor::Impl::Impl(const Function& f, const DimBinding& binding, DType float_dtype, const ExecutorOptions& options)
    : function_name(f.name), args(f.args), profile(options.profile) {
  if (float_dtype != DType::f32 && float_dtype != DType::f64)
    throw Error(fmt::format("cpu executor: floats are stored as f32 or f64, not {}", dtype_name(float_dtype)), f.loc);
  describe(f, float_dtype);
  // Outside the arena: arguments, parameters, results left to the caller.
  // Reshape results that are not returned read their operand's bytes.
  ResultLayout layout = layout_results(f, options.caller_outputs, "cpu executor");
  results = std::move(layout.results);
  copied = std::move(layout.copied);
  std::vector<ValueId>& alias_of = layout.alias_of;
  const std::vector<BiasFusion> fusions = find_bias_fusions(f, alias_of);
  for (const BiasFusion& fused : fusions)
    alias_of[f.ops[fused.matmul].results.at(0)] = f.ops[fused.add].results.at(0);
  alias_groups(alias_of, root, members);
  const std::vector<GemmPair> pairs = find_gemm_pairs(f, binding, root, fusions);
  const MemoryPlan plan = plan_memory(f, float_dtype, layout.external, alias_of, run_times(f, pairs));

  build_steps(f, binding, float_dtype, alias_of, fusions, pairs);
  allocate_arena(plan);
}

void Executor::Impl::describe(const Function& f, DType float_dtype) {
  for (const Value& v : f.values) {
    if (!v.type)
      throw Error(fmt::format("cpu executor: @{}: %{} has no type (verify the module first)", f.name, v.name), v.loc);
    TensorType t = *v.type;
    if (is_float(t.dtype)) t.dtype = float_dtype;  // f16 and bf16 too: the CPU backend stores no half types
    type.push_back(std::move(t));
    value_name.push_back(v.name);
    value_loc.push_back(v.loc);
  }
  for (const Op& op : f.ops) {
    op_text.push_back(print_op(f, op));
    op_loc.push_back(op.loc);
  }
}

void Executor::Impl::build_steps(const Function& f, const DimBinding& binding, DType float_dtype,
                                 const std::vector<ValueId>& alias_of, const std::vector<BiasFusion>& fusions,
                                 const std::vector<GemmPair>& pairs) {
  in_slots.resize(f.values.size());
  out_slots.resize(f.values.size());
  // Per op: the bias its GEMM starts from, or that it runs in its matmul.
  std::vector<ValueId> bias_of(f.ops.size(), -1);
  std::vector<bool> folded(f.ops.size(), false), paired_with_next(f.ops.size(), false);
  for (const BiasFusion& fused : fusions) {
    bias_of[fused.matmul] = fused.bias;
    folded[fused.add] = true;
  }
  // The next step is the pair's second op: only reshapes that run no kernel lie between.
  for (const GemmPair& p : pairs) paired_with_next[p.first] = true;
  for (size_t i = 0; i < f.ops.size(); ++i) {
    const Op& op = f.ops[i];
    const int index = static_cast<int>(i);
    if (op.kind == OpKind::param) {
      const ValueId v = op.results.at(0);
      if (!param_index.emplace(f.values[v].name, params.size()).second)
        throw Error(fmt::format("compiling {}: a second parameter named {}", op_text[i], f.values[v].name), op.loc);
      params.push_back({f.values[v].name, v, index});
      continue;
    }
    if (op.kind == OpKind::reshape && alias_of[op.results.at(0)] >= 0) continue;
    if (folded[i]) continue;
    Step s{};
    s.op = index;
    s.kind = op.kind;
    s.with_next = paired_with_next[i];
    try {
      s.kernel = forward_kernel(op.kind, kernel_dtype(f, op, float_dtype));
      attrs.push_back(evaluate_attrs(op, binding));
    } catch (const Error& e) {
      throw Error(fmt::format("compiling {}: {}", op_text[i], e.message()), op.loc);
    }
    std::vector<ValueId> operands = op.operands;
    if (bias_of[i] >= 0) operands.push_back(bias_of[i]);
    s.in_begin = in_ptrs.size();
    s.in_count = operands.size();
    for (ValueId u : operands) {
      in_slots[root[u]].push_back(in_ptrs.size());
      in_types.push_back(type[u]);
      in_ptrs.push_back(nullptr);
    }
    s.out_begin = out_ptrs.size();
    s.out_count = op.results.size();
    for (ValueId r : op.results) {
      out_slots[root[r]].push_back(out_ptrs.size());  // a fused product writes its add's bytes
      out_types.push_back(type[r]);
      out_ptrs.push_back(nullptr);
    }
    steps.push_back(s);
  }
  // The arrays are final now, so spans into them stay valid.
  kernel_args.reserve(steps.size());
  for (size_t k = 0; k < steps.size(); ++k) {
    const Step& s = steps[k];
    kernel_args.push_back(KernelArgs{std::span<const TensorType>(in_types.data() + s.in_begin, s.in_count),
                                     std::span<const void* const>(in_ptrs.data() + s.in_begin, s.in_count),
                                     std::span<const TensorType>(out_types.data() + s.out_begin, s.out_count),
                                     std::span<void* const>(out_ptrs.data() + s.out_begin, s.out_count), attrs[k]});
  }
}

void Executor::Impl::allocate_arena(const MemoryPlan& plan) {
  // The planned values, then bytes of their own for copied results that the
  // caller does not bind. Allocated and touched once here, so that no run
  // pays first touch.
  int64_t total = plan.arena_bytes;
  std::vector<int64_t> copy_offset(results.size(), -1);
  for (int i : copied) {
    if (results[i].caller) continue;  // always copied into the caller's buffer
    copy_offset[i] = total;
    total += align_up(type[results[i].value].bytes(), kArenaAlignment);
  }
  arena_size = total;
  naive_size = plan.naive_bytes + (total - plan.arena_bytes);
  const size_t alloc = static_cast<size_t>(std::max(total, kArenaAlignment));  // never null, even when empty
  arena.reset(static_cast<std::byte*>(::operator new (alloc, std::align_val_t{kArenaAlignment})));
  std::memset(arena.get(), 0, alloc);

  ptr.assign(type.size(), nullptr);
  for (size_t v = 0; v < type.size(); ++v)
    if (root[v] == static_cast<ValueId>(v) && plan.offset[v] >= 0)
      set_storage(static_cast<ValueId>(v), arena.get() + plan.offset[v]);
  for (size_t i = 0; i < results.size(); ++i) {
    Result& r = results[i];
    if (r.direct && !r.caller) r.own = arena.get() + plan.offset[r.value];
    if (copy_offset[i] >= 0) r.own = arena.get() + copy_offset[i];
  }
}

double Executor::Impl::call(size_t k) {
  try {
    if (!profile) {
      steps[k].kernel(kernel_args[k]);
      return 0;
    }
    const Clock::time_point start = Clock::now();
    steps[k].kernel(kernel_args[k]);
    return std::chrono::duration<double>(Clock::now() - start).count();
  } catch (const Error& e) {
    throw Error(op_error(steps[k].op, e.message()), op_loc[steps[k].op]);
  } catch (const std::exception& e) {
    throw Error(op_error(steps[k].op, e.what()), op_loc[steps[k].op]);
  }
}

void Executor::Impl::record(size_t k, double seconds) {
  op_seconds[static_cast<size_t>(steps[k].kind)] += seconds;
  if (step_seconds.size() != steps.size()) step_seconds.assign(steps.size(), 0.0);
  step_seconds[k] += seconds;
}

void Executor::Impl::set_storage(ValueId r, void* p) {
  set_read_only_storage(r, p);
  for (size_t s : out_slots[r]) out_ptrs[s] = p;
}

void Executor::Impl::set_read_only_storage(ValueId r, const void* p) {
  for (ValueId m : members[r]) ptr[m] = p;
  for (size_t s : in_slots[r]) in_ptrs[s] = p;
}

std::string Executor::Impl::op_error(int op, std::string_view cause) const {
  return fmt::format("running {}: {}", op_text[op], cause);
}

const Executor::Impl::Param& Executor::Impl::param(std::string_view name) const {
  auto it = param_index.find(name);
  if (it == param_index.end())
    throw Error(fmt::format("cpu executor: @{} has no parameter named {}", function_name, name));
  return params[it->second];
}

size_t Executor::Impl::result_index(int i) const {
  if (i < 0 || static_cast<size_t>(i) >= results.size())
    throw Error(fmt::format("cpu executor: @{} has {} result{}, no result {}", function_name, results.size(),
                            results.size() == 1 ? "" : "s", i));
  return static_cast<size_t>(i);
}

ValueId Executor::Impl::arg(int i) const {
  if (i < 0 || static_cast<size_t>(i) >= args.size())
    throw Error(fmt::format("cpu executor: @{} has {} argument{}, no argument {}", function_name, args.size(),
                            args.size() == 1 ? "" : "s", i));
  return args[i];
}

Executor::Executor(const Function& f, const DimBinding& binding, DType float_dtype, const ExecutorOptions& options)
    : impl_(std::make_unique<Impl>(f, binding, float_dtype, options)) {}
Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

void Executor::bind_param(std::string_view name, void* data) {
  impl_->set_read_only_storage(impl_->param(name).value, data);
}

std::vector<std::string> Executor::param_names() const {
  std::vector<std::string> names;
  for (const Impl::Param& p : impl_->params) names.push_back(p.name);
  return names;
}

const TensorType& Executor::param_type(std::string_view name) const { return impl_->type[impl_->param(name).value]; }

void Executor::bind_input(int arg, const void* data) { impl_->set_read_only_storage(impl_->arg(arg), data); }

const TensorType& Executor::input_type(int arg) const { return impl_->type[impl_->arg(arg)]; }

void Executor::bind_output(int result, void* data) {
  Impl::Result& r = impl_->results[impl_->result_index(result)];
  r.bound = data;
  // A directly written result moves its producer's writes (and its readers)
  // to the caller's buffer; a copied one only changes where the copy goes.
  if (r.direct) impl_->set_storage(r.value, data ? data : r.own);
}

void Executor::run() {
  Impl& m = *impl_;
  // Check every binding first, so that a failed run has not half-written anything.
  for (size_t i = 0; i < m.args.size(); ++i)
    if (!m.ptr[m.args[i]])
      throw Error(fmt::format("running @{}: argument {} (%{}: {}) is not bound", m.function_name, i,
                              m.value_name[m.args[i]], m.type[m.args[i]].str()),
                  m.value_loc[m.args[i]]);
  for (const Impl::Param& p : m.params)
    if (!m.ptr[p.value])
      throw Error(m.op_error(p.op, fmt::format("parameter {} is not bound", p.name)), m.op_loc[p.op]);
  for (size_t i = 0; i < m.results.size(); ++i)
    if (m.results[i].caller && !m.results[i].bound)
      throw Error(fmt::format("running @{}: result {} (%{}) is left to the caller but not bound", m.function_name, i,
                              m.value_name[m.results[i].value]));

  for (size_t k = 0; k < m.steps.size(); ++k) {
    if (m.steps[k].with_next && kernel_threads() == 2) {
      // One GEMM per thread; their own BLAS calls run whole on it (a loop
      // inside a chunk runs inline).
      double seconds[2] = {};
      std::exception_ptr error[2];
      const Clock::time_point start = m.profile ? Clock::now() : Clock::time_point{};
      parallel_for(2, 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) try {
            seconds[i] = m.call(k + static_cast<size_t>(i));
          } catch (...) {
            error[i] = std::current_exception();
          }
      });
      for (const std::exception_ptr& e : error)
        if (e) std::rethrow_exception(e);
      if (m.profile) {
        // Each kernel's share of the pair's wall time, so that shares add up to the step.
        const double wall = std::chrono::duration<double>(Clock::now() - start).count();
        const double scale = seconds[0] + seconds[1] > 0 ? wall / (seconds[0] + seconds[1]) : 0.5;
        m.record(k, seconds[0] * scale);
        m.record(k + 1, seconds[1] * scale);
      }
      ++k;
      continue;
    }
    const double seconds = m.call(k);
    if (m.profile) m.record(k, seconds);
  }

  for (int i : m.copied) {
    const Impl::Result& r = m.results[i];
    void* dst = r.bound ? r.bound : r.own;
    const int64_t bytes = m.type[r.value].bytes();
    if (bytes > 0 && dst != m.ptr[r.value]) std::memcpy(dst, m.ptr[r.value], static_cast<size_t>(bytes));
  }
}

const void* Executor::output(int result) const {
  const Impl::Result& r = impl_->results[impl_->result_index(result)];
  if (r.direct) return impl_->ptr[r.value];
  return r.bound ? r.bound : r.own;
}

const TensorType& Executor::output_type(int result) const {
  return impl_->type[impl_->results[impl_->result_index(result)].value];
}

int Executor::num_outputs() const { return static_cast<int>(impl_->results.size()); }

int64_t Executor::arena_bytes() const { return impl_->arena_size; }

int64_t Executor::naive_bytes() const { return impl_->naive_size; }

const OpSeconds& Executor::op_seconds() const { return impl_->op_seconds; }

void Executor::reset_profile() {
  impl_->op_seconds.fill(0.0);
  impl_->step_seconds.clear();
}

std::string call_text(OpKind kind, const KernelArgs& args) {
  std::string text(op_name(kind));
  for (size_t i = 0; i < args.in_types.size(); ++i) {
    text += i ? " x " : " ";
    text += args.in_types[i].str();
  }
  for (const char* flag : {"transpose_a", "transpose_b"})
    if (args.attrs.get_bool(flag, false)) {
      text += ' ';
      text += flag;
    }
  return text;
}

std::vector<OpTime> Executor::op_times() const {
  const Impl& m = *impl_;
  std::vector<OpTime> out;
  for (size_t k = 0; k < m.step_seconds.size(); ++k)
    out.push_back(
        {m.function_name, m.steps[k].op, m.steps[k].kind, call_text(m.steps[k].kind, m.kernel_args[k]), m.step_seconds[k]});
  return out;
}

void Executor::set_profile(bool on) { impl_->profile = on; }

}  // namespace pf::cpu
