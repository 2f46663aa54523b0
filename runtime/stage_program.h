// A differentiated program (a whole model, or one pipeline stage) compiled
// for the CPU: forward and backward executors, the stash kept per micro-batch
// in flight, and gradient accumulation into the parameters.
#pragma once

#include <memory>
#include <span>
#include <vector>

#include "backends/cpu/executor.h"
#include "passes/autodiff.h"
#include "runtime/parameters.h"

namespace pf {

class StageProgram {
 public:
  /// `module` holds the graph and its backward function, as `differentiate`
  /// left them; its parameters are added to `params` (their buffers are
  /// bound, so `params` must outlive the program). `slots` micro-batches may
  /// be in flight at once (forward done, backward not yet).
  /// With `caller_results`, every forward writes the graph's own results
  /// (what a stage sends) into buffers the caller passes to forward().
  StageProgram(Module module, const DimBinding& binding, GradientProgram gradients, ParameterSet& params, int slots,
               bool caller_results = false);
  ~StageProgram();
  StageProgram(const StageProgram&) = delete;
  StageProgram& operator=(const StageProgram&) = delete;

  const Function& graph() const;
  /// The graph and its backward function, as compiled.
  const Module& module() const { return module_; }
  const GradientProgram& gradients() const { return gradients_; }
  int slots() const { return static_cast<int>(stash_.size()); }

  /// Runs the forward of one micro-batch on `inputs` (the graph's arguments,
  /// in order) and keeps its stash in `slot`; with caller results, result i
  /// is written into `results[i]`.
  void forward(int slot, std::span<const void* const> inputs, std::span<void* const> results = {});
  /// Result `i` of the graph (the loss, or an activation to send) after the
  /// last forward; valid until the next forward.
  const void* result(int i) const;
  const TensorType& result_type(int i) const;

  /// Runs the backward of the micro-batch in `slot` with `seeds` (the
  /// gradients of the differentiated results) and adds the parameters'
  /// gradients into the parameter set. With `overwrite_grads` (the first or
  /// only micro-batch of a step) the kernels write the gradients straight
  /// into the parameter set instead, replacing what was there: no zeroing
  /// and no extra pass over every gradient.
  void backward(int slot, std::span<const void* const> seeds, bool overwrite_grads = false);
  /// The gradient of wrt input `i` after the last backward.
  const void* input_grad(int i) const;

  /// Bytes of the forward and backward arenas and of one stash slot.
  int64_t arena_bytes() const;
  int64_t stash_bytes() const { return stash_bytes_; }

  /// Per-op-kind kernel time of the forward and backward executors (see
  /// cpu::ExecutorOptions::profile), summed; off until set_profile(true).
  void set_profile(bool on);
  cpu::OpSeconds op_seconds() const;
  void reset_profile();

 private:
  Module module_;
  GradientProgram gradients_;
  std::unique_ptr<cpu::Executor> forward_;
  std::unique_ptr<cpu::Executor> backward_;
  std::vector<std::vector<std::byte>> stash_;    // per slot, all stashed values back to back
  std::vector<int64_t> stash_offsets_;           // per stashed value, within a slot
  int64_t stash_bytes_ = 0;
  std::vector<ParameterSet::Entry*> grad_targets_;  // per backward parameter result
  bool grads_bound_ = false;                        // backward results bound to grad_targets_' buffers
};

}  // namespace pf
