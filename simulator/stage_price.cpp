// Pricing a stage's forward and backward from its own program.
#include "simulator/stage_price.h"

#include <fmt/format.h>

#include "backends/common/memory_plan.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/expert_parallel.h"
#include "partitioner/tensor_parallel.h"
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

Priced price_ops(const Module& program, const Function& f, const DimBinding& binding, const DeviceProfile& profile) {
  Priced out;
  for (const Op& op : f.ops) {
    const OpCost cost = op_cost(f, op, binding, &program);
    const double roofline = op_time(profile, op.kind, cost.flops, cost.bytes);
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
    if (!op.operands.empty() && !timed_by_profile(profile, f, op, binding)) all_measured = false;
    return estimate_op_timing(profile, f, op, binding, cost);
  };
  CostGraphOptions cgo;
  if (stage.gradients) {
    cgo.grad_args = stage.gradients->input_grads;
    // What the backward computes again costs it its forward time too.
    cgo.recomputed = values_named(graph, stage.gradients->recomputed);
    for (const Op& op : graph.ops)
      if (!op.results.empty() && cgo.recomputed[static_cast<size_t>(op.results[0])])
        price.recomputed_flops += op_cost(graph, op, binding).flops;
  }
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
  const Priced whole = price_ops(program, function_named(program, stage, gp.backward), binding, profile);
  price.backward_flops = whole.flops;
  price.backward_s = all_measured ? measured_backward : whole.seconds;
  if (stage.split) {
    const Function& input = function_named(program, stage, stage.split->input);
    const Priced in = price_ops(program, input, binding, profile);
    const Priced weight = price_ops(program, function_named(program, stage, stage.split->weight), binding, profile);
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

StagePrice share_per_gpu(StagePrice price, const Module& program, const PlanStage& stage, const DimBinding& binding,
                         const DeviceProfile& profile, const GpuShare& share) {
  if (share.tensor_parallel <= 1 && share.expert_parallel <= 1 && share.activation_bytes <= 0) return price;
  const Function& graph = program.graph();
  const OpTimer timer = [&](const Function& f, const Op& op, const OpCost& cost) {
    return estimate_op_timing(profile, f, op, binding, cost);
  };
  // The stage's cost graph whole and as one GPU holds it; their ratios
  // scale what price_stage found from the program itself.
  CostGraphOptions whole;
  if (stage.gradients) {
    whole.grad_args = stage.gradients->input_grads;
    whole.stashed.assign(graph.values.size(), false);
    for (const std::string& name : stage.gradients->stash)
      if (const ValueId v = graph.find_value(name); v >= 0) whole.stashed[static_cast<size_t>(v)] = true;
  }
  CostGraphOptions gpu = whole;
  gpu.float_activation_bytes = share.activation_bytes;
  const CostGraph before = build_cost_graph(graph, binding, timer, whole);
  CostGraph after = build_cost_graph(graph, binding, timer, gpu);
  TensorParallel tp;
  tp.degree = share.tensor_parallel;
  tp.link = share.tensor_link;
  tp.element_bytes = share.activation_bytes > 0 ? share.activation_bytes : 4;
  tp.sequence = share.sequence_parallel;
  if (tp.sequence) tp.hand_offs_in_parts = hand_offs_in_parts(stage, tp.degree);
  // The stash its forward returns stays with the stage: it may be shares.
  // A tied weight the plan keeps whole (its holders would cut it apart) is
  // priced whole, as its ranks hold it.
  std::vector<std::string> whole_tied;
  if (!stage.shards.empty())
    for (const PlanParam& p : stage.shards.front().params)
      if (!p.shared_with.empty() && !p.piece) whole_tied.push_back(p.name);
  apply_tensor_parallel(after, graph, tp, stage.gradients ? stage.gradients->original_results : -1, whole_tied);
  apply_expert_parallel(after, graph, ExpertParallel{share.expert_parallel, share.replica_link, tp.element_bytes},
                        stage.gradients ? stage.gradients->original_results : -1);
  double fwd[2] = {0, 0}, bwd[2] = {0, 0}, stash[2] = {0, 0}, params[2] = {0, 0}, own = 0;
  for (size_t k = 0; k < 2; ++k)
    for (const CostNode& node : (k == 0 ? before : after).nodes) {
      fwd[k] += node.forward_s;
      bwd[k] += node.backward_s;
      stash[k] += static_cast<double>(node.stash_bytes);
      params[k] += static_cast<double>(node.param_bytes);
      if (k == 1) own += static_cast<double>(node.own_param_bytes);
    }
  auto scaled = [](double value, const double (&ratio)[2]) { return ratio[0] > 0 ? value * ratio[1] / ratio[0] : value; };
  price.forward_s = scaled(price.forward_s, fwd);
  price.backward_s = scaled(price.backward_s, bwd);
  price.backward_input_s = scaled(price.backward_input_s, bwd);
  price.backward_weight_s = scaled(price.backward_weight_s, bwd);
  price.slot_bytes = static_cast<int64_t>(scaled(static_cast<double>(price.slot_bytes), stash));
  price.param_bytes = static_cast<int64_t>(scaled(static_cast<double>(price.param_bytes), params));
  price.own_param_bytes = static_cast<int64_t>(scaled(own, params));
  // Sends leave the group over its T GPUs' links at once (the links' share
  // is the caller's); what each carries is the activation in its dtype.
  if (share.activation_bytes > 0) {
    price.send_act_bytes = price.send_act_bytes * share.activation_bytes / 4;
    price.send_grad_bytes = price.send_grad_bytes * share.activation_bytes / 4;
  }
  return price;
}

}  // namespace pf
