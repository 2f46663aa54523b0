// A differentiated program (a whole model, or one pipeline stage) compiled
// for the CPU: forward and backward executors, the stash kept per micro-batch
// in flight, and gradient accumulation into the parameters.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "backends/cpu/executor.h"
#include "ir/gradients.h"
#include "runtime/parameters.h"
#include "runtime/stage_runner.h"

namespace pf {

template <class Executor>
class StageExecutors;

/// The CPU's StageRunner: every call has done its work when it returns, and
/// its memory is the host's, so a neighbour on the CPU reads its buffers in
/// place and the hand-off methods have nothing to do.
class StageProgram final : public StageRunner {
 public:
  /// `module` holds the graph and its backward functions, laid out as
  /// `gradients` and `split` say; its parameters are added to `params`
  /// (their buffers are bound, so `params` must outlive the program).
  /// `slots` micro-batches may be in flight at once (forward done, backward
  /// not yet). With `caller_results`, every forward writes the graph's own
  /// results (what a stage sends) into buffers the caller passes to
  /// forward(). Given a `split`, the backward runs as its two parts: the
  /// input gradients in backward_input(), the parameters' in
  /// backward_weight(), and a slot stays in flight until the latter. A
  /// stage split over a tensor-parallel group sums its tp_reduce ops over
  /// `tensor_parallel`, which must outlive the program. With
  /// `bf16_products` (a plan compiled with --dtype bf16), every product
  /// rounds its operands to bf16 and sums in f32 (cpu::Bf16Products). A
  /// replica's part of a stage whose experts the replicas share out meets
  /// the others in its ep_ ops over `expert_parallel`, which must outlive
  /// the program too.
  StageProgram(Module module, const DimBinding& binding, GradientProgram gradients,
               std::optional<BackwardSplit> split, ParameterSet& params, int slots, bool caller_results = false,
               backend::TensorParallelGroup* tensor_parallel = nullptr, bool bf16_products = false,
               backend::TensorParallelGroup* expert_parallel = nullptr);
  ~StageProgram() override;

  const Function& graph() const override;
  /// The graph and its backward function, as compiled.
  const Module& module() const { return module_; }
  const GradientProgram& gradients() const { return gradients_; }
  int slots() const override { return static_cast<int>(stash_.size()); }

  /// Runs the forward of one micro-batch on `inputs` (the graph's arguments,
  /// in order) and keeps its stash in `slot`; with caller results, result i
  /// is written into `results[i]`.
  void forward(int slot, std::span<const void* const> inputs, std::span<void* const> results) override;
  /// Result `i` of the graph (the loss, or an activation to send) after the
  /// last forward; valid until the next forward.
  const void* result(int i) const;
  TensorType result_type(int i) const override;

  /// Runs the backward of the micro-batch in `slot` with `seeds` (the
  /// gradients of the differentiated results) and adds the parameters'
  /// gradients into the parameter set. With `overwrite_grads` (the first or
  /// only micro-batch of a step) the kernels write the gradients straight
  /// into the parameter set instead, replacing what was there: no zeroing
  /// and no extra pass over every gradient.
  void backward(int slot, std::span<const void* const> seeds, bool overwrite_grads) override;
  /// The gradient of wrt input `i` after the last backward (or backward_input).
  const void* input_grad(int i) const;
  void copy_input_grad(int i, void* dst, int64_t bytes) override;
  void finish() override {}

  /// With `split`: the input gradients of the micro-batch in `slot` (read
  /// them with input_grad), keeping in the slot what backward_weight needs.
  /// The seeds must stay unchanged until that slot's backward_weight.
  void backward_input(int slot, std::span<const void* const> seeds) override;
  /// With `split`: the parameters' gradients of the micro-batch in `slot`,
  /// added into the parameter set (or written, with `overwrite_grads`).
  void backward_weight(int slot, bool overwrite_grads) override;
  bool split() const override;
  /// With `split`: the two programs' functions and what passes between them.
  const BackwardSplit& backward_split() const;

  /// Bytes of the forward and backward arenas and of one stash slot.
  int64_t arena_bytes() const override;
  int64_t stash_bytes() const override;

  /// Per-op-kind kernel time of the forward and backward executors (see
  /// cpu::ExecutorOptions::profile), summed; off until set_profile(true).
  void set_profile(bool on) override;
  backend::OpSeconds op_seconds() const;
  /// The same per op: the forward's ops, then the backward's (or its parts'), in run order.
  std::vector<backend::OpTime> op_times() const override;
  void reset_profile() override;

  // Hand-offs: host memory, read in place.
  StagePlace place() const override { return {}; }
  DType float_dtype() const override { return DType::f32; }
  void* allocate(int64_t bytes) override;
  void* allocate_host(int64_t bytes) override { return allocate(bytes); }
  const void* stage_input(int, const void* host, const TensorType&) override { return host; }
  const void* stashed_on_host(int slot, std::string_view name) const override;
  const void* scalar(float value) override;
  void read_floats(const void* src, float* dst, int64_t n) override;
  void mark_produced(HandOff, int) override {}
  /// A CPU stage receives only from a stage on a GPU: that stage copies.
  void receive(StageRunner& sender, HandOff kind, int mb, std::span<const HandOffCopy> copies) override;
  void copy_to_host(HandOff kind, int mb, std::span<const HandOffCopy> copies) override;

  // Parameters: the ParameterSet's own arrays.
  std::unique_ptr<Optimizer> make_optimizer(const TrainingOptions& options, const OptimizerShare& share) override;
  void upload(const Optimizer*) override {}
  void download(Optimizer*) override {}
  void read_grad(std::string_view name, float* host) override;
  void write_grad(std::string_view name, const float* host) override;
  double grad_sq_norm(std::span<const Param> params) override;
  void scale_grads(std::span<const Param> params, double factor) override;

 private:
  ParameterSet* params_;
  Module module_;
  GradientProgram gradients_;
  std::unique_ptr<StageExecutors<cpu::Executor>> programs_;
  std::vector<std::vector<std::byte>> stash_;       // per slot: the stash, then the deferred values
  std::vector<ParameterSet::Entry*> grad_targets_;  // per backward parameter result
  /// Per backward executor: its parameter results bound to grad_targets_'
  /// buffers, and whether its runs add into them.
  struct GradMode {
    bool bound = false;
    bool accumulating = false;
  };
  std::map<const cpu::Executor*, GradMode> grad_modes_;
  std::deque<std::vector<std::byte>> buffers_;      // allocate()'s
  std::deque<float> scalars_;                       // scalar()'s

  std::byte* slot(int index) { return stash_.at(static_cast<size_t>(index)).data(); }
  /// Runs `e`, whose results from `first_param` on are the parameters'
  /// gradients, and accumulates (or writes) them into the parameter set.
  void run_into_grads(cpu::Executor& e, int first_param, bool overwrite_grads);
};

}  // namespace pf
