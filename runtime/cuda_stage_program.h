// A differentiated stage program compiled for one CUDA device: the StageRunner the pipeline drives on a GPU.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/device.h"
#include "backends/cuda/executor.h"
#include "ir/gradients.h"
#include "runtime/cuda_parameters.h"
#include "runtime/parameters.h"
#include "runtime/stage_runner.h"

namespace pf {

template <class Executor>
class StageExecutors;

/// How a CudaStageProgram is built.
struct CudaStageOptions {
  int stage = 0;                   ///< its index in the pipeline, for messages
  int microbatches = 1;            ///< per step: one hand-off event each
  int slots = 1;                   ///< stash slots (micro-batches in flight)
  std::optional<BackwardSplit> split;  ///< the backward's two parts (zero-bubble schedules), or whole
  DType float_dtype = DType::f32;  ///< f32, or bf16 with f32 master weights
};

/// StageProgram's twin on one lane (stream) of a CudaDevice.
///
/// Forward, backward and their split parts are cuda::Executors built once;
/// parameters and gradients live on the device (CudaParameters), stash
/// slots and hand-off buffers come from the device's caching allocator at
/// construction, so that a step allocates nothing. Every call queues work on
/// the stage's stream and returns; hand-offs are ordered by one event per
/// (kind, micro-batch), and finish() waits for the stream and turns bad data
/// found by a kernel into pf::Error naming the op. Every CUDA call is
/// checked, naming "stage S on cuda:D" and the op or what it was doing.
///
/// In bf16, every float tensor is stored as bf16 (the executors' float
/// dtype): the kernels read a bf16 copy of the weights, the gradients they
/// write are summed into f32 gradients, and the optimizer steps the f32
/// master weights (CudaOptimizer), after which the copy is rounded again.
class CudaStageProgram final : public StageRunner {
 public:
  /// As StageProgram's constructor (caller results always on): the module's
  /// parameters are added to `params`, which must outlive the program.
  CudaStageProgram(Module module, const DimBinding& binding, GradientProgram gradients, ParameterSet& params,
                   std::shared_ptr<cuda::CudaDevice> device, int lane, const CudaStageOptions& options);
  ~CudaStageProgram() override;

  const Function& graph() const override { return module_.graph(); }
  int slots() const override { return static_cast<int>(slots_.size()); }
  bool split() const override;
  void forward(int slot, std::span<const void* const> inputs, std::span<void* const> results) override;
  TensorType result_type(int i) const override;
  void backward(int slot, std::span<const void* const> seeds, bool overwrite_grads) override;
  void backward_input(int slot, std::span<const void* const> seeds) override;
  void backward_weight(int slot, bool overwrite_grads) override;
  void copy_input_grad(int i, void* dst, int64_t bytes) override;
  void finish() override;

  int64_t arena_bytes() const override;
  int64_t stash_bytes() const override;
  void set_profile(bool on) override;
  std::vector<backend::OpTime> op_times() const override;
  void reset_profile() override;

  StagePlace place() const override { return {device_->ordinal()}; }
  DType float_dtype() const override { return options_.float_dtype; }
  void* allocate(int64_t bytes) override;
  void* allocate_host(int64_t bytes) override;
  const void* stage_input(int arg, const void* host, const TensorType& type) override;
  const void* scalar(float value) override;
  void read_floats(const void* src, float* dst, int64_t n) override;
  void mark_produced(HandOff kind, int mb) override;
  void* hand_off_event(HandOff kind, int mb) override { return produced(kind, mb).get(); }
  void receive(StageRunner& sender, HandOff kind, int mb, std::span<const HandOffCopy> copies) override;
  void copy_to_host(HandOff kind, int mb, std::span<const HandOffCopy> copies) override;

  std::unique_ptr<Optimizer> make_optimizer(const TrainingOptions& options, const OptimizerShare& share) override;
  void upload(const Optimizer* optimizer) override;
  void download(Optimizer* optimizer) override;
  void read_grad(std::string_view name, float* host) override { params_->read_grad(name, host); }
  void write_grad(std::string_view name, const float* host) override { params_->write_grad(name, host); }
  double grad_sq_norm(std::span<const Param> params) override { return params_->grad_sq_norm(params); }
  void scale_grads(std::span<const Param>, double factor) override { params_->scale_grads(factor); }

 private:
  /// A batch input's device copy (and, for floats in bf16, the f32 staging it is rounded from).
  struct InputBuffer {
    void* device = nullptr;
    void* staging = nullptr;
  };

  cudaStream_t stream() const { return device_->stream(lane_); }
  /// Runs `e`, whose results from `first_param` on are the parameters' gradients, and folds them in.
  void run_into_grads(cuda::Executor& e, int first_param, bool overwrite_grads);
  cuda::Event& produced(HandOff kind, int mb);

  // The device first: everything below returns memory to it when destroyed.
  std::shared_ptr<cuda::CudaDevice> device_;
  int lane_;
  CudaStageOptions options_;
  std::string name_;  // "stage S on cuda:D"
  Module module_;
  GradientProgram gradients_;
  std::unique_ptr<CudaParameters> params_;
  std::vector<void*> blocks_;                 // allocate()'s, stash slots included
  std::vector<cuda::PinnedBuffer> pinned_;    // allocate_host()'s
  std::unique_ptr<StageExecutors<cuda::Executor>> programs_;
  std::vector<std::byte*> slots_;                     // per slot: the stash, then the deferred values
  std::optional<bool> grads_overwrite_;               // how the gradient results are bound now
  std::array<std::vector<cuda::Event>, 2> produced_;  // [HandOff][mb]
  std::map<int, InputBuffer> inputs_;                 // by graph argument
};

/// The GPUs of one pipeline: a CudaDevice per ordinal in use, with a lane
/// (stream) for every stage placed on it (stages sharing a GPU are separate
/// virtual devices), TF32 as asked, and peer access between the GPUs of
/// neighbouring stages where the pair supports it.
class CudaStages {
 public:
  /// `gpu_of_stage[s]`: stage s's ordinal, or -1 for a CPU stage.
  CudaStages(std::vector<int> gpu_of_stage, bool allow_tf32);
  /// Stage `stage`'s program on its GPU (options.stage is set here).
  std::unique_ptr<StageRunner> make(int stage, Module module, const DimBinding& binding, GradientProgram gradients,
                                    ParameterSet& params, CudaStageOptions options) const;

 private:
  std::vector<int> gpu_of_stage_;
  std::vector<int> lane_of_stage_;
  std::map<int, std::shared_ptr<cuda::CudaDevice>> devices_;
};

/// How many CUDA devices this process sees (0 without a GPU or driver).
int visible_cuda_devices();

}  // namespace pf
