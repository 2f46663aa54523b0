// A differentiated program (a whole model, or one pipeline stage) compiled
// for the CPU: forward and backward executors, the stash kept per micro-batch
// in flight, and gradient accumulation into the parameters.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "backends/cpu/executor.h"
#include "passes/autodiff.h"
#include "passes/split_backward.h"
#include "runtime/parameters.h"

namespace pf {

class StageProgram {
 public:
  /// `module` holds the graph and its backward function, as `differentiate`
  /// left them; its parameters are added to `params` (their buffers are
  /// bound, so `params` must outlive the program). `slots` micro-batches may
  /// be in flight at once (forward done, backward not yet).
  /// With `caller_results`, every forward writes the graph's own results
  /// (what a stage sends) into buffers the caller passes to forward(). With
  /// `split`, the backward runs as two programs (split_backward): the input
  /// gradients in backward_input(), the parameters' in backward_weight(),
  /// and a slot stays in flight until the latter.
  StageProgram(Module module, const DimBinding& binding, GradientProgram gradients, ParameterSet& params, int slots,
               bool caller_results = false, bool split = false);
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
  /// The gradient of wrt input `i` after the last backward (or backward_input).
  const void* input_grad(int i) const;

  /// With `split`: the input gradients of the micro-batch in `slot` (read
  /// them with input_grad), keeping in the slot what backward_weight needs.
  /// The seeds must stay unchanged until that slot's backward_weight.
  void backward_input(int slot, std::span<const void* const> seeds);
  /// With `split`: the parameters' gradients of the micro-batch in `slot`,
  /// added into the parameter set (or written, with `overwrite_grads`).
  void backward_weight(int slot, bool overwrite_grads = false);
  bool split() const { return split_.has_value(); }
  /// With `split`: the two programs' functions and what passes between them.
  const BackwardSplit& backward_split() const { return *split_; }

  /// Bytes of the forward and backward arenas and of one stash slot.
  int64_t arena_bytes() const;
  int64_t stash_bytes() const { return stash_bytes_ + deferred_bytes_; }

  /// Per-op-kind kernel time of the forward and backward executors (see
  /// cpu::ExecutorOptions::profile), summed; off until set_profile(true).
  void set_profile(bool on);
  cpu::OpSeconds op_seconds() const;
  void reset_profile();

 private:
  Module module_;
  GradientProgram gradients_;
  std::unique_ptr<cpu::Executor> forward_;
  std::unique_ptr<cpu::Executor> backward_;  // without split
  // With split: the input part (null when the stage sends no gradient back)
  // and the weight part; the deferred values live in the slot after the stash.
  std::optional<BackwardSplit> split_;
  std::unique_ptr<cpu::Executor> input_part_;
  std::unique_ptr<cpu::Executor> weight_part_;
  std::vector<int64_t> deferred_offsets_;  // per deferred value, within a slot, after the stash
  int64_t deferred_bytes_ = 0;
  std::vector<std::vector<const void*>> seeds_;  // per slot: the seeds backward_input was given
  const cpu::Executor* last_input_grads_ = nullptr;
  std::vector<std::vector<std::byte>> stash_;    // per slot, all stashed values back to back
  std::vector<int64_t> stash_offsets_;           // per stashed value, within a slot
  int64_t stash_bytes_ = 0;
  std::vector<ParameterSet::Entry*> grad_targets_;  // per backward parameter result
  bool grads_bound_ = false;                        // parameter results bound to grad_targets_' buffers

  /// The executors this program built: forward, then backward or its parts.
  std::vector<cpu::Executor*> executors() const;
  /// Binds the seeds and the slot's stash as the first arguments of `e`;
  /// returns the next argument index.
  int bind_backward_args(cpu::Executor& e, int slot, std::span<const void* const> seeds);
  /// Runs `e`, whose results from `first_param` on are the parameters'
  /// gradients, and accumulates (or writes) them into the parameter set.
  void run_into_grads(cpu::Executor& e, int first_param, bool overwrite_grads);
};

}  // namespace pf
