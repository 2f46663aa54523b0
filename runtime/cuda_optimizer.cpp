// SGD and AdamW on a CUDA stage's device.
#include "runtime/cuda_optimizer.h"

#include <fmt/format.h>

#include "backends/cuda/check.h"
#include "backends/cuda/optimizers.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "runtime/train_options.h"

namespace pf {

namespace {

// The state buffers Sgd and AdamW keep per parameter (runtime/optimizer.cpp).
std::vector<std::string> state_slots(const TrainingOptions& options) {
  if (options.optimizer == "sgd")
    return options.momentum > 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{};
  if (options.optimizer == "adamw") return {"exp_avg", "exp_avg_sq"};
  throw Error(fmt::format("unknown optimizer '{}'; use sgd or adamw", options.optimizer));
}

constexpr int64_t kAlignElements = 64;

}  // namespace

CudaOptimizer::CudaOptimizer(std::vector<Param> params, const TrainingOptions& options,
                             std::shared_ptr<cuda::CudaDevice> device, int lane, std::string name,
                             std::function<void()> after_step)
    : Optimizer(std::move(params), state_slots(options)),
      kind_(options.optimizer),
      momentum_(options.momentum),
      weight_decay_(options.weight_decay),
      device_(std::move(device)),
      lane_(lane),
      name_(std::move(name)),
      after_step_(std::move(after_step)) {
  if (!(momentum_ >= 0)) throw Error(fmt::format("sgd: momentum must be >= 0, got {}", momentum_));
  if (!(weight_decay_ >= 0)) throw Error(fmt::format("{}: weight_decay must be >= 0, got {}", kind_, weight_decay_));
  adam_.weight_decay = weight_decay_;
  slots_per_param_ = state_slots(options).size();
  std::vector<int64_t> offsets;
  int64_t total = 0;
  for (const Param& p : params_)
    for (size_t k = 0; k < slots_per_param_; ++k) {
      offsets.push_back(total);
      total += align_up(p.numel(), kAlignElements);
    }
  const auto bytes = static_cast<size_t>(std::max<int64_t>(total, 1)) * sizeof(float);
  block_ = device_->allocate(bytes, lane_);
  device_->make_current();
  cuda::CheckScope scope(name_, "clearing the optimizer state");
  PF_CUDA_CHECK(cudaMemsetAsync(block_, 0, bytes, stream()));  // fresh state is 0, as on the host
  for (int64_t off : offsets) device_state_.push_back(static_cast<float*>(block_) + off);
}

CudaOptimizer::~CudaOptimizer() { device_->deallocate(block_); }

cudaStream_t CudaOptimizer::stream() const { return device_->stream(lane_); }

void CudaOptimizer::step(double lr) {
  device_->make_current();
  cuda::CheckScope scope(name_, "the optimizer step");
  const int64_t t = steps_ + 1;
  for (size_t p = 0; p < params_.size(); ++p) {
    const Param& param = params_[p];
    const double wd = param.decay ? weight_decay_ : 0.0;
    float** state = device_state_.data() + p * slots_per_param_;
    if (kind_ == "sgd")
      cuda::sgd_step(param.value, param.grad, slots_per_param_ ? state[0] : nullptr, param.numel(), lr, momentum_, wd,
                     /*nesterov=*/false, stream());
    else
      cuda::adamw_step(param.value, param.grad, state[0], state[1], param.numel(), lr, adam_.beta1, adam_.beta2,
                       adam_.eps, wd, t, stream());
  }
  ++steps_;
  if (after_step_) after_step_();
}

void CudaOptimizer::download_state() {
  device_->make_current();
  cuda::CheckScope scope(name_, "copying the optimizer state to the host");
  for (size_t p = 0; p < params_.size(); ++p)
    for (size_t k = 0; k < slots_per_param_; ++k)
      PF_CUDA_CHECK(cudaMemcpyAsync(slot(p, k), device_state_[p * slots_per_param_ + k],
                                    static_cast<size_t>(params_[p].numel()) * sizeof(float), cudaMemcpyDeviceToHost,
                                    stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

void CudaOptimizer::upload_state() {
  device_->make_current();
  cuda::CheckScope scope(name_, "copying the optimizer state to the device");
  for (size_t p = 0; p < params_.size(); ++p)
    for (size_t k = 0; k < slots_per_param_; ++k)
      PF_CUDA_CHECK(cudaMemcpyAsync(device_state_[p * slots_per_param_ + k], slot(p, k),
                                    static_cast<size_t>(params_[p].numel()) * sizeof(float), cudaMemcpyHostToDevice,
                                    stream()));
  PF_CUDA_CHECK(cudaStreamSynchronize(stream()));
}

}  // namespace pf
