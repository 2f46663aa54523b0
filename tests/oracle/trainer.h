// The tests' oracle: a whole model trained on one CPU device without a plan,
// the single-device baseline that pipelined training must match number for
// number. `pipeforge run MODEL.pf` trains through a one-stage plan instead.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>

#include "ir/module.h"
#include "runtime/lr_schedule.h"
#include "runtime/optimizer.h"
#include "runtime/parameters.h"
#include "runtime/stage_program.h"
#include "runtime/train_options.h"

namespace pf {

struct StepResult {
  double loss = 0;
  double grad_norm = 0;
  double lr = 0;
  std::optional<double> accuracy;  // for classifiers: argmax(logits) == target
};

/// Compiles a model (inline, shapes, autodiff) and trains it step by step:
/// the whole model as one program, without a plan, and with its own
/// clipping and update. Pipelines match it number for number; it lives with
/// the tests, apart from the runtime, which never runs a pass.
class Trainer {
 public:
  Trainer(Module model, const DimBinding& binding, const TrainingOptions& options);

  const Function& graph() const { return program_->graph(); }
  ParameterSet& params() { return params_; }
  /// Builds the optimizer over the current parameters (after loading or
  /// initialising them).
  void start();

  /// Forward and backward on one batch (the graph's arguments in order),
  /// leaving the batch's gradients in params().
  StepResult compute_gradients(std::span<const void* const> inputs);
  /// Clips and applies the gradients, then clears them.
  void apply(StepResult& result);

  /// The compiled program (per-op timing: set_profile, op_seconds).
  StageProgram& program() { return *program_; }

 private:
  TrainingOptions options_;
  ParameterSet params_;
  std::unique_ptr<StageProgram> program_;
  std::unique_ptr<Optimizer> optimizer_;
  std::optional<LrSchedule> schedule_;
  int logits_result_ = -1;  // graph result holding the classifier's logits
  int targets_arg_ = -1;    // graph argument holding its integer targets
};

}  // namespace pf
