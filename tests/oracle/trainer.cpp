// The tests' oracle: a whole model trained on one CPU device.
#include "tests/oracle/trainer.h"

#include <cmath>

#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/pass.h"

namespace pf {

namespace {

// A classifier's loss is cross_entropy(logits [N, K], targets [N]) with the
// targets a graph argument: its accuracy can be reported for free.
void find_classifier(const Function& g, int* logits_op_value, int* targets_arg) {
  for (const Op& op : g.ops) {
    if (op.kind != OpKind::cross_entropy || op.results[0] != g.returns[0]) continue;
    if (g.type_of(op.operands[0]).rank() != 2) return;
    for (size_t a = 0; a < g.args.size(); ++a)
      if (g.args[a] == op.operands[1]) {
        *logits_op_value = op.operands[0];
        *targets_arg = static_cast<int>(a);
      }
  }
}

}  // namespace

Trainer::Trainer(Module model, const DimBinding& binding, const TrainingOptions& options) : options_(options) {
  PassContext ctx{binding};
  verify_module(model, binding, VerifyOptions{true});
  run_passes(model, {"inline", "shape"}, ctx);
  Function& g = model.graph();
  int logits = -1;
  find_classifier(g, &logits, &targets_arg_);
  if (logits >= 0) {
    logits_result_ = static_cast<int>(g.returns.size());
    g.returns.push_back(logits);
    g.result_types.push_back(SymType::from(g.type_of(logits)));
  }
  GradientProgram gradients = differentiate(model, binding);
  program_ = std::make_unique<StageProgram>(std::move(model), binding, std::move(gradients), std::nullopt, params_, 1);
}

void Trainer::start() {
  optimizer_ = make_optimizer(options_.optimizer, params_.optimizer_params(), options_.momentum, options_.weight_decay);
  schedule_ = options_.cosine || options_.warmup > 0
                  ? LrSchedule::warmup_cosine(options_.lr, options_.lr / 10, options_.warmup, options_.steps)
                  : LrSchedule::constant(options_.lr);
}

StepResult Trainer::compute_gradients(std::span<const void* const> inputs) {
  StepResult r;
  program_->forward(0, inputs, {});
  r.loss = *static_cast<const float*>(program_->result(0));
  if (logits_result_ >= 0) {
    const TensorType t = program_->result_type(logits_result_);
    const float* logits = static_cast<const float*>(program_->result(logits_result_));
    const int32_t* targets = static_cast<const int32_t*>(inputs[targets_arg_]);
    int64_t rows = t.shape[0], classes = t.shape[1], correct = 0;
    for (int64_t i = 0; i < rows; ++i) {
      int64_t best = 0;
      for (int64_t k = 1; k < classes; ++k)
        if (logits[i * classes + k] > logits[i * classes + best]) best = k;
      correct += best == targets[i];
    }
    r.accuracy = static_cast<double>(correct) / static_cast<double>(rows);
  }
  float seed = 1.0f;
  const void* seeds[] = {&seed};
  // One micro-batch: its gradients are the step's, written in place.
  program_->backward(0, seeds, /*overwrite_grads=*/true);
  return r;
}

void Trainer::apply(StepResult& r) {
  if (!optimizer_) throw Error("Trainer::start() was not called");
  std::vector<Param> views = params_.optimizer_params();
  r.grad_norm = options_.clip > 0 ? clip_grad_norm(views, options_.clip) : grad_norm(views);
  r.lr = schedule_->at(optimizer_->step_count());
  if (std::isfinite(r.grad_norm)) optimizer_->step(r.lr);
}

}  // namespace pf
