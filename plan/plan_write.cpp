// The plan file, written: its fields as JSON, each stage program as a list of lines.
#include "plan/plan.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "ir/diagnostic.h"

namespace pf {

using Json = nlohmann::ordered_json;

namespace {

// JSON has no inf or NaN (they would be written as null and refused on
// load), so a plan holding one is refused before it is written.
double finite(double v, std::string_view what) {
  if (!std::isfinite(v)) throw Error(fmt::format("cannot write the plan: {} is {}", what, v));
  return v;
}

Json program_lines(const std::string& text) {
  Json lines = Json::array();
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    lines.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  return lines;
}

Json tensor_json(const PlanTensor& t, bool with_peer) {
  Json j = {{"name", t.name}, {"type", t.type.str()}};
  if (with_peer) j["peer"] = t.peer;
  if (t.whole) j["whole"] = true;  // only where it holds: plans of models whose every input is split read as before
  return j;
}

Json tensors_json(const std::vector<PlanTensor>& tensors, bool with_peer) {
  Json j = Json::array();
  for (const PlanTensor& t : tensors) j.push_back(tensor_json(t, with_peer));
  return j;
}

Json params_json(const std::vector<PlanParam>& list) {
  Json params = Json::array();
  for (const PlanParam& p : list) {
    Json param = {{"name", p.name}, {"type", p.type.str()}, {"init", p.init}, {"shared_with", p.shared_with}};
    if (p.piece) {
      param["piece_of"] = p.piece->whole;
      param["rows"] = {p.piece->begin, p.piece->end};
      param["whole_rows"] = p.piece->whole_rows;
      if (p.piece->axis != 0) param["axis"] = p.piece->axis;
      if (p.piece->segments != 1) param["segments"] = p.piece->segments;
    }
    params.push_back(std::move(param));
  }
  return params;
}

/// What a stage and each of its shards hold of their own: the backward's
/// layout, its two parts, the program.
void add_program(Json& j, const std::optional<GradientProgram>& gradients, const std::optional<BackwardSplit>& split,
                 const std::string& program) {
  if (gradients) {
    const GradientProgram& g = *gradients;
    j["gradients"] = {{"backward", g.backward},   {"results", g.original_results}, {"outputs", g.outputs},
                      {"seeds", g.seeds},              {"stash", g.stash},
                      {"input_grads", g.input_grads}, {"params", g.params}};
    if (!g.recomputed.empty()) j["gradients"]["recomputed"] = g.recomputed;
  }
  if (split) j["split"] = {{"input", split->input}, {"weight", split->weight}, {"deferred", split->deferred}};
  j["program"] = program_lines(program);
}

Json stage_json(const PlanStage& s) {
  const PlanStage::Prediction& pr = s.predicted;
  std::string where = fmt::format("stage {}'s predicted ", s.index);
  Json j{
      {"index", s.index},
      {"device", s.device},
      {"layers", s.layers},
      {"predicted",
       {{"forward_s", finite(pr.forward_s, where + "forward_s")},
        {"backward_s", finite(pr.backward_s, where + "backward_s")},
        {"comm_s", finite(pr.comm_s, where + "comm_s")},
        {"time_s", finite(pr.time_s, where + "time_s")},
        {"param_bytes", pr.param_bytes},
        {"stash_bytes", pr.stash_bytes},
        {"memory_bytes", pr.memory_bytes},
        {"bytes_sent", pr.bytes_sent}}},
      {"params", params_json(s.params)},
      {"inputs", tensors_json(s.inputs, false)},
      {"recv", tensors_json(s.recv, true)},
      {"send", tensors_json(s.send, true)},
  };
  // Only a plan of several replicas synchronises gradients.
  if (pr.sync_s > 0) j["predicted"]["sync_s"] = finite(pr.sync_s, where + "sync_s");
  if (pr.backward_weight_s > 0)
    j["predicted"]["backward_weight_s"] = finite(pr.backward_weight_s, where + "backward_weight_s");
  add_program(j, s.gradients, s.split, s.program);
  if (!s.kept_whole.empty()) j["kept_whole"] = s.kept_whole;
  if (!s.shards.empty()) {
    Json shards = Json::array();
    for (const PlanShard& part : s.shards) {
      Json shard = {{"params", params_json(part.params)}};
      add_program(shard, part.gradients, part.split, part.program);
      shards.push_back(std::move(shard));
    }
    j["shards"] = std::move(shards);
  }
  return j;
}

}  // namespace

std::string plan_to_json(const Plan& plan) {
  Json binding = Json::object();
  for (const auto& [name, value] : plan.binding) binding[name] = value;
  Json devices = Json::array();
  for (const PlanDevice& d : plan.devices)
    devices.push_back({{"name", d.name}, {"kind", d.kind}, {"memory_bytes", d.memory_bytes}, {"threads", d.threads}});
  Json stages = Json::array();
  for (const PlanStage& s : plan.stages) stages.push_back(stage_json(s));
  Json ranks = Json::array();
  for (const PlanRank& r : plan.ranks) {
    Json rank = {{"rank", r.rank}, {"device", r.device}, {"replica", r.replica}};
    if (plan.tensor_parallel > 1) rank["shard"] = r.shard;  // plans without tensor parallelism read as before
    rank["stages"] = r.stages;
    ranks.push_back(std::move(rank));
  }
  const Plan::Summary& pr = plan.predicted;
  Json doc = {
      {"format", "pipeforge-plan"},
      {"version", Plan::kVersion},
      {"model",
       {{"name", plan.model_name}, {"source", plan.model_source}, {"hash", plan.model_hash}, {"binding", binding}}},
      {"devices", devices},
      {"ranks", ranks},
      {"schedule",
       {{"kind", plan.schedule}, {"microbatches", plan.microbatches}, {"virtual_stages", plan.virtual_stages}}},
      {"dtype", dtype_name(plan.dtype)},
      {"tensor_parallel", plan.tensor_parallel},
      {"loss", plan.loss_stage_output},
      {"recompute", plan.recompute},
      {"optimizer_state", plan.shard_optimizer ? "sharded" : "replicated"},
      {"predicted",
       {{"period_s", finite(pr.period_s, "the predicted period_s")},
        {"imbalance_pct", finite(pr.imbalance_pct, "the predicted imbalance_pct")},
        {"speedup_vs_equal_layers", finite(pr.speedup_vs_equal_layers, "the predicted speedup_vs_equal_layers")},
        {"speedup_vs_equal_params", finite(pr.speedup_vs_equal_params, "the predicted speedup_vs_equal_params")},
        {"bubble_fraction", finite(pr.bubble_fraction, "the predicted bubble_fraction")},
        {"step_s", finite(pr.step_s, "the predicted step_s")},
        {"mfu", finite(pr.mfu, "the predicted mfu")}}},
      {"stages", stages},
  };
  // Only a custom schedule has lists of its own to carry: other plans read as before.
  if (!plan.schedule_actions.empty()) doc["schedule"]["actions"] = program_lines(plan.schedule_actions);
  if (plan.sequence_parallel) doc["sequence_parallel"] = true;  // plans without it read as before
  if (plan.expert_parallel > 1) doc["expert_parallel"] = plan.expert_parallel;  // the same
  return format_json(doc, {"program"});
}

void save_plan(const Plan& plan, const std::string& path) { write_file_atomically(path, plan_to_json(plan)); }

}  // namespace pf
