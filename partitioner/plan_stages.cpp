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

PlanStage plan_stage(StageModule stage, int index, int device, const DimBinding& micro,
                     const std::map<std::string, std::vector<int>>& holders, bool training, bool split,
                     Recompute recompute) {
  PlanStage ps;
  ps.index = index;
  ps.device = device;
  ps.layers = stage.layers;
  const Function& g = stage.module.graph();
  for (const Op& op : g.ops) {
    if (op.kind != OpKind::param) continue;
    std::string name = g.values[op.results[0]].name;
    PlanParam pp{name, g.type_of(op.results[0]), op.attr("init")->init.str(), {}, param_piece(op)};
    if (auto it = holders.find(name); it != holders.end())
      for (int other : it->second)
        if (other != index) pp.shared_with.push_back(other);
    ps.params.push_back(std::move(pp));
  }
  for (const std::string& n : stage.inputs) {
    const bool whole = std::find(stage.whole_inputs.begin(), stage.whole_inputs.end(), n) != stage.whole_inputs.end();
    ps.inputs.push_back({n, g.type_of(g.find_value(n)), -1, whole});
  }
  for (const std::string& n : stage.recv) ps.recv.push_back({n, g.type_of(g.find_value(n)), index - 1});
  for (const std::string& n : stage.send) ps.send.push_back({n, g.type_of(g.find_value(n)), index + 1});

  if (training) {
    const AutodiffOptions ad = stage_autodiff_options(stage);
    PassContext ctx{micro, ad.wrt_inputs, ad.outputs};
    ctx.recompute = recompute;
    run_pipeline(stage.module, split ? PassPipeline::zero_bubble_stage : PassPipeline::stage, ctx);
    ps.gradients = std::move(ctx.gradients);
    ps.split = std::move(ctx.split);
  }
  ps.program = print_module(stage.module);
  return ps;
}

std::vector<PlanStage> plan_stages(std::vector<StageModule> stages, const DimBinding& micro,
                                   const std::vector<int>& device_of, bool training, bool split,
                                   Recompute recompute) {
  std::map<std::string, std::vector<int>> holders;  // parameter -> stages
  for (size_t s = 0; s < stages.size(); ++s)
    for (const std::string& p : stages[s].params) holders[p].push_back(static_cast<int>(s));
  std::vector<PlanStage> out;
  for (size_t s = 0; s < stages.size(); ++s)
    out.push_back(plan_stage(std::move(stages[s]), static_cast<int>(s), device_of.at(s), micro, holders, training,
                             split, recompute));
  return out;
}

Plan plan_for_cuts(const Module& model, const DimBinding& micro, const std::vector<int>& cuts,
                   const std::vector<std::string>& whole_inputs, const std::string& schedule, int microbatches,
                   int virtual_stages, DType dtype, Recompute recompute) {
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
  plan.loss_stage_output = graph.values[graph.returns.at(0)].name;
  std::vector<int> device_of;
  const std::optional<ScheduleKind> kind = parse_schedule_kind(schedule);
  if (!kind) throw Error(fmt::format("unknown schedule '{}'; use {}", schedule, schedule_kind_choices()));
  for (int s = 0; s < stages; ++s) device_of.push_back(placed_device(stage_placement(*kind), s, devices));
  plan.stages = plan_stages(split_into_stages(model, cuts, whole_inputs), micro, device_of, /*training=*/true,
                            schedule_splits_backward(schedule), recompute);
  plan.ranks = one_replica_ranks(plan.stages, devices);
  return plan;
}

}  // namespace pf
