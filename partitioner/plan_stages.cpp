// A plan's stages: tables and compiled programs.
#include "partitioner/plan_stages.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>

#include "ir/diagnostic.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/pipeline.h"
#include "passes/tensor_parallel_layout.h"
#include "runtime/schedule.h"

namespace pf {

namespace {

/// How a part of a stage is cut: rank `rank` of a tensor-parallel group of
/// `degree`, or replica `replica` of `experts` sharing the experts out (the
/// whole stage where both are 1).
struct PartCut {
  int degree = 1;
  int rank = 0;
  int experts = 1;
  int replica = 0;
};

/// `module` (a stage's forward) compiled as `cut` says: its parameters, and
/// for training its backward.
PlanShard compile_part(Module module, const StageModule& stage, int index, const DimBinding& micro,
                       const std::map<std::string, std::vector<int>>& holders,
                       const std::vector<std::string>& whole_tied, bool training, bool split, Recompute recompute,
                       PartCut cut, bool sequence_parallel, const std::vector<std::string>& hand_offs_in_parts) {
  PlanShard part;
  const AutodiffOptions ad = stage_autodiff_options(stage);
  PassContext ctx{micro, ad.wrt_inputs, ad.outputs};
  ctx.recompute = recompute;
  ctx.tensor_parallel = cut.degree;
  ctx.tensor_parallel_rank = cut.rank;
  ctx.tensor_parallel_whole = whole_tied;
  ctx.sequence_parallel = sequence_parallel;
  ctx.hand_offs_in_parts = hand_offs_in_parts;
  ctx.expert_parallel = cut.experts;
  ctx.expert_parallel_rank = cut.replica;
  if (cut.degree > 1) run_passes(module, {"tensor-parallel"}, ctx);
  if (cut.experts > 1) run_passes(module, {"expert-parallel"}, ctx);
  const Function& g = module.graph();
  for (const Op& op : g.ops) {
    if (op.kind != OpKind::param) continue;
    std::string name = g.values[op.results[0]].name;
    PlanParam pp{name, g.type_of(op.results[0]), op.attr("init")->init.str(), {}, param_piece(op)};
    // A tied block is tied to the same block on the other holders' same rank.
    if (auto it = holders.find(pp.piece ? pp.piece->whole : name); it != holders.end())
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

/// How each stage's ranks would hold each tied parameter it holds, with the
/// parameters in `whole` kept whole.
std::map<std::string, std::vector<ShardLayout>> tied_layouts(const std::vector<StageModule>& stages,
                                                             const std::map<std::string, std::vector<int>>& holders,
                                                             const DimBinding& micro, int degree,
                                                             const std::vector<std::string>& whole) {
  std::map<std::string, std::vector<ShardLayout>> layouts;
  for (const StageModule& stage : stages) {
    Module m = stage.module;
    verify_module(m, micro);
    const Function& g = m.graph();
    const TensorParallelLayout split = tensor_parallel_layout(g, degree, -1, whole);
    for (const std::string& name : stage.params)
      if (holders.at(name).size() > 1) layouts[name].push_back(split.values[g.find_value(name)]);
  }
  return layouts;
}

/// What the stage's split keeps whole and why, as PlanStage::kept_whole says it.
std::vector<std::string> kept_whole_notes(Module module, const DimBinding& micro, int degree,
                                          const std::vector<std::string>& whole_tied) {
  verify_module(module, micro);
  const Function& g = module.graph();
  std::vector<std::string> notes;
  for (const KeptWhole& k : tensor_parallel_layout(g, degree, -1, whole_tied).kept_whole) {
    const Op& op = g.ops[static_cast<size_t>(k.op)];
    notes.push_back(fmt::format("%{} = {}: {}", g.values[op.results[0]].name, op_name(op.kind), k.why));
  }
  return notes;
}

}  // namespace

std::vector<std::string> whole_tied_params(const std::vector<StageModule>& stages,
                                           const std::map<std::string, std::vector<int>>& holders,
                                           const DimBinding& micro, int degree) {
  std::vector<std::string> whole;
  if (degree <= 1) return whole;
  // Keeping one whole can leave another uncut: until no more change.
  for (bool changed = true; changed;) {
    changed = false;
    for (const auto& [name, held] : tied_layouts(stages, holders, micro, degree, whole)) {
      const ShardLayout first = held.front();
      const bool alike = std::all_of(held.begin(), held.end(), [&](const ShardLayout& l) { return l == first; });
      if ((alike && first.sharded()) || std::find(whole.begin(), whole.end(), name) != whole.end()) continue;
      whole.push_back(name);
      changed = true;
    }
  }
  return whole;
}

PlanStage plan_stage(StageModule stage, int index, int device, const DimBinding& micro,
                     const std::map<std::string, std::vector<int>>& holders,
                     const std::vector<std::string>& whole_tied, bool training, bool split, Recompute recompute,
                     int tensor_parallel, bool sequence_parallel, int expert_parallel) {
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
  if (tensor_parallel > 1) ps.kept_whole = kept_whole_notes(stage.module, micro, tensor_parallel, whole_tied);
  // Stages hand what sequence parallelism can cut on in parts, as Megatron-LM does.
  const std::vector<std::string> in_parts =
      sequence_parallel && tensor_parallel > 1 ? hand_offs_in_parts(ps, tensor_parallel) : std::vector<std::string>{};
  for (int r = 0; r < tensor_parallel && tensor_parallel > 1; ++r)
    ps.shards.push_back(compile_part(stage.module, stage, index, micro, holders, whole_tied, training, split,
                                     recompute, {tensor_parallel, r, 1, 0}, sequence_parallel, in_parts));
  for (int k = 0; k < expert_parallel && expert_parallel > 1; ++k)
    ps.shards.push_back(compile_part(stage.module, stage, index, micro, holders, whole_tied, training, split,
                                     recompute, {1, 0, expert_parallel, k}, false, {}));
  PlanShard whole = compile_part(stage.module, stage, index, micro, holders, whole_tied, training, split, recompute,
                                 {}, false, {});
  ps.program = std::move(whole.program);
  ps.params = std::move(whole.params);
  ps.gradients = std::move(whole.gradients);
  ps.split = std::move(whole.split);
  return ps;
}

std::vector<PlanStage> plan_stages(std::vector<StageModule> stages, const DimBinding& micro,
                                   const std::vector<int>& device_of, bool training, bool split,
                                   Recompute recompute, int tensor_parallel, bool sequence_parallel,
                                   int expert_parallel) {
  std::map<std::string, std::vector<int>> holders;  // parameter -> stages
  for (size_t s = 0; s < stages.size(); ++s)
    for (const std::string& p : stages[s].params) holders[p].push_back(static_cast<int>(s));
  const std::vector<std::string> whole_tied = whole_tied_params(stages, holders, micro, tensor_parallel);
  std::vector<PlanStage> out;
  for (size_t s = 0; s < stages.size(); ++s)
    out.push_back(plan_stage(std::move(stages[s]), static_cast<int>(s), device_of.at(s), micro, holders, whole_tied,
                             training, split, recompute, tensor_parallel, sequence_parallel, expert_parallel));
  return out;
}

Plan plan_for_cuts(const Module& model, const DimBinding& micro, const std::vector<int>& cuts,
                   const std::vector<std::string>& whole_inputs, const Schedule& schedule, DType dtype,
                   Recompute recompute, int tensor_parallel, bool sequence_parallel, int replicas,
                   int expert_parallel) {
  const int stages = static_cast<int>(cuts.size()) + 1;
  if (stages != schedule.model_stages())
    throw Error(fmt::format("{} stages, but the schedule runs {} devices of {} chunks", stages, schedule.devices,
                            schedule.virtual_stages));
  const Function& graph = model.graph();
  Plan plan;
  plan.model_name = graph.name;
  plan.binding = micro;
  const int devices = schedule.devices;
  for (int d = 0; d < devices * replicas; ++d) plan.devices.push_back({fmt::format("cpu:{}", d), "cpu", 0, 1});
  plan.schedule = std::string(schedule_kind_name(schedule.kind));
  if (schedule.kind == ScheduleKind::custom) plan.schedule_actions = write_schedule_text(schedule);
  plan.microbatches = schedule.microbatches;
  plan.virtual_stages = schedule.virtual_stages;
  plan.dtype = dtype;
  plan.recompute = std::string(recompute_name(recompute));
  plan.tensor_parallel = tensor_parallel;
  plan.sequence_parallel = sequence_parallel;
  plan.expert_parallel = expert_parallel;
  plan.loss_stage_output = graph.values[graph.returns.at(0)].name;
  std::vector<int> device_of;
  for (int s = 0; s < stages; ++s) device_of.push_back(schedule.device_of(s));
  plan.stages = plan_stages(split_into_stages(model, cuts, whole_inputs), micro, device_of, /*training=*/true,
                            schedule.split_backward, recompute, tensor_parallel, sequence_parallel,
                            plan.expert_parallel);
  plan.ranks = replicated_ranks(plan.stages, devices, replicas, tensor_parallel);
  return plan;
}

}  // namespace pf
