// The plan file, read: the fields and their types (plan_check.cpp then checks what they mean together).
#include "plan/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <optional>

#include "ir/diagnostic.h"

namespace pf {

using Json = nlohmann::ordered_json;

namespace {

// "f32[8,64,768]", "i32[]".
std::optional<TensorType> parse_tensor_type(std::string_view text) {
  size_t open = text.find('[');
  if (open == std::string_view::npos || text.back() != ']') return std::nullopt;
  std::optional<DType> dtype = parse_dtype(text.substr(0, open));
  if (!dtype) return std::nullopt;
  TensorType type{*dtype, {}};
  std::string_view dims = text.substr(open + 1, text.size() - open - 2);
  size_t pos = 0;
  int64_t numel = 1;
  while (!dims.empty() && pos <= dims.size()) {
    size_t comma = std::min(dims.find(',', pos), dims.size());
    int64_t d = 0;
    auto [end, ec] = std::from_chars(dims.data() + pos, dims.data() + comma, d);
    if (ec != std::errc() || end != dims.data() + comma || d < 0) return std::nullopt;
    // Bytes must fit an int64_t, as everywhere else a tensor's size is computed.
    if (d > 0 && numel > (int64_t{1} << 59) / d) return std::nullopt;
    numel *= d;
    type.shape.push_back(d);
    pos = comma + 1;
  }
  return type;
}

class PlanReader {
 public:
  explicit PlanReader(const JsonReader& r) : r_(r) {}

  TensorType type(const Json& object, const std::string& where) const {
    std::string text = r_.string(object, where, "type");
    std::optional<TensorType> t = parse_tensor_type(text);
    if (!t) r_.fail(fmt::format("{}.type: '{}' is not a tensor type such as f32[8,64]", where, text));
    return *t;
  }

  std::vector<std::string> strings(const Json& object, const std::string& where, std::string_view key) const {
    std::vector<std::string> out;
    const Json& list = r_.array(object, where, key);
    for (size_t i = 0; i < list.size(); ++i) {
      if (!list[i].is_string()) r_.fail(JsonReader::at(JsonReader::at(where, key), i) + " must be a string");
      out.push_back(list[i].get<std::string>());
    }
    return out;
  }

  /// A list of stage indices (the stages range is checked later, with the stages).
  std::vector<int> stage_indices(const Json& object, const std::string& where, std::string_view key) const {
    std::vector<int> out;
    const Json& list = r_.array(object, where, key);
    for (size_t k = 0; k < list.size(); ++k) {
      if (!list[k].is_number_integer() || list[k].get<int64_t>() < 0 ||
          list[k].get<int64_t>() > std::numeric_limits<int>::max())
        r_.fail(JsonReader::at(JsonReader::at(where, key), k) + " must be a stage index");
      out.push_back(list[k].get<int>());
    }
    return out;
  }

  /// A parameter's piece_of, rows, whole_rows and, where they are not 0
  /// and 1, axis and segments (see ParamPiece).
  ParamPiece piece(const Json& object, const std::string& where) const {
    ParamPiece p;
    p.whole = r_.string(object, where, "piece_of");
    p.whole_rows = r_.integer(object, where, "whole_rows", 1);
    if (object.contains("axis")) p.axis = static_cast<int>(r_.integer(object, where, "axis", 0, 7));
    if (object.contains("segments")) p.segments = r_.integer(object, where, "segments", 1, p.whole_rows);
    if (p.whole_rows % p.segments != 0)
      r_.fail(fmt::format("{}.segments ({}) must divide whole_rows ({})", where, p.segments, p.whole_rows));
    const int64_t segment = p.whole_rows / p.segments;
    const Json& rows = r_.array(object, where, "rows");
    if (rows.size() != 2 || !rows[0].is_number_integer() || !rows[1].is_number_integer() ||
        rows[0].get<int64_t>() < 0 || rows[0].get<int64_t>() >= rows[1].get<int64_t>() ||
        rows[1].get<int64_t>() > segment)
      r_.fail(p.segments == 1
                  ? fmt::format("{}.rows must be [begin, end] with 0 <= begin < end <= whole_rows ({})", where,
                                p.whole_rows)
                  : fmt::format("{}.rows must be [begin, end] with 0 <= begin < end <= whole_rows / segments ({})",
                                where, segment));
    p.begin = rows[0].get<int64_t>();
    p.end = rows[1].get<int64_t>();
    return p;
  }

  std::string program(const Json& object, const std::string& where, std::string_view key) const {
    std::string text;
    for (const std::string& line : strings(object, where, key)) text += line + "\n";
    return text;
  }

  std::vector<PlanTensor> tensors(const Json& object, const std::string& where, std::string_view key,
                                  bool with_peer) const {
    std::vector<PlanTensor> out;
    const Json& list = r_.array(object, where, key);
    for (size_t i = 0; i < list.size(); ++i) {
      std::string at = JsonReader::at(JsonReader::at(where, key), i);
      const bool whole = !with_peer && list[i].is_object() && list[i].contains("whole");
      if (with_peer)
        r_.expect_keys(list[i], at, {"name", "type", "peer"});
      else if (whole)
        r_.expect_keys(list[i], at, {"name", "type", "whole"});
      else
        r_.expect_keys(list[i], at, {"name", "type"});
      PlanTensor t{r_.string(list[i], at, "name"), type(list[i], at), -1};
      if (with_peer) t.peer = static_cast<int>(r_.integer(list[i], at, "peer", 0, std::numeric_limits<int>::max()));
      if (whole) t.whole = r_.boolean(list[i], at, "whole");
      out.push_back(std::move(t));
    }
    return out;
  }

  PlanStage stage(const Json& j, const std::string& where) const {
    r_.expect_keys(
        j, where,
        {"index", "device", "layers", "predicted", "params", "inputs", "recv", "send", "program"},
        {"gradients", "split", "shards", "kept_whole"});
    constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
    PlanStage s;
    s.index = static_cast<int>(r_.integer(j, where, "index", 0, kMaxInt));
    s.device = static_cast<int>(r_.integer(j, where, "device", 0, kMaxInt));
    s.layers = strings(j, where, "layers");

    std::string pw = JsonReader::at(where, "predicted");
    const Json& p = r_.object(j, where, "predicted");
    r_.expect_keys(
        p, pw,
        {"forward_s", "backward_s", "comm_s", "time_s", "param_bytes", "stash_bytes", "memory_bytes", "bytes_sent"},
        {"sync_s", "backward_weight_s"});
    if (p.contains("sync_s")) s.predicted.sync_s = r_.number(p, pw, "sync_s", 0);
    if (p.contains("backward_weight_s")) s.predicted.backward_weight_s = r_.number(p, pw, "backward_weight_s", 0);
    s.predicted.forward_s = r_.number(p, pw, "forward_s", 0);
    s.predicted.backward_s = r_.number(p, pw, "backward_s", 0);
    s.predicted.comm_s = r_.number(p, pw, "comm_s", 0);
    s.predicted.time_s = r_.number(p, pw, "time_s", 0);
    s.predicted.param_bytes = r_.integer(p, pw, "param_bytes", 0);
    s.predicted.stash_bytes = r_.integer(p, pw, "stash_bytes", 0);
    s.predicted.memory_bytes = r_.integer(p, pw, "memory_bytes", 0);
    s.predicted.bytes_sent = r_.integer(p, pw, "bytes_sent", 0);

    s.params = params(j, where);
    s.inputs = tensors(j, where, "inputs", false);
    s.recv = tensors(j, where, "recv", true);
    s.send = tensors(j, where, "send", true);
    s.gradients = gradients_of(j, where);
    s.split = split_of(j, where);
    s.program = program(j, where, "program");
    if (j.contains("kept_whole")) s.kept_whole = strings(j, where, "kept_whole");
    if (j.contains("shards")) {
      const Json& shards = r_.array(j, where, "shards");
      for (size_t i = 0; i < shards.size(); ++i) {
        const std::string at = JsonReader::at(JsonReader::at(where, "shards"), i);
        r_.expect_keys(shards[i], at, {"params", "program"}, {"gradients", "split"});
        s.shards.push_back({program(shards[i], at, "program"), params(shards[i], at), gradients_of(shards[i], at),
                            split_of(shards[i], at)});
      }
    }
    return s;
  }

  std::vector<PlanParam> params(const Json& j, const std::string& where) const {
    std::vector<PlanParam> out;
    const Json& list = r_.array(j, where, "params");
    for (size_t i = 0; i < list.size(); ++i) {
      std::string at = JsonReader::at(JsonReader::at(where, "params"), i);
      r_.expect_keys(list[i], at, {"name", "type", "init", "shared_with"},
                     {"piece_of", "rows", "whole_rows", "axis", "segments"});
      PlanParam param{r_.string(list[i], at, "name"), type(list[i], at), r_.string(list[i], at, "init"), {}, {}};
      param.shared_with = stage_indices(list[i], at, "shared_with");
      if (list[i].contains("piece_of")) param.piece = piece(list[i], at);
      out.push_back(std::move(param));
    }
    return out;
  }

  std::optional<GradientProgram> gradients_of(const Json& j, const std::string& where) const {
    if (!j.contains("gradients")) return std::nullopt;
    return gradients(j, where);
  }

  std::optional<BackwardSplit> split_of(const Json& j, const std::string& where) const {
    if (!j.contains("split")) return std::nullopt;
    const std::string at = JsonReader::at(where, "split");
    const Json& split = r_.object(j, where, "split");
    r_.expect_keys(split, at, {"input", "weight", "deferred"});
    return BackwardSplit{r_.string(split, at, "input"), r_.string(split, at, "weight"), strings(split, at, "deferred")};
  }

  GradientProgram gradients(const Json& stage, const std::string& where) const {
    const std::string at = JsonReader::at(where, "gradients");
    const Json& j = r_.object(stage, where, "gradients");
    r_.expect_keys(j, at, {"backward", "results", "outputs", "seeds", "stash", "input_grads", "params"},
                   {"recomputed"});
    GradientProgram g;
    g.backward = r_.string(j, at, "backward");
    g.original_results = static_cast<int>(r_.integer(j, at, "results", 0, std::numeric_limits<int>::max()));
    const Json& outputs = r_.array(j, at, "outputs");
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].is_number_integer() || outputs[i].get<int64_t>() < 0 ||
          outputs[i].get<int64_t>() >= g.original_results)
        r_.fail(fmt::format("{} must be a result index below {}", JsonReader::at(JsonReader::at(at, "outputs"), i),
                            g.original_results));
      g.outputs.push_back(outputs[i].get<int>());
    }
    g.seeds = strings(j, at, "seeds");
    g.stash = strings(j, at, "stash");
    g.input_grads = strings(j, at, "input_grads");
    g.params = strings(j, at, "params");
    if (j.contains("recomputed")) g.recomputed = strings(j, at, "recomputed");
    return g;
  }

  Plan plan(const Json& doc) const {
    // "dtype" came later: a plan without it computes in f32; "tensor_parallel"
    // later still: a plan without it has 1; "recompute": none;
    // "optimizer_state": replicated; "sequence_parallel": false;
    // "expert_parallel" last: 1.
    r_.expect_keys(doc, "", {"format", "version", "model", "devices", "ranks", "schedule", "loss", "predicted", "stages"},
                   {"dtype", "tensor_parallel", "recompute", "optimizer_state", "sequence_parallel",
                    "expert_parallel"});
    Plan plan;
    const Json& model = r_.object(doc, "", "model");
    r_.expect_keys(model, "model", {"name", "source", "hash", "binding"});
    plan.model_name = r_.string(model, "model", "name");
    plan.model_source = r_.string(model, "model", "source");
    plan.model_hash = r_.string(model, "model", "hash");
    const Json& binding = r_.object(model, "model", "binding");
    for (const auto& item : binding.items())
      plan.binding[item.key()] = r_.integer(binding, "model.binding", item.key(), 1);

    const Json& devices = r_.array(doc, "", "devices");
    for (size_t i = 0; i < devices.size(); ++i) {
      std::string at = JsonReader::at("devices", i);
      r_.expect_keys(devices[i], at, {"name", "kind", "memory_bytes", "threads"});
      PlanDevice d;
      d.name = r_.string(devices[i], at, "name");
      d.kind = r_.string(devices[i], at, "kind");
      if (d.kind != "cpu" && d.kind != "cuda")
        r_.fail(fmt::format("{}.kind must be \"cpu\" or \"cuda\", got \"{}\"", at, d.kind));
      d.memory_bytes = r_.integer(devices[i], at, "memory_bytes", 0);
      d.threads = static_cast<int>(r_.integer(devices[i], at, "threads", 1, std::numeric_limits<int>::max()));
      plan.devices.push_back(std::move(d));
    }

    const Json& schedule = r_.object(doc, "", "schedule");
    r_.expect_keys(schedule, "schedule", {"kind", "microbatches", "virtual_stages"}, {"actions"});
    plan.schedule = r_.string(schedule, "schedule", "kind");
    if (plan.schedule == "custom")
      plan.schedule_actions = program(schedule, "schedule", "actions");
    else if (schedule.contains("actions"))
      r_.fail(fmt::format("schedule.actions belongs to a custom schedule, and this plan's is {}", plan.schedule));
    plan.microbatches = static_cast<int>(r_.integer(schedule, "schedule", "microbatches", 1, 1 << 20));
    plan.virtual_stages = static_cast<int>(r_.integer(schedule, "schedule", "virtual_stages", 1, 1 << 20));
    plan.loss_stage_output = r_.string(doc, "", "loss");
    if (doc.contains("dtype")) {
      const std::string dtype = r_.string(doc, "", "dtype");
      if (dtype != "f32" && dtype != "bf16")
        r_.fail(fmt::format("dtype must be \"f32\" or \"bf16\", got \"{}\"", dtype));
      plan.dtype = *parse_dtype(dtype);
    }
    if (doc.contains("tensor_parallel"))
      plan.tensor_parallel = static_cast<int>(r_.integer(doc, "", "tensor_parallel", 1, 1 << 20));
    if (doc.contains("sequence_parallel")) plan.sequence_parallel = r_.boolean(doc, "", "sequence_parallel");
    if (doc.contains("expert_parallel"))
      plan.expert_parallel = static_cast<int>(r_.integer(doc, "", "expert_parallel", 1, 1 << 20));
    if (doc.contains("recompute")) {
      plan.recompute = r_.string(doc, "", "recompute");
      if (plan.recompute != "none" && plan.recompute != "layers" && plan.recompute != "selective")
        r_.fail(fmt::format("recompute must be \"none\", \"layers\" or \"selective\", got \"{}\"", plan.recompute));
    }
    if (doc.contains("optimizer_state")) {
      const std::string state = r_.string(doc, "", "optimizer_state");
      if (state != "sharded" && state != "replicated")
        r_.fail(fmt::format("optimizer_state must be \"sharded\" or \"replicated\", got \"{}\"", state));
      plan.shard_optimizer = state == "sharded";
    }

    const Json& predicted = r_.object(doc, "", "predicted");
    // "step_s" and "mfu" came later: older plans read them as 0.
    r_.expect_keys(predicted, "predicted",
                   {"period_s", "imbalance_pct", "speedup_vs_equal_layers", "speedup_vs_equal_params",
                    "bubble_fraction"},
                   {"step_s", "mfu"});
    plan.predicted.period_s = r_.number(predicted, "predicted", "period_s", 0);
    plan.predicted.imbalance_pct = r_.number(predicted, "predicted", "imbalance_pct", 0);
    plan.predicted.speedup_vs_equal_layers = r_.number(predicted, "predicted", "speedup_vs_equal_layers", 0);
    plan.predicted.speedup_vs_equal_params = r_.number(predicted, "predicted", "speedup_vs_equal_params", 0);
    plan.predicted.bubble_fraction = r_.number(predicted, "predicted", "bubble_fraction", 0);
    if (predicted.contains("step_s")) plan.predicted.step_s = r_.number(predicted, "predicted", "step_s", 0);
    if (predicted.contains("mfu")) plan.predicted.mfu = r_.number(predicted, "predicted", "mfu", 0);

    const Json& stages = r_.array(doc, "", "stages");
    for (size_t i = 0; i < stages.size(); ++i) plan.stages.push_back(stage(stages[i], JsonReader::at("stages", i)));

    const Json& ranks = r_.array(doc, "", "ranks");
    for (size_t i = 0; i < ranks.size(); ++i) {
      const std::string at = JsonReader::at("ranks", i);
      r_.expect_keys(ranks[i], at, {"rank", "device", "replica", "stages"}, {"shard"});
      constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
      PlanRank rank;
      rank.rank = static_cast<int>(r_.integer(ranks[i], at, "rank", 0, kMaxInt));
      rank.device = static_cast<int>(r_.integer(ranks[i], at, "device", 0, kMaxInt));
      rank.replica = static_cast<int>(r_.integer(ranks[i], at, "replica", 0, kMaxInt));
      if (ranks[i].contains("shard")) rank.shard = static_cast<int>(r_.integer(ranks[i], at, "shard", 0, kMaxInt));
      rank.stages = stage_indices(ranks[i], at, "stages");
      plan.ranks.push_back(std::move(rank));
    }
    return plan;
  }

 private:
  const JsonReader& r_;
};

}  // namespace

Plan plan_from_json(const std::string& text, const std::string& path, std::vector<Module>* programs) {
  Json doc = parse_json_document(text, path);
  JsonReader r(path);
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != "pipeforge-plan")
    r.fail("not a pipeforge plan (no \"format\": \"pipeforge-plan\")");
  const Json& version = r.member(doc, "", "version");
  if (!version.is_number_integer()) r.fail("version must be an integer");
  if (version.get<int64_t>() < Plan::kVersion)
    r.fail(fmt::format("version {} was written by an older pipeforge (this one reads version {}); compile the model "
                       "again",
                       version.get<int64_t>(), Plan::kVersion));
  if (version.get<int64_t>() != Plan::kVersion)
    r.fail(fmt::format("version {} is not supported by this pipeforge (it reads version {})", version.get<int64_t>(),
                       Plan::kVersion));
  Plan plan = PlanReader(r).plan(doc);
  check_plan(plan, path, programs);
  return plan;
}

Plan load_plan(const std::string& path, std::vector<Module>* programs) {
  return plan_from_json(read_source_file(path)->text(), path, programs);
}

}  // namespace pf
