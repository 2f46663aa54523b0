// What a compiled function is wherever it runs: values, bindings, kernel calls with their pointer arrays, placement in an arena, profile.
#include "backends/common/compiled_function.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "ir/align.h"
#include "ir/printer.h"
#include "ir/verifier.h"

namespace pf::backend {

DType kernel_dtype(const Function& f, const Op& op, DType float_dtype) {
  for (ValueId v : op.operands)
    if (is_float(f.type_of(v).dtype)) return float_dtype;
  for (ValueId v : op.results)
    if (is_float(f.type_of(v).dtype)) return float_dtype;
  return f.type_of(op.results.at(0)).dtype;
}

struct CompiledFunction::State {
  /// One entry of the function's returns.
  struct Result {
    ValueId value;
    bool direct;            // written by its producing op (else copied at the end of a run)
    bool caller = false;    // planned outside the arena: must be bound before a run
    void* bound = nullptr;  // the caller's buffer, if bound
    void* own = nullptr;    // executor-owned bytes used when not bound (nullptr for caller outputs)
    bool accumulate = false;    // runs add it into `bound` (accumulate_output)
    bool added_at_end = false;  // ... after the last call, rather than by its kernel
  };
  /// A `param` op: its result is bound by the caller, by name.
  struct Param {
    std::string name;
    ValueId value;
    int op;
  };
  /// One kernel call, in run order; its KernelArgs point into the flat arrays below.
  struct Call {
    int op;
    OpKind kind;
    size_t in_begin, in_count, out_begin, out_count;
  };

  std::string backend;  // "cpu", "cuda": for messages
  std::string function_name;
  std::vector<std::string> value_name;  // per value, for messages
  std::vector<Location> value_loc;
  std::vector<TensorType> type;  // per value, as stored (floats in the float dtype)
  std::vector<ValueId> args;
  std::vector<std::string> op_text;  // per op: its printed text, for messages
  std::vector<Location> op_loc;
  std::vector<Param> params;                               // in op order
  std::map<std::string, size_t, std::less<>> param_index;  // name -> position in params
  std::vector<Result> results;
  std::vector<int> copied;                    // results copied at the end of a run
  std::vector<bool> external;                 // per value: outside the arena
  std::vector<ValueId> reshape_alias;         // per value: the operand an unreturned reshape reads, else -1
  std::vector<ValueId> root;                  // per value: whose bytes it uses (itself unless an alias)
  std::vector<std::vector<ValueId>> members;  // per root: the values sharing its bytes, itself first
  std::vector<const void*> ptr;               // per value: where it lives now (nullptr: an unbound external)

  // Kernel arguments of all calls, flat; slots are patched when a binding changes.
  std::vector<Call> calls;
  std::vector<TensorType> in_types, out_types;
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  std::vector<std::vector<size_t>> in_slots, out_slots;  // per root: its positions in in_ptrs / out_ptrs
  std::vector<int> writer;                               // per root: the call writing it, or -1
  std::vector<bool> call_accumulates;                    // per call: its kernel can add into its result
  std::vector<OpAttrs> attrs;                            // per call
  std::vector<KernelArgs> kernel_args;                   // per call, built once the arrays are final

  int64_t arena_size = 0;
  int64_t naive_size = 0;
  bool profile = false;
  TensorParallelGroup* tensor_parallel = nullptr;
  TensorParallelGroup* expert_parallel = nullptr;
  OpSeconds op_seconds{};
  std::vector<double> call_seconds;  // per call, with profile

  /// Points every reader (and writer) of `r`'s bytes at `p`.
  void set_storage(ValueId r, void* p) {
    set_read_only_storage(r, p);
    for (size_t k : out_slots[r]) out_ptrs[k] = p;
  }
  void set_read_only_storage(ValueId r, const void* p) {
    for (ValueId m : members[r]) ptr[m] = p;
    for (size_t k : in_slots[r]) in_ptrs[k] = p;
  }
  const Param& param(std::string_view name) const {
    auto it = param_index.find(name);
    if (it == param_index.end())
      throw Error(fmt::format("{} executor: @{} has no parameter named {}", backend, function_name, name));
    return params[it->second];
  }
  /// `i` as an index into `results` / the argument value of `i`; throw pf::Error when out of range.
  size_t result_index(int i) const {
    if (i < 0 || static_cast<size_t>(i) >= results.size())
      throw Error(fmt::format("{} executor: @{} has {} result{}, no result {}", backend, function_name,
                              results.size(), results.size() == 1 ? "" : "s", i));
    return static_cast<size_t>(i);
  }
  ValueId arg(int i) const {
    if (i < 0 || static_cast<size_t>(i) >= args.size())
      throw Error(fmt::format("{} executor: @{} has {} argument{}, no argument {}", backend, function_name,
                              args.size(), args.size() == 1 ? "" : "s", i));
    return args[i];
  }

  /// Where result `r`'s producer writes and whether its kernel adds, from
  /// its binding and accumulation; for a directly written result.
  void route(Result& r);

  void describe(const Function& f, DType float_dtype);
  /// The first return of a value an op computes is written in place;
  /// arguments, parameters and repeats are copied.
  void lay_out_results(const Function& f, std::span<const int> caller_outputs);
};

CompiledFunction::CompiledFunction(const Function& f, std::string_view backend, DType float_dtype,
                                   std::span<const DType> float_dtypes, const ExecutorOptions& options)
    : s_(std::make_unique<State>()) {
  State& s = *s_;
  s.backend = backend;
  s.function_name = f.name;
  s.args = f.args;
  s.profile = options.profile;
  s.tensor_parallel = options.tensor_parallel;
  s.expert_parallel = options.expert_parallel;
  if (std::find(float_dtypes.begin(), float_dtypes.end(), float_dtype) == float_dtypes.end()) {
    std::vector<std::string_view> names;
    for (DType t : float_dtypes) names.push_back(dtype_name(t));
    throw Error(fmt::format("{} executor: floats are stored as {}, not {}", backend, fmt::join(names, " or "),
                            dtype_name(float_dtype)),
                f.loc);
  }
  s.describe(f, float_dtype);
  s.lay_out_results(f, options.caller_outputs);
  s.in_slots.resize(f.values.size());
  s.out_slots.resize(f.values.size());
  s.writer.assign(f.values.size(), -1);
}

void CompiledFunction::State::describe(const Function& f, DType float_dtype) {
  const std::vector<DType> stored = stored_dtypes(f, float_dtype);
  for (const Value& v : f.values) {
    if (!v.type)
      throw Error(fmt::format("{} executor: @{}: %{} has no type (verify the module first)", backend, f.name, v.name),
                  v.loc);
    TensorType t = *v.type;
    t.dtype = stored[type.size()];
    type.push_back(std::move(t));
    value_name.push_back(v.name);
    value_loc.push_back(v.loc);
  }
  for (const Op& op : f.ops) {
    op_text.push_back(print_op(f, op));
    op_loc.push_back(op.loc);
  }
  for (size_t i = 0; i < f.ops.size(); ++i) {
    const Op& op = f.ops[i];
    if (op.kind != OpKind::param) continue;
    const ValueId v = op.results.at(0);
    if (!param_index.emplace(f.values[v].name, params.size()).second)
      throw Error(fmt::format("compiling {}: a second parameter named {}", op_text[i], f.values[v].name), op.loc);
    params.push_back({f.values[v].name, v, static_cast<int>(i)});
  }
}

void CompiledFunction::State::lay_out_results(const Function& f, std::span<const int> caller_outputs) {
  const size_t n = f.values.size();
  std::vector<bool> returned(n, false);
  for (ValueId v : f.returns) {
    const int def = f.values[v].def_op;
    const bool direct = def >= 0 && f.ops[def].kind != OpKind::param && !returned[v];
    results.push_back({v, direct});
    returned[v] = true;
  }
  for (int i : caller_outputs) {
    if (i < 0 || static_cast<size_t>(i) >= results.size())
      throw Error(fmt::format("{} executor: @{} has {} result{}, no result {} to leave to the caller", backend, f.name,
                              results.size(), results.size() == 1 ? "" : "s", i),
                  f.return_loc);
    results[i].caller = true;
  }
  for (size_t i = 0; i < results.size(); ++i)
    if (!results[i].direct) copied.push_back(static_cast<int>(i));

  // Outside the arena: arguments, parameters, results left to the caller.
  // Reshape results that are not returned read their operand's bytes.
  external.assign(n, false);
  reshape_alias.assign(n, -1);
  for (ValueId a : f.args) external[a] = true;
  for (const Result& r : results)
    if (r.caller && r.direct) external[r.value] = true;
  for (const Op& op : f.ops) {
    if (op.kind == OpKind::param) external[op.results.at(0)] = true;
    if (op.kind == OpKind::reshape && !returned[op.results.at(0)]) reshape_alias[op.results[0]] = op.operands.at(0);
  }
}

CompiledFunction::~CompiledFunction() = default;
CompiledFunction::CompiledFunction(CompiledFunction&&) noexcept = default;
CompiledFunction& CompiledFunction::operator=(CompiledFunction&&) noexcept = default;

const std::vector<bool>& CompiledFunction::external() const { return s_->external; }

std::vector<ValueId> CompiledFunction::reshape_aliases() const { return s_->reshape_alias; }

void CompiledFunction::set_aliases(const std::vector<ValueId>& alias_of) {
  alias_groups(alias_of, s_->root, s_->members);
}

const std::vector<ValueId>& CompiledFunction::roots() const { return s_->root; }

bool CompiledFunction::runs_no_kernel(const Op& op) const {
  if (op.kind == OpKind::param) return true;
  return op.kind == OpKind::reshape && s_->reshape_alias[op.results.at(0)] >= 0;
}

void CompiledFunction::add_call(const Op& op, int index, OpKind kind, std::span<const ValueId> operands,
                                std::span<const ValueId> results, const DimBinding& binding) {
  State& s = *s_;
  s.attrs.push_back(compiling(index, [&] { return evaluate_attrs(op, binding); }));
  s.calls.push_back({index, kind, s.in_ptrs.size(), operands.size(), s.out_ptrs.size(), results.size()});
  s.call_accumulates.push_back(false);
  for (ValueId u : operands) {
    s.in_slots[s.root[u]].push_back(s.in_ptrs.size());
    s.in_types.push_back(s.type[u]);
    s.in_ptrs.push_back(nullptr);
  }
  for (ValueId r : results) {
    s.writer[s.root[r]] = static_cast<int>(s.calls.size() - 1);
    s.out_slots[s.root[r]].push_back(s.out_ptrs.size());  // e.g. a fused product writes its add's bytes
    s.out_types.push_back(s.type[r]);
    s.out_ptrs.push_back(nullptr);
  }
}

void CompiledFunction::mark_accumulating(size_t k) { s_->call_accumulates.at(k) = true; }

void CompiledFunction::place(const MemoryPlan& plan, const std::function<std::byte*(int64_t bytes)>& allocate) {
  State& s = *s_;
  // The arrays are final now, so spans into them stay valid.
  s.kernel_args.reserve(s.calls.size());
  for (size_t k = 0; k < s.calls.size(); ++k) {
    const State::Call& c = s.calls[k];
    s.kernel_args.push_back(KernelArgs{std::span<const TensorType>(s.in_types.data() + c.in_begin, c.in_count),
                                       std::span<const void* const>(s.in_ptrs.data() + c.in_begin, c.in_count),
                                       std::span<const TensorType>(s.out_types.data() + c.out_begin, c.out_count),
                                       std::span<void* const>(s.out_ptrs.data() + c.out_begin, c.out_count),
                                       s.attrs[k]});
    s.kernel_args.back().group = s.tensor_parallel;
    s.kernel_args.back().expert_group = s.expert_parallel;
  }

  // The planned values, then bytes of their own for copied results that the
  // caller does not bind.
  int64_t total = plan.arena_bytes;
  std::vector<int64_t> copy_offset(s.results.size(), -1);
  for (int i : s.copied) {
    if (s.results[i].caller) continue;  // always copied into the caller's buffer
    copy_offset[i] = total;
    total += align_up(s.type[s.results[i].value].bytes(), kArenaAlignment);
  }
  s.arena_size = total;
  s.naive_size = plan.naive_bytes + (total - plan.arena_bytes);
  std::byte* base = allocate(total);

  s.ptr.assign(s.type.size(), nullptr);
  for (size_t v = 0; v < s.type.size(); ++v)
    if (s.root[v] == static_cast<ValueId>(v) && plan.offset[v] >= 0)
      s.set_storage(static_cast<ValueId>(v), base + plan.offset[v]);
  for (size_t i = 0; i < s.results.size(); ++i) {
    State::Result& r = s.results[i];
    if (r.direct && !r.caller) r.own = base + plan.offset[r.value];
    if (copy_offset[i] >= 0) r.own = base + copy_offset[i];
  }
}

void CompiledFunction::check_bound() const {
  const State& s = *s_;
  for (size_t i = 0; i < s.args.size(); ++i)
    if (!s.ptr[s.args[i]])
      throw Error(fmt::format("running @{}: argument {} (%{}: {}) is not bound", s.function_name, i,
                              s.value_name[s.args[i]], s.type[s.args[i]].str()),
                  s.value_loc[s.args[i]]);
  for (const State::Param& p : s.params)
    if (!s.ptr[p.value])
      throw Error(fmt::format("running {}: parameter {} is not bound", s.op_text[p.op], p.name), s.op_loc[p.op]);
  for (size_t i = 0; i < s.results.size(); ++i)
    if (s.results[i].caller && !s.results[i].bound)
      throw Error(fmt::format("running @{}: result {} (%{}) is left to the caller but not bound", s.function_name, i,
                              s.value_name[s.results[i].value]));
}

size_t CompiledFunction::num_calls() const { return s_->calls.size(); }

int CompiledFunction::call_op(size_t k) const { return s_->calls[k].op; }

const KernelArgs& CompiledFunction::call_args(size_t k) const { return s_->kernel_args[k]; }

const std::string& CompiledFunction::op_text(int op) const { return s_->op_text[static_cast<size_t>(op)]; }

size_t CompiledFunction::num_copied() const { return s_->copied.size(); }

CompiledFunction::Copy CompiledFunction::copied(size_t i) const {
  const State::Result& r = s_->results[static_cast<size_t>(s_->copied[i])];
  if (r.accumulate) return {nullptr, nullptr, 0};  // added instead
  return {r.bound ? r.bound : r.own, s_->ptr[r.value], static_cast<size_t>(s_->type[r.value].bytes())};
}

size_t CompiledFunction::num_added() const { return s_->results.size(); }

CompiledFunction::Added CompiledFunction::added(size_t i) const {
  const State::Result& r = s_->results[i];
  if (!r.accumulate || (r.direct && !r.added_at_end)) return {nullptr, nullptr, nullptr};
  return {r.bound, s_->ptr[r.value], &s_->type[r.value]};
}

Error CompiledFunction::compile_error(int op, const Error& cause) const {
  return Error(fmt::format("compiling {}: {}", s_->op_text[op], cause.message()), s_->op_loc[op]);
}

Error CompiledFunction::run_error(size_t k, std::string_view cause) const {
  const int op = s_->calls[k].op;
  return Error(fmt::format("running {}: {}", s_->op_text[op], cause), s_->op_loc[op]);
}

bool CompiledFunction::profiling() const { return s_->profile; }

void CompiledFunction::record(size_t k, double seconds) {
  State& s = *s_;
  s.op_seconds[static_cast<size_t>(s.calls[k].kind)] += seconds;
  if (s.call_seconds.size() != s.calls.size()) s.call_seconds.assign(s.calls.size(), 0.0);
  s.call_seconds[k] += seconds;
}

void CompiledFunction::bind_param(std::string_view name, void* data) {
  s_->set_read_only_storage(s_->param(name).value, data);
}

std::vector<std::string> CompiledFunction::param_names() const {
  std::vector<std::string> names;
  for (const State::Param& p : s_->params) names.push_back(p.name);
  return names;
}

const TensorType& CompiledFunction::param_type(std::string_view name) const {
  return s_->type[s_->param(name).value];
}

void CompiledFunction::bind_input(int arg, const void* data) { s_->set_read_only_storage(s_->arg(arg), data); }

const TensorType& CompiledFunction::input_type(int arg) const { return s_->type[s_->arg(arg)]; }

void CompiledFunction::bind_output(int result, void* data) {
  State::Result& r = s_->results[s_->result_index(result)];
  if (r.accumulate && !data)
    throw Error(fmt::format("{} executor: @{}: result {} is accumulated into its buffer and cannot be unbound",
                            s_->backend, s_->function_name, result));
  r.bound = data;
  // A directly written result moves its producer's writes (and its readers)
  // to the caller's buffer; a copied one only changes where the copy goes.
  if (r.direct) s_->route(r);
}

void CompiledFunction::accumulate_output(int result, bool on) {
  State& s = *s_;
  State::Result& r = s.results[s.result_index(result)];
  auto refuse = [&](std::string_view why) {
    return Error(fmt::format("{} executor: @{}: result {} (%{}) cannot be accumulated: {}", s.backend,
                             s.function_name, result, s.value_name[r.value], why));
  };
  if (on && !r.bound) throw refuse("it is not bound");
  if (on && !is_float(s.type[r.value].dtype)) throw refuse("it is no float");
  if (on && r.caller) throw refuse("it is left to the caller");
  r.accumulate = on;
  if (r.direct) s.route(r);
}

void CompiledFunction::State::route(Result& r) {
  const ValueId v = r.value;
  const int k = writer[root[v]];
  // The kernel adds into the caller's buffer only where it alone touches
  // those bytes: a later reader would see the running sum.
  const bool in_kernel = r.accumulate && k >= 0 && call_accumulates[k] && root[v] == v && members[v].size() == 1 &&
                         in_slots[v].empty() && calls[k].out_count == 1;
  if (k >= 0 && static_cast<size_t>(k) < kernel_args.size()) kernel_args[k].accumulate = in_kernel;
  r.added_at_end = r.accumulate && !in_kernel;
  set_storage(v, r.bound && !r.added_at_end ? r.bound : r.own);
}

const void* CompiledFunction::output(int result) const {
  const State::Result& r = s_->results[s_->result_index(result)];
  if (r.accumulate) return r.bound;  // the sum so far
  if (r.direct) return s_->ptr[r.value];
  return r.bound ? r.bound : r.own;
}

const TensorType& CompiledFunction::output_type(int result) const {
  return s_->type[s_->results[s_->result_index(result)].value];
}

int CompiledFunction::num_outputs() const { return static_cast<int>(s_->results.size()); }

int64_t CompiledFunction::arena_bytes() const { return s_->arena_size; }

int64_t CompiledFunction::naive_bytes() const { return s_->naive_size; }

const OpSeconds& CompiledFunction::op_seconds() const { return s_->op_seconds; }

std::vector<OpTime> CompiledFunction::op_times() const {
  const State& s = *s_;
  std::vector<OpTime> out;
  for (size_t k = 0; k < s.call_seconds.size(); ++k)
    out.push_back({s.function_name, s.calls[k].op, s.calls[k].kind, call_text(s.calls[k].kind, s.kernel_args[k]),
                   s.call_seconds[k]});
  return out;
}

void CompiledFunction::reset_profile() {
  s_->op_seconds.fill(0.0);
  s_->call_seconds.clear();
}

void CompiledFunction::set_profile(bool on) { s_->profile = on; }

}  // namespace pf::backend
