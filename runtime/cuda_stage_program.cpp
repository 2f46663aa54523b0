// A differentiated stage program compiled for one CUDA device: its programs, stash and parameters.
#include "runtime/cuda_stage_program.h"

#include <fmt/format.h>

#include <algorithm>

#include "backends/cuda/check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/transport.h"
#include "ir/diagnostic.h"
#include "runtime/cuda_optimizer.h"
#include "runtime/optimizer_shard.h"
#include "runtime/stage_executors.h"

namespace pf {

namespace {

// Stash values start where cuBLAS likes its operands.
constexpr int64_t kSlotAlignment = 256;

}  // namespace

CudaStageProgram::CudaStageProgram(Module module, const DimBinding& binding, GradientProgram gradients,
                                   ParameterSet& params, std::shared_ptr<cuda::CudaDevice> device, int lane,
                                   const CudaStageOptions& options)
    : device_(std::move(device)),
      lane_(lane),
      options_(options),
      name_(fmt::format("stage {} on cuda:{}", options.stage, device_->ordinal())),
      module_(std::move(module)),
      gradients_(std::move(gradients)) {
  const Function& graph = module_.graph();
  for (const Op& op : graph.ops)
    if (op.kind == OpKind::param)
      params.add_declared(graph, op);
  params_ = std::make_unique<CudaParameters>(params, device_, lane_, options.float_dtype, name_);
  // Executors sharing the stream number their ops apart, so that bad data a
  // kernel reports names the right op (see finish()). The forward's own
  // results go to the pipeline's buffers, the parameters' gradients where
  // CudaParameters says: both outside the arenas.
  int first_step = 0;
  programs_ = std::make_unique<StageExecutors<cuda::Executor>>(
      module_, gradients_, options.split, options.slots, /*caller_results=*/true, /*caller_grads=*/true,
      kSlotAlignment, [&](const Function& f, std::vector<int> caller_outputs) {
        cuda::ExecutorOptions o;
        o.caller_outputs = std::move(caller_outputs);
        o.name = name_;
        o.first_step = first_step;
        first_step += static_cast<int>(f.ops.size());
        return std::make_unique<cuda::Executor>(f, binding, *device_, lane_, options.float_dtype, o);
      });
  for (cuda::Executor* e : programs_->all())
    for (const std::string& name : e->param_names()) e->bind_param(name, params_->kernel_value(name));

  // Slots are allocated once; the caching allocator serves them from its pool.
  for (int k = 0; k < programs_->slots(); ++k)
    slots_.push_back(static_cast<std::byte*>(allocate(programs_->slot_bytes())));
  for (auto& events : produced_)
    for (int mb = 0; mb < options.microbatches; ++mb) events.emplace_back(device_->ordinal());
}

CudaStageProgram::~CudaStageProgram() {
  for (void* b : blocks_) device_->deallocate(b);
}

bool CudaStageProgram::split() const { return programs_->split(); }
TensorType CudaStageProgram::result_type(int i) const { return programs_->forward().output_type(i); }
void CudaStageProgram::set_profile(bool on) { programs_->set_profile(on); }
std::vector<backend::OpTime> CudaStageProgram::op_times() const { return programs_->op_times(); }
void CudaStageProgram::reset_profile() { programs_->reset_profile(); }

int64_t CudaStageProgram::stash_bytes() const { return programs_->slot_bytes(); }

void CudaStageProgram::forward(int slot, std::span<const void* const> inputs, std::span<void* const> results) {
  programs_->run_forward(slots_.at(static_cast<size_t>(slot)), inputs, results);
}

void CudaStageProgram::run_into_grads(cuda::Executor& e, int first_param, bool overwrite_grads) {
  // Rebound only when the mode changes, not per micro-batch.
  if (grads_overwrite_ != overwrite_grads) {
    for (size_t p = 0; p < gradients_.params.size(); ++p)
      e.bind_output(first_param + static_cast<int>(p), params_->grad_target(gradients_.params[p], overwrite_grads));
    grads_overwrite_ = overwrite_grads;
  }
  e.run();
  params_->accumulate(overwrite_grads);
}

void CudaStageProgram::backward(int slot, std::span<const void* const> seeds, bool overwrite_grads) {
  programs_->run_backward(slots_.at(static_cast<size_t>(slot)), seeds, [&](cuda::Executor& e, int first_param) {
    run_into_grads(e, first_param, overwrite_grads);
  });
}

void CudaStageProgram::backward_input(int slot, std::span<const void* const> seeds) {
  programs_->run_backward_input(slot, slots_.at(static_cast<size_t>(slot)), seeds);
}

void CudaStageProgram::backward_weight(int slot, bool overwrite_grads) {
  programs_->run_backward_weight(slot, slots_.at(static_cast<size_t>(slot)), [&](cuda::Executor& e, int first_param) {
    run_into_grads(e, first_param, overwrite_grads);
  });
}

void CudaStageProgram::copy_input_grad(int i, void* dst, int64_t bytes) {
  const void* src = programs_->last_input_grads().output(i);
  device_->make_current();
  cuda::CheckScope scope(name_, "copying an input gradient to its hand-off buffer");
  PF_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice, stream()));
}

void CudaStageProgram::finish() {
  device_->make_current();
  {
    cuda::CheckScope scope(name_, "waiting for the stage's queued work");
    PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
  }
  const cuda::DeviceErrorSlot e = device_->take_error(lane_);
  if (e.code == cuda::kNoDeviceError) return;
  std::string op;
  for (const cuda::Executor* x : programs_->all())
    if (op.empty()) op = x->op_at_step(e.step);
  throw Error(fmt::format("{}{} (on cuda:{})", op.empty() ? "" : "running " + op + ": ", cuda::describe(e),
                          device_->ordinal()));
}

int64_t CudaStageProgram::arena_bytes() const {
  int64_t total = 0;
  for (const cuda::Executor* e : programs_->all()) total += e->arena_bytes();
  return total;
}

std::unique_ptr<Optimizer> CudaStageProgram::make_optimizer(const TrainingOptions& options,
                                                            const OptimizerShare& share) {
  std::function<void()> after_step;
  if (options_.float_dtype == DType::bf16) after_step = [p = params_.get()] { p->round_values(); };
  return std::make_unique<CudaOptimizer>(share_params(params_->device_params(), share), options, device_,
                                         lane_, name_, std::move(after_step));
}

namespace {

CudaOptimizer* as_cuda(const Optimizer* optimizer) {
  auto* cuda_optimizer = dynamic_cast<const CudaOptimizer*>(optimizer);
  if (optimizer && !cuda_optimizer)
    throw Error(fmt::format("a CUDA stage's optimizer must be the one it made, not a host {} optimizer",
                            optimizer->kind()));
  return const_cast<CudaOptimizer*>(cuda_optimizer);
}

}  // namespace

void CudaStageProgram::upload(const Optimizer* optimizer) {
  params_->upload_values();
  if (CudaOptimizer* o = as_cuda(optimizer)) o->upload_state();
}

void CudaStageProgram::download(Optimizer* optimizer) {
  params_->download_values();
  params_->download_grads();
  if (CudaOptimizer* o = as_cuda(optimizer)) o->download_state();
}

// ---------------------------------------------------------------------------
// CudaStages

CudaStages::CudaStages(std::vector<int> gpu_of_stage, bool allow_tf32) : gpu_of_stage_(std::move(gpu_of_stage)) {
  std::map<int, int> lanes;  // per ordinal: stages placed on it so far
  for (int gpu : gpu_of_stage_) lane_of_stage_.push_back(gpu < 0 ? -1 : lanes[gpu]++);
  for (const auto& [gpu, count] : lanes) {
    auto device = std::make_shared<cuda::CudaDevice>(gpu, count);
    device->set_allow_tf32(allow_tf32);
    devices_.emplace(gpu, std::move(device));
  }
  for (size_t s = 0; s + 1 < gpu_of_stage_.size(); ++s) {
    const int a = gpu_of_stage_[s], b = gpu_of_stage_[s + 1];
    if (a < 0 || b < 0 || a == b) continue;
    // Without it the copies still work, staged through host memory by the driver.
    cuda::enable_peer_access(a, b);
    cuda::enable_peer_access(b, a);
  }
}

std::unique_ptr<StageRunner> CudaStages::make(int stage, Module module, const DimBinding& binding,
                                              GradientProgram gradients, ParameterSet& params,
                                              CudaStageOptions options) const {
  const size_t s = static_cast<size_t>(stage);
  options.stage = stage;
  return std::make_unique<CudaStageProgram>(std::move(module), binding, std::move(gradients), params,
                                            devices_.at(gpu_of_stage_.at(s)), lane_of_stage_.at(s), options);
}

int visible_cuda_devices() { return cuda::device_count(); }

}  // namespace pf
