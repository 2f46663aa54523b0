// The CUDA executor: runs one call-free IR function on a device stream, its values planned once into one device arena.
#include "backends/cuda/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <map>

#include "backends/cpu/memory_plan.h"
#include "backends/cuda/check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/softmax_fusion.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "ir/printer.h"
#include "ir/verifier.h"

namespace pf::cuda {

struct Executor::Impl {
  struct Step {
    Kernel kernel;
    OpKind kind;
    int op;
    size_t in_begin, in_count, out_begin, out_count;
  };
  using Result = cpu::ResultSlot;
  struct Param {
    std::string name;
    ValueId value;
    int op;
  };

  CudaDevice* device;
  int stage;
  std::string stage_name;  // for CheckScope
  std::string function_name;
  std::vector<std::string> value_name;
  std::vector<TensorType> type;  // per value, as stored
  std::vector<ValueId> root;     // per value: whose bytes it uses
  std::vector<std::vector<ValueId>> members;
  std::vector<const void*> ptr;  // per value: its device address (nullptr: unbound external)
  std::vector<ValueId> args;
  std::vector<std::string> op_text;
  std::vector<Location> op_loc;
  std::vector<Param> params;
  std::map<std::string, size_t, std::less<>> param_index;

  std::vector<TensorType> in_types, out_types;
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  std::vector<std::vector<size_t>> in_slots, out_slots;
  std::vector<OpAttrs> attrs;
  std::vector<Step> steps;
  std::vector<KernelArgs> kernel_args;
  std::vector<std::string> step_names;  // per step: its op's text, for device-side errors

  std::vector<Result> results;
  std::vector<int> copied;
  void* arena = nullptr;
  int64_t arena_size = 0;
  int first_step = 0;
  bool profile = false;
  std::vector<cudaEvent_t> events;   // with profile: before step 0, after each step
  std::vector<double> step_seconds;  // with profile: per step, summed over runs

  Impl(const Function& f, const DimBinding& binding, CudaDevice& dev, int stage_index, DType float_dtype,
       const ExecutorOptions& options);
  ~Impl() {
    // Back to the stage stream's free list: only work queued after this
    // (which runs after anything still reading the arena) can get it again.
    if (device && arena) device->deallocate(arena);
    for (cudaEvent_t e : events) cudaEventDestroy(e);  // a destructor reports nothing
  }

  /// Adds the device time of each step of the run just queued (waits for it).
  void record_profile();
  void build_steps(const Function& f, const DimBinding& binding, DType float_dtype,
                   const std::vector<ValueId>& alias_of, const std::vector<SoftmaxChain>& chains);
  void allocate_arena(const cpu::MemoryPlan& plan);
  void set_storage(ValueId r, void* p);
  void set_read_only_storage(ValueId r, const void* p);
  const Param& param(std::string_view name) const;
  size_t result_index(int i) const;
  ValueId arg(int i) const;
};

Executor::Impl::Impl(const Function& f, const DimBinding& binding, CudaDevice& dev, int stage_index,
                     DType float_dtype, const ExecutorOptions& options)
    : device(&dev), stage(stage_index), function_name(f.name), args(f.args) {
  if (float_dtype != DType::f32 && float_dtype != DType::bf16)
    throw Error(fmt::format("cuda executor: floats are stored as f32 or bf16, not {}", dtype_name(float_dtype)), f.loc);
  stage_name = options.name.empty() ? fmt::format("stage {} on cuda:{}", stage, dev.ordinal()) : options.name;
  first_step = options.first_step;
  profile = options.profile;
  for (const Value& v : f.values) {
    if (!v.type)
      throw Error(fmt::format("cuda executor: @{}: %{} has no type (verify the module first)", f.name, v.name), v.loc);
    TensorType t = *v.type;
    if (is_float(t.dtype)) t.dtype = float_dtype;
    type.push_back(std::move(t));
    value_name.push_back(v.name);
  }
  for (const Op& op : f.ops) {
    op_text.push_back(print_op(f, op));
    op_loc.push_back(op.loc);
  }
  // Outside the arena: arguments, parameters, results left to the caller.
  // Reshape results that are not returned read their operand's bytes.
  cpu::ResultLayout layout = cpu::layout_results(f, options.caller_outputs, "cuda executor");
  results = std::move(layout.results);
  copied = std::move(layout.copied);
  std::vector<ValueId> alias_of = std::move(layout.alias_of);
  // A fused chain computes no intermediates: they are planned as aliases of
  // the chain's first operand, whose bytes the planner then keeps until the
  // chain's end. The ops of a chain's span run at one moment for the
  // planner, so nothing they read shares bytes with what they write.
  const std::vector<SoftmaxChain> chains = find_softmax_chains(f, binding);
  std::vector<int> op_time(f.ops.size());
  for (size_t i = 0; i < op_time.size(); ++i) op_time[i] = static_cast<int>(i);
  for (const SoftmaxChain& c : chains) {
    for (ValueId v : c.intermediates) alias_of[v] = c.operands[0];
    for (int k = c.ops.front(); k <= c.ops.back(); ++k) op_time[static_cast<size_t>(k)] = c.ops.front();
  }
  const cpu::MemoryPlan plan = cpu::plan_memory(f, float_dtype, layout.external, alias_of, op_time);
  cpu::alias_groups(alias_of, root, members);
  build_steps(f, binding, float_dtype, alias_of, chains);
  allocate_arena(plan);
}

void Executor::Impl::build_steps(const Function& f, const DimBinding& binding, DType float_dtype,
                                 const std::vector<ValueId>& alias_of, const std::vector<SoftmaxChain>& chains) {
  in_slots.resize(f.values.size());
  out_slots.resize(f.values.size());
  std::vector<const SoftmaxChain*> chain_ending(f.ops.size(), nullptr);
  std::vector<bool> fused(f.ops.size(), false);
  for (const SoftmaxChain& c : chains) {
    for (int k : c.ops) fused[static_cast<size_t>(k)] = true;
    chain_ending[static_cast<size_t>(c.ops.back())] = &c;
  }
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
    const SoftmaxChain* chain = chain_ending[i];
    if (fused[i] && !chain) continue;  // runs in its chain's kernel
    Step s{};
    s.op = index;
    // A fused chain is profiled as its softmax (or softmax_grad) with the chain's operands.
    s.kind = chain ? (chain->gradient ? OpKind::softmax_grad : OpKind::softmax) : op.kind;
    const std::vector<ValueId>& operands = chain ? chain->operands : op.operands;
    const std::vector<ValueId> op_results = chain ? std::vector<ValueId>{chain->result} : op.results;
    try {
      if (chain)
        s.kernel = chain->gradient ? masked_softmax_grad_kernel(float_dtype) : masked_softmax_kernel(float_dtype);
      else
        s.kernel = forward_kernel(op.kind, cpu::kernel_dtype(f, op, float_dtype));
      attrs.push_back(evaluate_attrs(op, binding));
    } catch (const Error& e) {
      throw Error(fmt::format("compiling {}: {}", op_text[i], e.message()), op.loc);
    }
    s.in_begin = in_ptrs.size();
    s.in_count = operands.size();
    for (ValueId u : operands) {
      in_slots[root[u]].push_back(in_ptrs.size());
      in_types.push_back(type[u]);
      in_ptrs.push_back(nullptr);
    }
    s.out_begin = out_ptrs.size();
    s.out_count = op_results.size();
    for (ValueId r : op_results) {
      out_slots[r].push_back(out_ptrs.size());
      out_types.push_back(type[r]);
      out_ptrs.push_back(nullptr);
    }
    steps.push_back(s);
    step_names.push_back(chain ? fmt::format("{}; {}; {}", op_text[static_cast<size_t>(chain->ops[0])],
                                             op_text[static_cast<size_t>(chain->ops[1])], op_text[i])
                               : op_text[i]);
  }
  kernel_args.reserve(steps.size());
  for (size_t k = 0; k < steps.size(); ++k) {
    const Step& s = steps[k];
    kernel_args.push_back(KernelArgs{std::span<const TensorType>(in_types.data() + s.in_begin, s.in_count),
                                     std::span<const void* const>(in_ptrs.data() + s.in_begin, s.in_count),
                                     std::span<const TensorType>(out_types.data() + s.out_begin, s.out_count),
                                     std::span<void* const>(out_ptrs.data() + s.out_begin, s.out_count), attrs[k]});
  }
}

void Executor::Impl::allocate_arena(const cpu::MemoryPlan& plan) {
  int64_t total = plan.arena_bytes;
  std::vector<int64_t> copy_offset(results.size(), -1);
  for (int i : copied) {
    if (results[i].caller) continue;
    copy_offset[i] = total;
    total += align_up(type[results[i].value].bytes(), cpu::kArenaAlignment);
  }
  arena_size = total;
  // The allocator's blocks are at least 256-byte aligned (cudaMalloc), so
  // the plan's 64-byte-aligned offsets stay 64-byte aligned on the device.
  arena = device->allocate(static_cast<size_t>(std::max<int64_t>(total, 1)), stage);
  auto* base = static_cast<std::byte*>(arena);
  ptr.assign(type.size(), nullptr);
  for (size_t v = 0; v < type.size(); ++v)
    if (root[v] == static_cast<ValueId>(v) && plan.offset[v] >= 0)
      set_storage(static_cast<ValueId>(v), base + plan.offset[v]);
  for (size_t i = 0; i < results.size(); ++i) {
    Result& r = results[i];
    if (r.direct && !r.caller) r.own = base + plan.offset[r.value];
    if (copy_offset[i] >= 0) r.own = base + copy_offset[i];
  }
}

void Executor::Impl::record_profile() {
  CheckScope scope(stage_name, "reading the profile's events");
  PF_CUDA_CHECK(cudaEventSynchronize(events.back()));
  step_seconds.resize(steps.size(), 0.0);
  for (size_t k = 0; k < steps.size(); ++k) {
    float ms = 0;
    PF_CUDA_CHECK(cudaEventElapsedTime(&ms, events[k], events[k + 1]));
    step_seconds[k] += ms * 1e-3;
  }
}

void Executor::Impl::set_storage(ValueId r, void* p) {
  set_read_only_storage(r, p);
  for (size_t s : out_slots[r]) out_ptrs[s] = p;
}

void Executor::Impl::set_read_only_storage(ValueId r, const void* p) {
  for (ValueId m : members[r]) ptr[m] = p;
  for (size_t s : in_slots[r]) in_ptrs[s] = p;
}

const Executor::Impl::Param& Executor::Impl::param(std::string_view name) const {
  auto it = param_index.find(name);
  if (it == param_index.end())
    throw Error(fmt::format("cuda executor: @{} has no parameter named {}", function_name, name));
  return params[it->second];
}

size_t Executor::Impl::result_index(int i) const {
  if (i < 0 || static_cast<size_t>(i) >= results.size())
    throw Error(fmt::format("cuda executor: @{} has {} result(s), no result {}", function_name, results.size(), i));
  return static_cast<size_t>(i);
}

ValueId Executor::Impl::arg(int i) const {
  if (i < 0 || static_cast<size_t>(i) >= args.size())
    throw Error(fmt::format("cuda executor: @{} has {} argument(s), no argument {}", function_name, args.size(), i));
  return args[i];
}

Executor::Executor(const Function& f, const DimBinding& binding, CudaDevice& device, int stage, DType float_dtype,
                   const ExecutorOptions& options)
    : impl_(std::make_unique<Impl>(f, binding, device, stage, float_dtype, options)) {}
Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

void Executor::bind_param(std::string_view name, void* device_data) {
  impl_->set_read_only_storage(impl_->param(name).value, device_data);
}

std::vector<std::string> Executor::param_names() const {
  std::vector<std::string> names;
  for (const Impl::Param& p : impl_->params) names.push_back(p.name);
  return names;
}

const TensorType& Executor::param_type(std::string_view name) const { return impl_->type[impl_->param(name).value]; }

void Executor::bind_input(int arg, const void* device_data) {
  impl_->set_read_only_storage(impl_->arg(arg), device_data);
}

const TensorType& Executor::input_type(int arg) const { return impl_->type[impl_->arg(arg)]; }

void Executor::bind_output(int result, void* device_data) {
  Impl::Result& r = impl_->results[impl_->result_index(result)];
  r.bound = device_data;
  if (r.direct) impl_->set_storage(r.value, device_data ? device_data : r.own);
}

void Executor::run() {
  Impl& m = *impl_;
  for (size_t i = 0; i < m.args.size(); ++i)
    if (!m.ptr[m.args[i]])
      throw Error(fmt::format("running @{}: argument {} (%{}: {}) is not bound", m.function_name, i,
                              m.value_name[m.args[i]], m.type[m.args[i]].str()));
  for (const Impl::Param& p : m.params)
    if (!m.ptr[p.value])
      throw Error(fmt::format("running {}: parameter {} is not bound", m.op_text[p.op], p.name), m.op_loc[p.op]);
  for (size_t i = 0; i < m.results.size(); ++i)
    if (m.results[i].caller && !m.results[i].bound)
      throw Error(fmt::format("running @{}: result {} (%{}) is left to the caller but not bound", m.function_name, i,
                              m.value_name[m.results[i].value]));

  m.device->make_current();
  LaunchContext ctx = m.device->context(m.stage);
  if (m.profile && m.events.size() != m.steps.size() + 1) {
    CheckScope scope(m.stage_name, "creating the profile's events");
    m.events.resize(m.steps.size() + 1, nullptr);
    for (cudaEvent_t& e : m.events)
      if (!e) PF_CUDA_CHECK(cudaEventCreate(&e));
  }
  if (m.profile) PF_CUDA_CHECK(cudaEventRecord(m.events[0], ctx.stream));
  for (size_t k = 0; k < m.steps.size(); ++k) {
    const int op = m.steps[k].op;
    CheckScope scope(m.stage_name, m.op_text[op]);
    ctx.step = m.first_step + static_cast<int>(k);
    try {
      m.steps[k].kernel(m.kernel_args[k], ctx);
      if (m.profile) PF_CUDA_CHECK(cudaEventRecord(m.events[k + 1], ctx.stream));
    } catch (const Error& e) {
      throw Error(fmt::format("running {}: {}", m.op_text[op], e.message()), m.op_loc[op]);
    } catch (const std::exception& e) {
      throw Error(fmt::format("running {}: {}", m.op_text[op], e.what()), m.op_loc[op]);
    }
  }
  CheckScope scope(m.stage_name, "copying results");
  for (int i : m.copied) {
    const Impl::Result& r = m.results[i];
    void* dst = r.bound ? r.bound : r.own;
    const int64_t bytes = m.type[r.value].bytes();
    if (bytes > 0 && dst != m.ptr[r.value])
      PF_CUDA_CHECK(cudaMemcpyAsync(dst, m.ptr[r.value], static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                    ctx.stream));
  }
  if (m.profile) m.record_profile();
}

void Executor::finish() {
  if (impl_->first_step == 0) {
    impl_->device->synchronize(impl_->stage, &impl_->step_names);
    return;
  }
  // The device names ops by their index in the list it is given.
  std::vector<std::string> names(static_cast<size_t>(impl_->first_step));
  names.insert(names.end(), impl_->step_names.begin(), impl_->step_names.end());
  impl_->device->synchronize(impl_->stage, &names);
}

std::string Executor::op_at_step(int64_t step) const {
  const int64_t k = step - impl_->first_step;
  if (k < 0 || k >= static_cast<int64_t>(impl_->step_names.size())) return "";
  return impl_->step_names[static_cast<size_t>(k)];
}

std::vector<cpu::OpTime> Executor::op_times() const {
  const Impl& m = *impl_;
  std::vector<cpu::OpTime> out;
  for (size_t k = 0; k < m.step_seconds.size(); ++k)
    out.push_back({m.function_name, m.steps[k].op, m.steps[k].kind, cpu::call_text(m.steps[k].kind, m.kernel_args[k]),
                   m.step_seconds[k]});
  return out;
}

void Executor::reset_profile() { impl_->step_seconds.clear(); }

void Executor::set_profile(bool on) { impl_->profile = on; }

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

}  // namespace pf::cuda
