// The CUDA executor: runs one call-free IR function on a device stream, its values planned once into one device arena.
#include "backends/cuda/executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/gemm_fusion.h"
#include "backends/cuda/softmax_fusion.h"

namespace pf::cuda {

namespace {

constexpr std::array<DType, 2> kFloatDtypes = {DType::f32, DType::bf16};

}  // namespace

struct Executor::Impl {
  Impl(CudaDevice& dev, int stage_index, const ExecutorOptions& options)
      : device(&dev),
        stage(stage_index),
        stage_name(options.name.empty() ? fmt::format("stage {} on cuda:{}", stage_index, dev.ordinal())
                                        : options.name),
        first_step(options.first_step) {}
  ~Impl() {
    // Back to the stage stream's free list: only work queued after this
    // (which runs after anything still reading the arena) can get it again.
    if (device && arena) device->deallocate(arena);
    for (cudaEvent_t e : events) cudaEventDestroy(e);  // a destructor reports nothing
  }

  CudaDevice* device;
  int stage;
  std::string stage_name;  // for CheckScope
  int first_step;
  std::vector<Kernel> kernels;          // per call
  std::vector<std::string> step_names;  // per call: its op's text, for device-side errors
  void* arena = nullptr;
  std::vector<cudaEvent_t> events;  // with profile: before call 0, after each call
};

Executor::Executor(const Function& f, const DimBinding& binding, CudaDevice& device, int stage, DType float_dtype,
                   const ExecutorOptions& options)
    : CompiledFunction(f, "cuda", float_dtype, kFloatDtypes, options),
      impl_(std::make_unique<Impl>(device, stage, options)) {
  // A fused chain computes no intermediates: they are planned as aliases of
  // the chain's first operand, whose bytes the planner then keeps until the
  // chain's end. The ops of a chain's span run at one moment for the
  // planner, so nothing they read shares bytes with what they write.
  const std::vector<SoftmaxChain> chains = find_softmax_chains(f, binding);
  std::vector<ValueId> alias_of = reshape_aliases();
  // A linear layer's GEMM writes its bias add's (or GELU's) result through a
  // cuBLASLt epilogue: the values before it are that result's bytes.
  const std::vector<GemmEpilogue> gemms = find_gemm_epilogues(f, chains);
  for (const GemmEpilogue& e : gemms)
    for (ValueId v : e.intermediates) alias_of[v] = e.result;
  std::vector<int> op_time(f.ops.size());
  for (size_t i = 0; i < op_time.size(); ++i) op_time[i] = static_cast<int>(i);
  for (const SoftmaxChain& c : chains) {
    for (ValueId v : c.intermediates) alias_of[v] = c.operands[0];
    for (int k = c.ops.front(); k <= c.ops.back(); ++k) op_time[static_cast<size_t>(k)] = c.ops.front();
  }
  set_aliases(alias_of);
  const backend::MemoryPlan plan = backend::plan_memory(f, float_dtype, external(), alias_of, op_time);

  std::vector<const SoftmaxChain*> chain_ending(f.ops.size(), nullptr);
  std::vector<const GemmEpilogue*> epilogue_of(f.ops.size(), nullptr);
  std::vector<bool> fused(f.ops.size(), false);
  for (const GemmEpilogue& e : gemms) {
    epilogue_of[static_cast<size_t>(e.matmul)] = &e;
    fused[static_cast<size_t>(e.add)] = true;
    if (e.gelu >= 0) fused[static_cast<size_t>(e.gelu)] = true;
  }
  for (const SoftmaxChain& c : chains) {
    for (int k : c.ops) fused[static_cast<size_t>(k)] = true;
    chain_ending[static_cast<size_t>(c.ops.back())] = &c;
  }
  for (size_t i = 0; i < f.ops.size(); ++i) {
    const Op& op = f.ops[i];
    const int index = static_cast<int>(i);
    if (runs_no_kernel(op)) continue;
    const SoftmaxChain* chain = chain_ending[i];
    if (fused[i] && !chain) continue;  // runs in its chain's kernel (or its GEMM's epilogue)
    if (const GemmEpilogue* e = epilogue_of[i]) {
      const Kernel kernel = compiling(index, [&] {
        return e->gelu >= 0 ? matmul_bias_gelu_kernel(float_dtype) : forward_kernel(OpKind::matmul, float_dtype);
      });
      const std::vector<ValueId> gemm_operands = {op.operands[0], op.operands[1], e->bias};
      const std::vector<ValueId> gemm_results = {e->result};
      add_call(op, index, OpKind::matmul, gemm_operands, gemm_results, binding);
      impl_->kernels.push_back(kernel);
      impl_->step_names.push_back(e->gelu >= 0 ? fmt::format("{}; {}; {}", op_text(index), op_text(e->add),
                                                             op_text(e->gelu))
                                               : fmt::format("{}; {}", op_text(index), op_text(e->add)));
      continue;
    }
    // A fused chain is profiled as its softmax (or softmax_grad) with the chain's operands.
    const OpKind kind = chain ? (chain->gradient ? OpKind::softmax_grad : OpKind::softmax) : op.kind;
    const std::vector<ValueId>& operands = chain ? chain->operands : op.operands;
    const std::vector<ValueId> op_results = chain ? std::vector<ValueId>{chain->result} : op.results;
    const Kernel kernel = compiling(index, [&] {
      if (chain)
        return chain->gradient ? masked_softmax_grad_kernel(float_dtype) : masked_softmax_kernel(float_dtype);
      return forward_kernel(op.kind, backend::kernel_dtype(f, op, float_dtype));
    });
    add_call(op, index, kind, operands, op_results, binding);
    impl_->kernels.push_back(kernel);
    impl_->step_names.push_back(chain ? fmt::format("{}; {}; {}", op_text(chain->ops[0]), op_text(chain->ops[1]),
                                                    op_text(index))
                                      : op_text(index));
  }

  place(plan, [&](int64_t bytes) {
    // The allocator's blocks are at least 256-byte aligned (cudaMalloc), so
    // the plan's 64-byte-aligned offsets stay 64-byte aligned on the device.
    impl_->arena = device.allocate(static_cast<size_t>(std::max<int64_t>(bytes, 1)), stage);
    return static_cast<std::byte*>(impl_->arena);
  });
}

Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

void Executor::record_profile() {
  Impl& m = *impl_;
  CheckScope scope(m.stage_name, "reading the profile's events");
  PF_CUDA_CHECK(cudaEventSynchronize(m.events.back()));
  for (size_t k = 0; k < num_calls(); ++k) {
    float ms = 0;
    PF_CUDA_CHECK(cudaEventElapsedTime(&ms, m.events[k], m.events[k + 1]));
    record(k, ms * 1e-3);
  }
}

void Executor::run() {
  Impl& m = *impl_;
  check_bound();

  m.device->make_current();
  LaunchContext ctx = m.device->context(m.stage);
  const bool profile = profiling();
  if (profile && m.events.size() != num_calls() + 1) {
    CheckScope scope(m.stage_name, "creating the profile's events");
    m.events.resize(num_calls() + 1, nullptr);
    for (cudaEvent_t& e : m.events)
      if (!e) PF_CUDA_CHECK(cudaEventCreate(&e));
  }
  if (profile) PF_CUDA_CHECK(cudaEventRecord(m.events[0], ctx.stream));
  for (size_t k = 0; k < num_calls(); ++k) {
    CheckScope scope(m.stage_name, op_text(call_op(k)));
    ctx.step = m.first_step + static_cast<int>(k);
    running(k, [&] {
      m.kernels[k](call_args(k), ctx);
      if (profile) PF_CUDA_CHECK(cudaEventRecord(m.events[k + 1], ctx.stream));
    });
  }
  CheckScope scope(m.stage_name, "copying results");
  for_each_copy([&](void* dst, const void* src, size_t bytes) {
    PF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, ctx.stream));
  });
  if (profile) record_profile();
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

}  // namespace pf::cuda
