// Plans: ranks and their views, and small questions about a plan's schedule and dtype.
#include "plan/plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <set>

#include "ir/diagnostic.h"
#include "ir/param_piece.h"
#include "runtime/schedule.h"

namespace pf {

bool schedule_splits_backward(std::string_view kind, std::string_view actions) {
  const std::optional<ScheduleKind> parsed = parse_schedule_kind(kind);
  if (parsed == ScheduleKind::custom) return read_schedule_text(actions, "the custom schedule").split_backward;
  return parsed && splits_backward(*parsed);
}

bool plan_recomputes(const Plan& plan) {
  return std::any_of(plan.stages.begin(), plan.stages.end(),
                     [](const PlanStage& s) { return s.gradients && !s.gradients->recomputed.empty(); });
}

PlanStage shard_stage(const PlanStage& stage, int shard, bool sequence_parallel) {
  if (shard < 0 || shard >= static_cast<int>(stage.shards.size()))
    throw Error(fmt::format("stage {} has no part {}: it has {}", stage.index, shard, stage.shards.size()));
  PlanStage out = stage;
  PlanShard& part = out.shards[static_cast<size_t>(shard)];
  out.program = std::move(part.program);
  out.params = std::move(part.params);
  out.gradients = std::move(part.gradients);
  out.split = std::move(part.split);
  const int degree = static_cast<int>(stage.shards.size());
  if (sequence_parallel)
    for (std::vector<PlanTensor>* list : {&out.recv, &out.send})
      for (PlanTensor& t : *list)
        if (cuts_into_token_parts(t.type, degree)) t.type = token_part_type(t.type, degree, shard);
  out.shards.clear();
  return out;
}

std::vector<std::string> hand_offs_in_parts(const PlanStage& stage, int degree) {
  std::vector<std::string> names;
  for (const std::vector<PlanTensor>* list : {&stage.recv, &stage.send})
    for (const PlanTensor& t : *list)
      if (cuts_into_token_parts(t.type, degree)) names.push_back(t.name);
  return names;
}

std::vector<PlanRank> one_replica_ranks(const std::vector<PlanStage>& stages, int devices) {
  return replicated_ranks(stages, devices, 1);
}

int rank_of_stage(const Plan& plan, int stage, int replica, int shard) {
  for (const PlanRank& r : plan.ranks)
    if (r.replica == replica && r.shard == shard &&
        std::find(r.stages.begin(), r.stages.end(), stage) != r.stages.end())
      return r.rank;
  throw Error(fmt::format("no rank of replica {} runs stage {}{}", replica, stage,
                          shard > 0 ? fmt::format(" at place {} of its tensor-parallel group", shard) : ""));
}

RankView rank_view(const Plan& plan, int rank) {
  const PlanRank& r = plan.ranks.at(static_cast<size_t>(rank));
  RankView view;
  view.rank = r.rank;
  view.device = r.device;
  view.replica = r.replica;
  view.shard = r.shard;
  view.stages = r.stages;
  for (const PlanRank& other : plan.ranks) view.world.push_back(other.rank);
  std::set<int> neighbours;
  std::map<std::string, std::set<int>> tied;
  const int n = static_cast<int>(plan.stages.size());
  for (int s : r.stages) {
    for (int next : {s - 1, s + 1})
      if (next >= 0 && next < n && rank_of_stage(plan, next, r.replica, r.shard) != rank)
        neighbours.insert(rank_of_stage(plan, next, r.replica, r.shard));
    // The rank's own parameters: its place's blocks of a tensor-parallel stage.
    const PlanStage& stage = plan.stages[static_cast<size_t>(s)];
    const int part = stage_part(plan, r);
    const std::vector<PlanParam>& params =
        part < 0 || stage.shards.empty() ? stage.params : stage.shards.at(static_cast<size_t>(part)).params;
    for (const PlanParam& p : params) {
      if (p.shared_with.empty()) continue;
      std::set<int>& holders = tied[p.name];
      holders.insert(rank);
      for (int other : p.shared_with) holders.insert(rank_of_stage(plan, other, r.replica, r.shard));
    }
  }
  view.neighbours.assign(neighbours.begin(), neighbours.end());
  for (const auto& [name, holders] : tied) view.tied.emplace_back(name, std::vector<int>(holders.begin(), holders.end()));
  for (const PlanRank& other : plan.ranks)
    if (other.replica == r.replica) view.replica_ranks.push_back(other.rank);
  for (int s : r.stages) {
    std::vector<int> copies;
    for (int k = 0; k < replica_count(plan); ++k) copies.push_back(rank_of_stage(plan, s, k, r.shard));
    view.stage_replicas.emplace_back(s, std::move(copies));
  }
  for (int t = 0; t < std::max(1, plan.tensor_parallel); ++t)
    view.tensor_group.push_back(rank_of_stage(plan, r.stages.front(), r.replica, t));
  return view;
}

std::string rank_name(const Plan& plan, int rank) {
  const PlanRank& r = plan.ranks.at(static_cast<size_t>(rank));
  return fmt::format("rank {} (stage{} {}, replica {}{})", rank, r.stages.size() == 1 ? "" : "s",
                     fmt::join(r.stages, ","), r.replica,
                     plan.tensor_parallel > 1 ? fmt::format(", tensor-parallel place {}", r.shard) : "");
}

int replica_count(const Plan& plan) {
  int replicas = 1;
  for (const PlanRank& r : plan.ranks) replicas = std::max(replicas, r.replica + 1);
  return replicas;
}

int stage_part(const Plan& plan, const PlanRank& r) {
  if (plan.tensor_parallel > 1) return r.shard;
  if (plan.expert_parallel > 1) return r.replica % plan.expert_parallel;
  return -1;
}

int rank_of_part(const Plan& plan, int stage, int part) {
  return plan.expert_parallel > 1 ? rank_of_stage(plan, stage, part, 0) : rank_of_stage(plan, stage, 0, part);
}

std::vector<int> expert_group_replicas(const Plan& plan, int replica) {
  const int x = std::max(1, plan.expert_parallel), first = replica / x * x;
  std::vector<int> out;
  for (int k = first; k < first + x; ++k) out.push_back(k);
  return out;
}

std::vector<int> expert_block_replicas(const Plan& plan, int replica) {
  const int x = std::max(1, plan.expert_parallel);
  std::vector<int> out;
  for (int k = replica % x; k < replica_count(plan); k += x) out.push_back(k);
  return out;
}

std::vector<std::string> replica_own_params(const Plan& plan, const PlanStage& stage, int part) {
  std::vector<std::string> own;
  if (plan.expert_parallel <= 1 || stage.shards.empty()) return own;
  for (const PlanParam& p : stage.shards.at(static_cast<size_t>(part)).params)
    if (std::none_of(stage.params.begin(), stage.params.end(), [&](const PlanParam& w) { return w.name == p.name; }))
      own.push_back(p.name);
  return own;
}

std::vector<PlanRank> replicated_ranks(const std::vector<PlanStage>& stages, int devices, int replicas,
                                       int tensor) {
  std::vector<PlanRank> ranks;
  for (int k = 0; k < replicas; ++k)
    for (int t = 0; t < tensor; ++t)
      for (int d = 0; d < devices; ++d) {
        PlanRank r{static_cast<int>(ranks.size()), k * devices + d, k, t, {}};
        for (const PlanStage& s : stages)
          if (s.device == d) r.stages.push_back(s.index);
        ranks.push_back(std::move(r));
      }
  return ranks;
}

DType parse_compute_dtype(std::string_view name, std::string_view what) {
  if (name == "f32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  throw Error(fmt::format("{}: unknown compute dtype '{}'; use f32 or bf16", what, name));
}

}  // namespace pf
