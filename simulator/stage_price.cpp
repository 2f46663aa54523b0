// Pricing a stage's forward and backward from its own program.
#include "simulator/stage_price.h"

#include <fmt/format.h>

#include "backends/common/memory_plan.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "partitioner/model_cost_graph.h"
#include "passes/cost_summary.h"

namespace pf {

namespace {

const Function& function_named(const Module& program, const PlanStage& stage, const std::string& name) {
  const Function* f = program.find_function(name);
  if (!f) throw Error(fmt::format("stage {}: the program has no function @{}", stage.index, name));
  return *f;
}

/// A function's ops priced one by one, and its FLOPs.
struct Priced {
  double seconds = 0;   // measured under each op's own key where the profile has it, else the roofline
  double roofline = 0;  // the roofline alone
  int64_t flops = 0;
};

Priced price_ops(const Function& f, const DimBinding& binding, const DeviceProfile& profile) {
  Priced out;
  for (const Op& op : f.ops) {
    const OpCost cost = op_cost(f, op, binding);
    const double roofline = op_time(profile, cost.flops, cost.bytes);
    const std::optional<OpTiming> measured =
        profile.measured.empty() ? std::nullopt : find_timing(profile, op_timing_key(f, op, binding));
    out.seconds += measured ? measured->forward_s : roofline;
    out.roofline += roofline;
    out.flops += cost.flops;
  }
  return out;
}

const TensorType& value_type(const Function& f, const std::string& name) {
  const ValueId v = f.find_value(name);
  if (v < 0) throw Error(fmt::format("@{} has no value %{}", f.name, name));
  return f.type_of(v);
}

int64_t aligned_bytes(const Function& f, const std::vector<std::string>& names) {
  int64_t bytes = 0;
  for (const std::string& name : names) bytes += align_up(value_type(f, name).bytes(), backend::kArenaAlignment);
  return bytes;
}

}  // namespace

StagePrice price_stage(const Module& program, const PlanStage& stage, const DimBinding& binding,
                       const DeviceProfile& profile) {
  StagePrice price;
  const Function& graph = program.graph();
  // Forward and measured backward as the compiler prices the stage's ops,
  // each backward charged for the operands a gradient reaches (the received
  // activations included); whether the profile measured every op.
  bool all_measured = !profile.measured.empty();
  const OpTimer timer = [&](const Function& f, const Op& op, const OpCost& cost) {
    const std::string key = op_timing_key(f, op, binding);
    if (!op.operands.empty() && !find_timing(profile, key)) all_measured = false;
    return estimate_timing(profile, key, cost, OpCost{2 * cost.flops, 2 * cost.bytes});
  };
  CostGraphOptions cgo;
  if (stage.gradients) cgo.grad_args = stage.gradients->input_grads;
  const CostGraph cg = build_cost_graph(graph, binding, timer, cgo);
  double measured_backward = 0;
  for (const CostNode& node : cg.nodes) {
    price.forward_s += node.forward_s;
    measured_backward += node.backward_s;
  }
  for (const Op& op : graph.ops) price.forward_flops += op_cost(graph, op, binding).flops;
  for (const PlanParam& p : stage.params) price.param_bytes += p.type.bytes();
  for (const PlanTensor& t : stage.send) price.send_act_bytes += t.type.bytes();
  if (!stage.gradients) return price;  // an inference stage

  const GradientProgram& gp = *stage.gradients;
  for (const std::string& name : gp.input_grads) price.send_grad_bytes += value_type(graph, name).bytes();
  price.slot_bytes = aligned_bytes(graph, gp.stash);
  const Priced whole = price_ops(function_named(program, stage, gp.backward), binding, profile);
  price.backward_flops = whole.flops;
  price.backward_s = all_measured ? measured_backward : whole.seconds;
  if (stage.split) {
    const Function& input = function_named(program, stage, stage.split->input);
    const Priced in = price_ops(input, binding, profile);
    const Priced weight = price_ops(function_named(program, stage, stage.split->weight), binding, profile);
    price.slot_bytes += aligned_bytes(input, stage.split->deferred);
    price.backward_flops = in.flops + weight.flops;
    if (all_measured) {
      const double total = in.roofline + weight.roofline;
      const double share = total > 0 ? in.roofline / total : 0.0;
      price.backward_input_s = measured_backward * share;
      price.backward_weight_s = measured_backward - price.backward_input_s;
    } else {
      price.backward_input_s = in.seconds;
      price.backward_weight_s = weight.seconds;
    }
  }
  return price;
}

}  // namespace pf
