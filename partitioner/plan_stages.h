// A plan's stages from a model cut into pieces: each stage's tables and the
// program the runtime executes, compiled here so that the runtime runs no pass.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "ir/module.h"
#include "passes/autodiff.h"
#include "plan/plan.h"
#include "partitioner/stage_split.h"
#include "runtime/schedule.h"

namespace pf {

/// The tied parameters (held by several of `stages`, as `holders` lists)
/// that a split over tensor-parallel groups of `degree` keeps whole. The
/// stages sum a tied parameter's gradient block by block, rank by rank, so
/// it is cut only where every holder cuts it alike: an embedding table cut
/// by vocabulary rows on the first stage and as the vocabulary projection's
/// columns on the last. The others stay whole on every holder, and so do
/// the products whose split would cut them.
std::vector<std::string> whole_tied_params(const std::vector<StageModule>& stages,
                                           const std::map<std::string, std::vector<int>>& holders,
                                           const DimBinding& micro, int degree);

/// Stage `index` of a plan, from split_into_stages' `stage` under the
/// micro-batch binding `micro`, on device `device`: its tables (parameters,
/// with `holders` naming every stage that holds each one, batch inputs,
/// tensors received and sent) and its program. With `training`, the program
/// holds the graph differentiated for the stage (stage_autodiff_options)
/// and `gradients` describes it; with `split` too, the backward's input and
/// weight parts (schedule_splits_backward); `recompute` says what the
/// backward computes again instead of stashing. With `tensor_parallel` T >
/// 1, the stage also holds the part of each of the T ranks of its group
/// (PlanStage::shards: the tensor-parallel pass's program for the rank,
/// differentiated alike), the tied parameters in `whole_tied` kept whole
/// (whole_tied_params); with `sequence_parallel`, the ops between the
/// group's products on each rank's part of the tokens. With
/// `expert_parallel` X > 1 instead, the part of each of the X replicas of a
/// group sharing the experts out (the expert-parallel pass's program for
/// the replica's block).
/// Predictions are left zero.
PlanStage plan_stage(StageModule stage, int index, int device, const DimBinding& micro,
                     const std::map<std::string, std::vector<int>>& holders,
                     const std::vector<std::string>& whole_tied, bool training, bool split,
                     Recompute recompute = Recompute::none, int tensor_parallel = 1, bool sequence_parallel = false,
                     int expert_parallel = 1);

/// Every stage of a plan at once: which stages hold each parameter is taken
/// from `stages` themselves; stage s goes on device `device_of[s]`.
std::vector<PlanStage> plan_stages(std::vector<StageModule> stages, const DimBinding& micro,
                                   const std::vector<int>& device_of, bool training, bool split,
                                   Recompute recompute = Recompute::none, int tensor_parallel = 1,
                                   bool sequence_parallel = false, int expert_parallel = 1);

/// A plan of `model` (inlined and verified under `micro`, the binding of one
/// micro-batch; its first result is the loss) cut at op positions `cuts`
/// into the stages `schedule` runs, placed as it places them (a kind's
/// lists, or a schedule file's, which the plan then carries), without a
/// cost model: `schedule.devices` CPU devices named cpu:0..., predictions
/// zero; each device a tensor-parallel group of `tensor_parallel` ranks
/// (`sequence_parallel`: plan_stage); the pipeline replicated `replicas`
/// times, replica k on devices cpu:k*devices..., groups of `expert_parallel`
/// replicas sharing the experts out. What tests and benchmarks build when
/// they choose the cuts themselves.
Plan plan_for_cuts(const Module& model, const DimBinding& micro, const std::vector<int>& cuts,
                   const std::vector<std::string>& whole_inputs, const Schedule& schedule, DType dtype = DType::f32,
                   Recompute recompute = Recompute::none, int tensor_parallel = 1, bool sequence_parallel = false,
                   int replicas = 1, int expert_parallel = 1);

}  // namespace pf
