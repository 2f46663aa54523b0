// SGD and AdamW stepping a CUDA stage's f32 master weights on its device, with the host Optimizer's names and checkpoint layout.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cuda/device.h"
#include "runtime/optimizer.h"

namespace pf {

struct TrainingOptions;

/// The optimizer of a CUDA stage: Sgd's or AdamW's update (the kernels of
/// backends/cuda/optimizers.h, same formulas and operation order) on device
/// arrays, with the kind, slot names and step count of the host optimizer it
/// replaces, so that checkpoints are the same whichever device trained.
///
/// The state lives on the device; the buffers Optimizer::state() shows are
/// its host mirror: download_state() fills them (before a checkpoint is
/// written), upload_state() sends them back (after one is loaded).
class CudaOptimizer final : public Optimizer {
 public:
  /// `params` view device arrays (CudaParameters::device_params). `options`
  /// chooses sgd or adamw and their hyperparameters, as Pipeline::start does
  /// for a CPU stage. `name` ("stage S on cuda:D") is what a failing CUDA
  /// call names. `after_step` runs after every step (a bf16 stage rounds its
  /// weights' bf16 copy).
  CudaOptimizer(std::vector<Param> params, const TrainingOptions& options, std::shared_ptr<cuda::CudaDevice> device,
                int lane, std::string name, std::function<void()> after_step);
  ~CudaOptimizer() override;

  std::string_view kind() const override { return kind_; }
  void step(double lr) override;

  void download_state();
  void upload_state();

 private:
  cudaStream_t stream() const;

  std::string kind_;
  double momentum_ = 0;
  double weight_decay_ = 0;
  AdamWOptions adam_;
  std::shared_ptr<cuda::CudaDevice> device_;
  int lane_;
  std::string name_;  // "stage S on cuda:D", for failing CUDA calls
  std::function<void()> after_step_;
  void* block_ = nullptr;                  // every state buffer, back to back
  std::vector<float*> device_state_;       // [param * slots + slot]
  size_t slots_per_param_ = 0;
};

}  // namespace pf
