// A plan's stages: tables and compiled programs.
#include "partitioner/plan_stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>

#include "ir/diagnostic.h"
#include "ir/printer.h"
#include "passes/autodiff.h"
#include "passes/pipeline.h"
#include "runtime/schedule.h"

namespace pf {

namespace {

/// `module` (a stage's forward) compiled for rank `rank` of a tensor-parallel
/// group of `degree` (the whole stage for 1): its parameters, and for
/// training its backward.
PlanShard compile_part(Module module, const StageModule& stage, int index, const DimBinding& micro,
                       const std::map<std::string, std::vector<int>>& holders, bool training, bool split,
                       Recompute recompute, int degree, int rank) {
  PlanShard part;
  const AutodiffOptions ad = stage_autodiff_options(stage);
  PassContext ctx{micro, ad.wrt_inputs, ad.outputs};
  ctx.recompute = recompute;
  ctx.tensor_parallel = degree;
  ctx.tensor_parallel_rank = rank;
  // A weight tied to another stage's copy stays whole: the stages sum its
  // gradient under its name.
  for (const auto& [name, stages] : holders)
    if (stages.size() > 1) ctx.tensor_parallel_whole.push_back(name);
  if (degree > 1) run_passes(module, {"tensor-parallel"}, ctx);
  const Function& g = module.graph();
  for (const Op& op : g.ops) {
    if (op.kind != OpKind::param) continue;
    std::string name = g.values[op.results[0]].name;
    PlanParam pp{name, g.type_of(op.results[0]), op.attr("init")->init.str(), {}, param_piece(op)};
    if (auto it = holders.find(name); it != holders.end())
      for (int other : it->second)
        if (other != index) pp.shared_with.push_back(other);
    part.params.push_back(std::move(pp));
  }
  if (training) {
    run_pipeline(module, split ? PassPipeline::zero_bubble_stage : PassPipeline::stage, ctx);
    part.gradients = std::move(ctx.gradients);
    part.split = std::move(ctx.split);
  }
  part.program = print_module(module);
  return part;
}

}  // namespace

PlanStage plan_stage(StageModule stage, int index, int device, const DimBinding& micro,
                     const std::map<std::string, std::vector<int>>& holders, bool training, bool split,
                     Recompute recompute, int tensor_parallel) {
  PlanStage ps;
  ps.index = index;
  ps.device = device;
  ps.layers = stage.layers;
  const Function& g = stage.module.graph();
  for (const std::string& n : stage.inputs) {
    const bool whole = std::find(stage.whole_inputs.begin(), stage.whole_inputs.end(), n) != stage.whole_inputs.end();
    ps.inputs.push_back({n, g.type_of(g.find_value(n)), -1, whole});
  }
  for (const std::string& n : stage.recv) ps.recv.push_back({n, g.type_of(g.find_value(n)), index - 1});
  for (const std::string& n : stage.send) ps.send.push_back({n, g.type_of(g.find_value(n)), index + 1});
  for (int r = 0; r < tensor_parallel && tensor_parallel > 1; ++r)
    ps.shards.push_back(
        compile_part(stage.module, stage, index, micro, holders, training, split, recompute, tensor_parallel, r));
  PlanShard whole = compile_part(stage.module, stage, index, micro, holders, training, split, recompute, 1, 0);
  ps.program = std::move(whole.program);
  ps.params = std::move(whole.params);
  ps.gradients = std::move(whole.gradients);
  ps.split = std::move(whole.split);
  return ps;
}

std::vector<PlanStage> plan_stages(std::vector<StageModule> stages, const DimBinding& micro,
                                   const std::vector<int>& device_of, bool training, bool split,
                                   Recompute recompute, int tensor_parallel) {
  std::map<std::string, std::vector<int>> holders;  // parameter -> stages
  for (size_t s = 0; s < stages.size(); ++s)
    for (const std::string& p : stages[s].params) holders[p].push_back(static_cast<int>(s));
  std::vector<PlanStage> out;
  for (size_t s = 0; s < stages.size(); ++s)
    out.push_back(plan_stage(std::move(stages[s]), static_cast<int>(s), device_of.at(s), micro, holders, training,
                             split, recompute, tensor_parallel));
  return out;
}

Plan plan_for_cuts(const Module& model, const DimBinding& micro, const std::vector<int>& cuts,
                   const std::vector<std::string>& whole_inputs, const std::string& schedule, int microbatches,
                   int virtual_stages, DType dtype, Recompute recompute,
                   int tensor_parallel) {
  const int stages = static_cast<int>(cuts.size()) + 1;
  if (virtual_stages < 1 || stages % virtual_stages != 0)
    throw Error(fmt::format("{} stages do not divide into {} virtual stages per device", stages, virtual_stages));
  const Function& graph = model.graph();
  Plan plan;
  plan.model_name = graph.name;
  plan.binding = micro;
  const int devices = stages / virtual_stages;
  for (int d = 0; d < devices; ++d) plan.devices.push_back({fmt::format("cpu:{}", d), "cpu", 0, 1});
  plan.schedule = schedule;
  plan.microbatches = microbatches;
  plan.virtual_stages = virtual_stages;
  plan.dtype = dtype;
  plan.recompute = std::string(recompute_name(recompute));
  plan.tensor_parallel = tensor_parallel;
  plan.loss_stage_output = graph.values[graph.returns.at(0)].name;
  std::vector<int> device_of;
  const std::optional<ScheduleKind> kind = parse_schedule_kind(schedule);
  if (!kind) throw Error(fmt::format("unknown schedule '{}'; use {}", schedule, schedule_kind_choices()));
  for (int s = 0; s < stages; ++s) device_of.push_back(placed_device(stage_placement(*kind), s, devices));
  plan.stages = plan_stages(split_into_stages(model, cuts, whole_inputs), micro, device_of, /*training=*/true,
                            schedule_splits_backward(schedule), recompute, tensor_parallel);
  plan.ranks = replicated_ranks(plan.stages, devices, 1, tensor_parallel);
  return plan;
}

}  // namespace pf
