// Cuts an inlined model graph into pipeline stages: each stage is a module of
// its own whose graph receives what earlier stages computed and sends what
// later stages need.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"
#include "passes/autodiff.h"

namespace pf {

struct StageModule {
  Module module;                     // one graph, `@<model>.stage<k>`
  std::vector<std::string> layers;   // layer tags in order, without repeats
  std::vector<std::string> inputs;   // graph arguments of the model it reads (from the batch)
  std::vector<std::string> whole_inputs;  // those of `inputs` without the batch dimension: not split (ir/batch.h)
  std::vector<std::string> recv;     // values received from the previous stage
  std::vector<std::string> send;     // values sent to the next stage
  std::vector<std::string> params;   // parameters it holds (a tied one in several stages)
  bool has_loss = false;             // the last stage: result 0 is the loss
};

/// Splits `model` (inlined and verified; its graph's first result is the
/// loss) at op positions `cuts` (stage starts, increasing). The stages form
/// a linear pipeline: a value used by a later stage is relayed through every
/// stage in between. Ops without operands (parameters, constants, masks) are
/// copied into each stage that uses them. The stages' graph arguments are
/// the model inputs they read, then what they receive; their results the
/// loss (last stage), then what they send. `whole_inputs` names the model
/// inputs that do not carry the batch (ir/batch.h's whole_inputs, read
/// before shape inference); each stage lists those it reads as whole.
std::vector<StageModule> split_into_stages(const Module& model, const std::vector<int>& cuts,
                                           const std::vector<std::string>& whole_inputs);

/// What a stage differentiates: each float result (the loss, or an activation
/// it sends) with respect to its parameters and each float value it receives
/// (whose gradient it sends back).
AutodiffOptions stage_autodiff_options(const StageModule& stage);

}  // namespace pf
