// The plan file: JSON writing and reading, and the checks that make a loaded plan safe to run.
#include "plan/plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "ir/diagnostic.h"
#include "ir/module.h"
#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf {

using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// Writing a plan.

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

Json stage_json(const PlanStage& s) {
  Json params = Json::array();
  for (const PlanParam& p : s.params) {
    Json param = {{"name", p.name}, {"type", p.type.str()}, {"init", p.init}, {"shared_with", p.shared_with}};
    if (p.piece) {
      param["piece_of"] = p.piece->whole;
      param["rows"] = {p.piece->begin, p.piece->end};
      param["whole_rows"] = p.piece->whole_rows;
    }
    params.push_back(std::move(param));
  }
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
      {"params", params},
      {"inputs", tensors_json(s.inputs, false)},
      {"recv", tensors_json(s.recv, true)},
      {"send", tensors_json(s.send, true)},
  };
  // Only a plan of several replicas synchronises gradients.
  if (pr.sync_s > 0) j["predicted"]["sync_s"] = finite(pr.sync_s, where + "sync_s");
  if (s.gradients) {
    const GradientProgram& g = *s.gradients;
    j["gradients"] = {{"backward", g.backward},   {"results", g.original_results}, {"outputs", g.outputs},
                      {"seeds", g.seeds},              {"stash", g.stash},
                      {"input_grads", g.input_grads}, {"params", g.params}};
    if (!g.recomputed.empty()) j["gradients"]["recomputed"] = g.recomputed;
  }
  if (s.split) j["split"] = {{"input", s.split->input}, {"weight", s.split->weight}, {"deferred", s.split->deferred}};
  j["program"] = program_lines(s.program);
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
  for (const PlanRank& r : plan.ranks)
    ranks.push_back({{"rank", r.rank}, {"device", r.device}, {"replica", r.replica}, {"stages", r.stages}});
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
  return format_json(doc, {"program"});
}

void save_plan(const Plan& plan, const std::string& path) { write_file_atomically(path, plan_to_json(plan)); }

// ---------------------------------------------------------------------------
// Reading a plan: the fields and their types.

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

  /// A parameter's piece_of, rows and whole_rows (rows within the whole's).
  ParamPiece piece(const Json& object, const std::string& where) const {
    ParamPiece p;
    p.whole = r_.string(object, where, "piece_of");
    p.whole_rows = r_.integer(object, where, "whole_rows", 1);
    const Json& rows = r_.array(object, where, "rows");
    if (rows.size() != 2 || !rows[0].is_number_integer() || !rows[1].is_number_integer() ||
        rows[0].get<int64_t>() < 0 || rows[0].get<int64_t>() >= rows[1].get<int64_t>() ||
        rows[1].get<int64_t>() > p.whole_rows)
      r_.fail(fmt::format("{}.rows must be [begin, end] with 0 <= begin < end <= whole_rows ({})", where,
                          p.whole_rows));
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
        {"gradients", "split"});
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
        {"sync_s"});
    if (p.contains("sync_s")) s.predicted.sync_s = r_.number(p, pw, "sync_s", 0);
    s.predicted.forward_s = r_.number(p, pw, "forward_s", 0);
    s.predicted.backward_s = r_.number(p, pw, "backward_s", 0);
    s.predicted.comm_s = r_.number(p, pw, "comm_s", 0);
    s.predicted.time_s = r_.number(p, pw, "time_s", 0);
    s.predicted.param_bytes = r_.integer(p, pw, "param_bytes", 0);
    s.predicted.stash_bytes = r_.integer(p, pw, "stash_bytes", 0);
    s.predicted.memory_bytes = r_.integer(p, pw, "memory_bytes", 0);
    s.predicted.bytes_sent = r_.integer(p, pw, "bytes_sent", 0);

    const Json& params = r_.array(j, where, "params");
    for (size_t i = 0; i < params.size(); ++i) {
      std::string at = JsonReader::at(JsonReader::at(where, "params"), i);
      r_.expect_keys(params[i], at, {"name", "type", "init", "shared_with"}, {"piece_of", "rows", "whole_rows"});
      PlanParam param{r_.string(params[i], at, "name"), type(params[i], at), r_.string(params[i], at, "init"), {}, {}};
      param.shared_with = stage_indices(params[i], at, "shared_with");
      if (params[i].contains("piece_of")) param.piece = piece(params[i], at);
      s.params.push_back(std::move(param));
    }
    s.inputs = tensors(j, where, "inputs", false);
    s.recv = tensors(j, where, "recv", true);
    s.send = tensors(j, where, "send", true);
    if (j.contains("gradients")) s.gradients = gradients(j, where);
    if (j.contains("split")) {
      const std::string at = JsonReader::at(where, "split");
      const Json& split = r_.object(j, where, "split");
      r_.expect_keys(split, at, {"input", "weight", "deferred"});
      s.split = BackwardSplit{r_.string(split, at, "input"), r_.string(split, at, "weight"),
                              strings(split, at, "deferred")};
    }
    s.program = program(j, where, "program");
    return s;
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
    // later still: a plan without it has 1; "recompute" last: none.
    r_.expect_keys(doc, "", {"format", "version", "model", "devices", "ranks", "schedule", "loss", "predicted", "stages"},
                   {"dtype", "tensor_parallel", "recompute"});
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
    r_.expect_keys(schedule, "schedule", {"kind", "microbatches", "virtual_stages"});
    plan.schedule = r_.string(schedule, "schedule", "kind");
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
    if (doc.contains("recompute")) {
      plan.recompute = r_.string(doc, "", "recompute");
      if (plan.recompute != "none" && plan.recompute != "layers" && plan.recompute != "selective")
        r_.fail(fmt::format("recompute must be \"none\", \"layers\" or \"selective\", got \"{}\"", plan.recompute));
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
      r_.expect_keys(ranks[i], at, {"rank", "device", "replica", "stages"});
      constexpr int64_t kMaxInt = std::numeric_limits<int>::max();
      PlanRank rank;
      rank.rank = static_cast<int>(r_.integer(ranks[i], at, "rank", 0, kMaxInt));
      rank.device = static_cast<int>(r_.integer(ranks[i], at, "device", 0, kMaxInt));
      rank.replica = static_cast<int>(r_.integer(ranks[i], at, "replica", 0, kMaxInt));
      rank.stages = stage_indices(ranks[i], at, "stages");
      plan.ranks.push_back(std::move(rank));
    }
    return plan;
  }

 private:
  const JsonReader& r_;
};

// ---------------------------------------------------------------------------
// Reading a plan: what the fields must mean together.

std::string tensor_text(const PlanTensor& t) { return t.name + " " + t.type.str(); }

class PlanChecker {
 public:
  PlanChecker(const Plan& plan, const JsonReader& r, std::vector<Module>* programs)
      : plan_(plan), r_(r), programs_(programs) {}

  void check() {
    check_devices();
    check_stage_numbers();
    check_ranks();
    for (const PlanStage& s : plan_.stages) check_tensor_lists(s);
    check_batch_inputs();
    for (const PlanStage& s : plan_.stages) check_received(s);
    for (const PlanStage& s : plan_.stages) check_sent(s);
    check_tied_params();
    for (const PlanStage& s : plan_.stages) {
      Module m = check_programs(s);
      if (programs_) programs_->push_back(std::move(m));
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { r_.fail(what); }
  int stage_count() const { return static_cast<int>(plan_.stages.size()); }

  void check_devices() const {
    if (plan_.devices.empty()) fail("the plan has no devices");
    for (size_t i = 0; i < plan_.devices.size(); ++i)
      for (size_t k = 0; k < i; ++k)
        if (plan_.devices[k].name == plan_.devices[i].name)
          fail(fmt::format("devices {} and {} are both named {}", k, i, plan_.devices[i].name));
  }

  void check_stage_numbers() const {
    if (plan_.stages.empty()) fail("the plan has no stages");
    int n = stage_count();
    for (int i = 0; i < n; ++i) {
      const PlanStage& s = plan_.stages[i];
      if (s.index != i)
        fail(fmt::format("stages[{}] has index {}; stages must be numbered 0..{} in order", i, s.index, n - 1));
      int devices = static_cast<int>(plan_.devices.size());
      if (s.device >= devices)
        fail(fmt::format("stage {} runs on device {}, but the plan has {} device{} (0..{})", i, s.device, devices,
                         devices == 1 ? "" : "s", devices - 1));
    }
  }

  // The topology: ranks 0.. in order, replica after replica, each replica
  // running every stage in exactly one rank; the k-th rank of every replica
  // runs the same stages, those of replica 0 on the stages' own devices, and
  // no two ranks share a device.
  void check_ranks() const {
    if (plan_.ranks.empty()) fail("the plan has no ranks");
    const int replicas = replica_count(plan_);
    if (plan_.ranks.size() % static_cast<size_t>(replicas) != 0)
      fail(fmt::format("{} ranks do not make {} replicas of equal size", plan_.ranks.size(), replicas));
    const size_t per_replica = plan_.ranks.size() / static_cast<size_t>(replicas);
    std::vector<std::vector<int>> rank_of(static_cast<size_t>(replicas), std::vector<int>(plan_.stages.size(), -1));
    std::set<int> devices;
    for (size_t i = 0; i < plan_.ranks.size(); ++i) {
      const PlanRank& r = plan_.ranks[i];
      if (r.rank != static_cast<int>(i))
        fail(fmt::format("ranks[{}] has rank {}; ranks must be numbered 0..{} in order", i, r.rank,
                         plan_.ranks.size() - 1));
      if (r.replica != static_cast<int>(i / per_replica))
        fail(fmt::format("rank {} belongs to replica {}, but with {} ranks per replica it is in replica {}; list "
                         "the ranks replica after replica",
                         r.rank, r.replica, per_replica, i / per_replica));
      if (r.device >= static_cast<int>(plan_.devices.size()))
        fail(fmt::format("rank {} runs device {}, but the plan has {} devices", r.rank, r.device,
                         plan_.devices.size()));
      if (!devices.insert(r.device).second)
        fail(fmt::format("rank {} runs device {}, which another rank runs", r.rank, r.device));
      if (r.stages.empty()) fail(fmt::format("rank {} runs no stage", r.rank));
      const PlanRank& first = plan_.ranks[i % per_replica];
      if (r.stages != first.stages)
        fail(fmt::format("rank {} of replica {} runs other stages than rank {} of replica 0", r.rank, r.replica,
                         first.rank));
      std::vector<int>& owner = rank_of[static_cast<size_t>(r.replica)];
      for (size_t k = 0; k < r.stages.size(); ++k) {
        const int s = r.stages[k];
        if (s >= stage_count()) fail(fmt::format("rank {} runs stage {}, but the plan has {} stages", r.rank, s,
                                                 stage_count()));
        if (k > 0 && s <= r.stages[k - 1])
          fail(fmt::format("rank {} lists its stages out of order: {} after {}", r.rank, s, r.stages[k - 1]));
        if (owner[static_cast<size_t>(s)] >= 0)
          fail(fmt::format("stage {} is run by ranks {} and {}", s, owner[static_cast<size_t>(s)], r.rank));
        owner[static_cast<size_t>(s)] = r.rank;
        if (r.replica == 0 && plan_.stages[static_cast<size_t>(s)].device != r.device)
          fail(fmt::format("rank {} runs device {}, but its stage {} is placed on device {}", r.rank, r.device, s,
                           plan_.stages[static_cast<size_t>(s)].device));
      }
    }
    for (size_t s = 0; s < plan_.stages.size(); ++s)
      if (rank_of[0][s] < 0) fail(fmt::format("no rank runs stage {}", s));
  }

  void check_peer(const PlanStage& s, const PlanTensor& t, std::string_view verb, std::string_view dir) const {
    if (t.peer == s.index) fail(fmt::format("stage {} {} {} {} itself", s.index, verb, t.name, dir));
    if (t.peer >= stage_count())
      fail(fmt::format("stage {} {} {} {} stage {}, but the plan has {} stages", s.index, verb, t.name, dir, t.peer,
                       stage_count()));
  }

  // Names a stage's forward graph takes must be distinct; so must what it
  // sends to one peer.
  void check_tensor_lists(const PlanStage& s) const {
    std::set<std::string> inputs, received;
    for (const PlanTensor& t : s.inputs)
      if (!inputs.insert(t.name).second) fail(fmt::format("stage {} reads {} from the batch twice", s.index, t.name));
    for (const PlanTensor& t : s.recv) {
      check_peer(s, t, "receives", "from");
      if (inputs.count(t.name))
        fail(fmt::format("stage {} both reads {} from the batch and receives it", s.index, t.name));
      if (!received.insert(t.name).second) fail(fmt::format("stage {} receives {} twice", s.index, t.name));
    }
    std::set<std::pair<std::string, int>> sent;
    for (const PlanTensor& t : s.send) {
      check_peer(s, t, "sends", "to");
      if (!sent.insert({t.name, t.peer}).second)
        fail(fmt::format("stage {} sends {} to stage {} twice", s.index, t.name, t.peer));
    }
  }

  // Stages reading the same batch input read it alike: one micro-batch type,
  // split or whole; a split one has an axis to split.
  void check_batch_inputs() const {
    std::map<std::string, const PlanTensor*> first;
    for (const PlanStage& s : plan_.stages)
      for (const PlanTensor& t : s.inputs) {
        if (!t.whole && t.type.shape.empty())
          fail(fmt::format("stage {} reads {} {} split into micro-batches, but it has no axis to split; mark it "
                           "whole",
                           s.index, t.name, t.type.str()));
        auto [it, added] = first.emplace(t.name, &t);
        if (!added && (it->second->type != t.type || it->second->whole != t.whole))
          fail(fmt::format("stages read batch input {} differently: {}{} and {}{}", t.name, it->second->type.str(),
                           it->second->whole ? " whole" : "", t.type.str(), t.whole ? " whole" : ""));
      }
  }

  static const PlanTensor* find(const std::vector<PlanTensor>& list, const std::string& name, int peer) {
    for (const PlanTensor& t : list)
      if (t.name == name && t.peer == peer) return &t;
    return nullptr;
  }

  // Every tensor received is sent by its peer with the same type.
  void check_received(const PlanStage& s) const {
    for (const PlanTensor& t : s.recv) {
      const PlanStage& from = plan_.stages[t.peer];
      const PlanTensor* sent = find(from.send, t.name, s.index);
      if (!sent) {
        std::string others;
        for (const PlanTensor& o : from.send)
          if (o.name == t.name) others += (others.empty() ? "" : ", ") + std::to_string(o.peer);
        fail(fmt::format("stage {} receives {} from stage {}, but stage {} sends {}", s.index, tensor_text(t), t.peer,
                         t.peer, others.empty() ? "no " + t.name : fmt::format("{} only to stage {}", t.name, others)));
      }
      if (sent->type != t.type)
        fail(fmt::format("stage {} receives {} from stage {}, but stage {} sends {} as {}", s.index, tensor_text(t),
                         t.peer, t.peer, t.name, sent->type.str()));
    }
  }

  // Every tensor sent is received (its type was compared above).
  void check_sent(const PlanStage& s) const {
    for (const PlanTensor& t : s.send)
      if (!find(plan_.stages[t.peer].recv, t.name, s.index))
        fail(fmt::format("stage {} sends {} to stage {}, but stage {} receives no {} from stage {}", s.index,
                         tensor_text(t), t.peer, t.peer, t.name, s.index));
  }

  static const PlanParam* find_param(const PlanStage& s, const std::string& name) {
    for (const PlanParam& p : s.params)
      if (p.name == name) return &p;
    return nullptr;
  }

  static bool lists(const PlanParam& p, int stage) {
    return std::find(p.shared_with.begin(), p.shared_with.end(), stage) != p.shared_with.end();
  }

  // A parameter's name is its checkpoint key: stages holding the same name
  // hold one tied parameter, and each copy lists every other.
  void check_tied_params() const {
    std::map<std::string, std::vector<int>> holders;
    for (const PlanStage& s : plan_.stages) {
      std::set<std::string> names;
      for (const PlanParam& p : s.params) {
        if (!names.insert(p.name).second) fail(fmt::format("stage {} lists parameter {} twice", s.index, p.name));
        holders[p.name].push_back(s.index);
        for (size_t k = 0; k < p.shared_with.size(); ++k) {
          int other = p.shared_with[k];
          if (other == s.index) fail(fmt::format("stage {} shares parameter {} with itself", s.index, p.name));
          if (other >= stage_count())
            fail(fmt::format("stage {} shares parameter {} with stage {}, but the plan has {} stages", s.index, p.name,
                             other, stage_count()));
          if (k > 0 && other <= p.shared_with[k - 1])
            fail(fmt::format("stage {}: the shared_with list of parameter {} must be increasing", s.index, p.name));
          if (!find_param(plan_.stages[other], p.name))
            fail(fmt::format("stage {} shares parameter {} with stage {}, but stage {} has no parameter {}", s.index,
                             p.name, other, other, p.name));
        }
      }
    }
    for (const auto& [name, stages] : holders) {
      const PlanParam& first = *find_param(plan_.stages[stages[0]], name);
      for (int a : stages) {
        const PlanParam& pa = *find_param(plan_.stages[a], name);
        for (int b : stages) {
          if (a == b || lists(pa, b)) continue;
          if (lists(*find_param(plan_.stages[b], name), a))
            fail(
                fmt::format("stage {} shares parameter {} with stage {}, but stage {} does not list stage {} in its "
                            "shared_with",
                            b, name, a, a, b));
          fail(
              fmt::format("stages {} and {} both hold a parameter {} without listing each other in shared_with; a "
                          "parameter's name is its checkpoint key, so they must be one tied parameter or be renamed",
                          std::min(a, b), std::max(a, b), name));
        }
        if (pa.type != first.type)
          fail(fmt::format("parameter {} is {} on stage {} but {} on stage {}", name, first.type.str(), stages[0],
                           pa.type.str(), a));
        if (pa.init != first.init)
          fail(fmt::format("parameter {} is initialized with {} on stage {} but {} on stage {}", name, first.init,
                           stages[0], pa.init, a));
      }
    }
  }

  // Parses and verifies a stage's program; its errors are located in the
  // program's own text (line and column of the IR, the line quoted).
  Module program(const PlanStage& s) const {
    if (s.program.empty()) fail(fmt::format("stage {} has no program", s.index));
    try {
      Module m = stage_program(plan_, s);
      for (const Function& f : m.functions)
        for (const Op& op : f.ops)
          if (op.kind == OpKind::call)
            throw Error(fmt::format("calls @{}; stage programs must be inlined", op.callee), op.loc);
      return m;
    } catch (const Error& e) {
      std::string message = e.message();
      if (e.location().known()) {
        // render() is "name:line:col: error: message\n<line>\n<caret>\n";
        // keep the quoted line and the caret.
        std::string rendered = e.render();
        std::string quote = rendered.substr(rendered.find('\n') + 1);
        if (!quote.empty() && quote.back() == '\n') quote.pop_back();
        message = fmt::format("{}:{}: {}\n{}", e.location().line, e.location().col, message, quote);
      }
      fail(fmt::format("stage {}'s program: {}", s.index, message));
    }
  }

  static std::vector<std::string> names(const Function& f, const std::vector<ValueId>& values) {
    std::vector<std::string> out;
    for (ValueId v : values) out.push_back(f.values[v].name);
    return out;
  }

  /// `f`'s arguments or results (`what`) must be the names `want`, in order.
  void check_names(const PlanStage& s, const Function& f, const char* what, const std::vector<ValueId>& values,
                   const std::vector<std::string>& want, std::string_view meaning) const {
    const std::vector<std::string> have = names(f, values);
    if (have != want)
      fail(fmt::format("stage {}'s program: @{} {} ({}); the stage's gradient table says {}: ({})", s.index, f.name,
                       what, fmt::join(have, ", "), meaning, fmt::join(want, ", ")));
  }

  const Function& function(const PlanStage& s, const Module& m, const std::string& name, const char* role) const {
    const Function* f = m.find_function(name);
    if (!f) fail(fmt::format("stage {}'s program has no @{} ({})", s.index, name, role));
    return *f;
  }

  Module check_programs(const PlanStage& s) const {
    Module m = program(s);
    const Function& g = m.graph();

    // Arguments: exactly the batch inputs and the received tensors.
    std::map<std::string, const PlanTensor*> takes;
    for (const PlanTensor& t : s.inputs) takes[t.name] = &t;
    for (const PlanTensor& t : s.recv) takes[t.name] = &t;
    for (ValueId a : g.args) {
      const std::string& name = g.values[a].name;
      auto it = takes.find(name);
      if (it == takes.end())
        fail(fmt::format("stage {}'s program takes %{} {}, but the stage neither receives it nor reads it from the "
                         "batch",
                         s.index, name, g.type_of(a).str()));
      if (it->second->type != g.type_of(a))
        fail(fmt::format("stage {} takes {}, but its program takes %{} {}", s.index, tensor_text(*it->second), name,
                         g.type_of(a).str()));
      takes.erase(it);
    }
    if (!takes.empty())
      fail(fmt::format("stage {} takes {}, but its program has no argument %{}", s.index,
                       tensor_text(*takes.begin()->second), takes.begin()->first));

    // Sent tensors: values the graph returns as its own results (not the stash).
    const size_t own = s.gradients ? static_cast<size_t>(s.gradients->original_results) : g.returns.size();
    if (own > g.returns.size())
      fail(fmt::format("stage {}'s gradient table counts {} results, but @{} returns {}", s.index, own, g.name,
                       g.returns.size()));
    std::map<std::string, ValueId> results;
    for (size_t r = 0; r < own; ++r) results.emplace(g.values[g.returns[r]].name, g.returns[r]);
    for (const PlanTensor& t : s.send) {
      auto it = results.find(t.name);
      if (it == results.end())
        fail(fmt::format("stage {} sends {}, but its program does not return %{}", s.index, t.name, t.name));
      if (g.type_of(it->second) != t.type)
        fail(fmt::format("stage {} sends {}, but its program returns %{} {}", s.index, tensor_text(t), t.name,
                         g.type_of(it->second).str()));
    }

    // The loss: a float scalar returned by the last stage.
    const std::string& loss = plan_.loss_stage_output;
    if (s.index == stage_count() - 1 && !loss.empty()) {
      auto it = results.find(loss);
      if (it == results.end())
        fail(fmt::format("the loss is %{}, but the program of the last stage ({}) does not return it", loss, s.index));
      const TensorType& type = g.type_of(it->second);
      if (!type.is_scalar() || !is_float(type.dtype))
        fail(fmt::format("the loss %{} is {}; it must be a float scalar", loss, type.str()));
    }

    // Parameters: exactly the graph's `param` ops.
    std::map<std::string, const Op*> param_ops;
    for (const Op& op : g.ops)
      if (op.kind == OpKind::param) param_ops[g.values[op.results[0]].name] = &op;
    for (const PlanParam& p : s.params) {
      auto it = param_ops.find(p.name);
      if (it == param_ops.end())
        fail(fmt::format("stage {} lists parameter {}, but its program has no 'param' op %{}", s.index, p.name,
                         p.name));
      const TensorType& type = g.type_of(it->second->results[0]);
      if (type != p.type)
        fail(fmt::format("stage {} lists parameter {} as {}, but its program declares it {}", s.index, p.name,
                         p.type.str(), type.str()));
      std::string init = it->second->attr("init")->init.str();
      if (init != p.init)
        fail(fmt::format("stage {} lists parameter {} with init {}, but its program has init={}", s.index, p.name,
                         p.init, init));
      if (param_piece(*it->second) != p.piece)
        fail(fmt::format("stage {} lists parameter {} {}, but its program declares it {}", s.index, p.name,
                         p.piece ? "as a piece" : "whole", p.piece ? "otherwise" : "as a piece"));
      param_ops.erase(it);
    }
    if (!param_ops.empty())
      fail(fmt::format("stage {}'s program has parameter %{}, which the stage does not list", s.index,
                       param_ops.begin()->first));

    check_gradients(s, m);
    return m;
  }

  // The layout of the backward functions, which the runtime binds buffers
  // by: the graph returns its own results, then the stash; the backward
  // takes the seeds, then the stash, and returns the input gradients, then
  // the parameters'; its two parts likewise, with the deferred values
  // between them.
  void check_gradients(const PlanStage& s, const Module& m) const {
    const bool training = !plan_.loss_stage_output.empty();
    if (!s.gradients) {
      if (training)
        fail(fmt::format("stage {} has no gradients, but the plan trains (its loss is %{}); compile it again",
                         s.index, plan_.loss_stage_output));
      if (s.split) fail(fmt::format("stage {} splits a backward it does not have", s.index));
      return;
    }
    if (!training) fail(fmt::format("stage {} has gradients, but the plan has no loss to train", s.index));
    const GradientProgram& gp = *s.gradients;
    const Function& g = m.graph();
    if (gp.seeds.size() != gp.outputs.size())
      fail(fmt::format("stage {}'s gradient table has {} seeds for {} differentiated results", s.index,
                       gp.seeds.size(), gp.outputs.size()));
    for (const std::string& name : gp.input_grads)
      if (std::none_of(s.recv.begin(), s.recv.end(), [&](const PlanTensor& t) { return t.name == name; }))
        fail(fmt::format("stage {}'s gradient table differentiates %{}, which the stage does not receive", s.index,
                         name));
    std::vector<std::string> declared;  // differentiation's order of the parameters' gradients
    for (const Op& op : g.ops)
      if (op.kind == OpKind::param) declared.push_back(g.values[op.results[0]].name);
    if (gp.params != declared)
      fail(fmt::format("stage {}'s gradient table lists parameters ({}); its program declares them in the order ({})",
                       s.index, fmt::join(gp.params, ", "), fmt::join(declared, ", ")));
    std::vector<std::string> returns = names(g, {g.returns.begin(), g.returns.begin() + gp.original_results});
    returns.insert(returns.end(), gp.stash.begin(), gp.stash.end());
    check_names(s, g, "returns", g.returns, returns, "its results, then the stash");

    std::vector<std::string> args = gp.seeds;
    args.insert(args.end(), gp.stash.begin(), gp.stash.end());
    const Function& backward = function(s, m, gp.backward, "the backward");
    check_names(s, backward, "takes", backward.args, args, "the seeds, then the stash");
    check_param_grads(s, backward, gp.input_grads.size(), gp.params);
    if (plan_.recompute == "none" && !gp.recomputed.empty())
      fail(fmt::format("stage {}'s gradient table recomputes {} values, but the plan recomputes none", s.index,
                       gp.recomputed.size()));
    for (const std::string& name : gp.recomputed)
      if (g.find_value(name) < 0 || backward.find_value(name) < 0)
        fail(fmt::format("stage {}'s gradient table recomputes %{}, which its forward and backward do not both compute",
                         s.index, name));

    if (schedule_splits_backward(plan_.schedule) != s.split.has_value())
      fail(fmt::format("stage {} {} its backward, but schedule {} runs it {}", s.index,
                       s.split ? "splits" : "does not split", plan_.schedule, s.split ? "whole" : "in two parts"));
    if (!s.split) return;
    const BackwardSplit& split = *s.split;
    const Function& input = function(s, m, split.input, "the backward's input part");
    check_names(s, input, "takes", input.args, args, "the seeds, then the stash");
    if (input.returns.size() != gp.input_grads.size() + split.deferred.size())
      fail(fmt::format("stage {}'s program: @{} returns {} values; the stage's gradient table says {} input "
                       "gradients, then {} deferred values",
                       s.index, input.name, input.returns.size(), gp.input_grads.size(), split.deferred.size()));
    std::vector<std::string> weight_args = args;
    weight_args.insert(weight_args.end(), split.deferred.begin(), split.deferred.end());
    const Function& weight = function(s, m, split.weight, "the backward's weight part");
    check_names(s, weight, "takes", weight.args, weight_args, "the seeds, the stash, then the deferred values");
    check_param_grads(s, weight, 0, gp.params);
  }

  /// `f`'s results from `first` on: one per parameter of `params`, of its type.
  void check_param_grads(const PlanStage& s, const Function& f, size_t first,
                         const std::vector<std::string>& params) const {
    if (f.returns.size() != first + params.size())
      fail(fmt::format("stage {}'s program: @{} returns {} values; the stage's gradient table says {}", s.index,
                       f.name, f.returns.size(), first + params.size()));
    for (size_t p = 0; p < params.size(); ++p) {
      auto it = std::find_if(s.params.begin(), s.params.end(), [&](const PlanParam& q) { return q.name == params[p]; });
      if (it == s.params.end())
        fail(fmt::format("stage {}'s gradient table names parameter {}, which the stage does not list", s.index,
                         params[p]));
      const TensorType& type = f.type_of(f.returns[first + p]);
      if (type.shape != it->type.shape)
        fail(fmt::format("stage {}'s program: @{} returns {} as the gradient of {} {}", s.index, f.name, type.str(),
                         params[p], it->type.str()));
    }
  }

  const Plan& plan_;
  const JsonReader& r_;
  std::vector<Module>* programs_;
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

void check_plan(const Plan& plan, const std::string& path, std::vector<Module>* programs) {
  if (programs) programs->clear();
  PlanChecker(plan, JsonReader(path), programs).check();
}

Module stage_program(const Plan& plan, const PlanStage& stage) {
  Module m = parse_module_text(fmt::format("stage {} program", stage.index), stage.program);
  DimBinding binding = m.binding();
  for (auto& [dim, value] : binding)
    if (auto it = plan.binding.find(dim); it != plan.binding.end()) value = it->second;
  verify_module(m, binding);
  return m;
}

bool schedule_splits_backward(std::string_view kind) { return kind == "zb1" || kind == "zbv"; }

bool plan_recomputes(const Plan& plan) {
  return std::any_of(plan.stages.begin(), plan.stages.end(),
                     [](const PlanStage& s) { return s.gradients && !s.gradients->recomputed.empty(); });
}

std::vector<PlanRank> one_replica_ranks(const std::vector<PlanStage>& stages, int devices) {
  return replicated_ranks(stages, devices, 1);
}

int rank_of_stage(const Plan& plan, int stage, int replica) {
  for (const PlanRank& r : plan.ranks)
    if (r.replica == replica && std::find(r.stages.begin(), r.stages.end(), stage) != r.stages.end()) return r.rank;
  throw Error(fmt::format("no rank of replica {} runs stage {}", replica, stage));
}

RankView rank_view(const Plan& plan, int rank) {
  const PlanRank& r = plan.ranks.at(static_cast<size_t>(rank));
  RankView view;
  view.rank = r.rank;
  view.device = r.device;
  view.replica = r.replica;
  view.stages = r.stages;
  for (const PlanRank& other : plan.ranks) view.world.push_back(other.rank);
  std::set<int> neighbours;
  std::map<std::string, std::set<int>> tied;
  const int n = static_cast<int>(plan.stages.size());
  for (int s : r.stages) {
    for (int next : {s - 1, s + 1})
      if (next >= 0 && next < n && rank_of_stage(plan, next, r.replica) != rank)
        neighbours.insert(rank_of_stage(plan, next, r.replica));
    for (const PlanParam& p : plan.stages[static_cast<size_t>(s)].params) {
      if (p.shared_with.empty()) continue;
      std::set<int>& holders = tied[p.name];
      holders.insert(rank);
      for (int other : p.shared_with) holders.insert(rank_of_stage(plan, other, r.replica));
    }
  }
  view.neighbours.assign(neighbours.begin(), neighbours.end());
  for (const auto& [name, holders] : tied) view.tied.emplace_back(name, std::vector<int>(holders.begin(), holders.end()));
  for (const PlanRank& other : plan.ranks)
    if (other.replica == r.replica) view.replica_ranks.push_back(other.rank);
  for (int s : r.stages) {
    std::vector<int> copies;
    for (int k = 0; k < replica_count(plan); ++k) copies.push_back(rank_of_stage(plan, s, k));
    view.stage_replicas.emplace_back(s, std::move(copies));
  }
  return view;
}

std::string rank_name(const Plan& plan, int rank) {
  const PlanRank& r = plan.ranks.at(static_cast<size_t>(rank));
  return fmt::format("rank {} (stage{} {}, replica {})", rank, r.stages.size() == 1 ? "" : "s",
                     fmt::join(r.stages, ","), r.replica);
}

int replica_count(const Plan& plan) {
  int replicas = 1;
  for (const PlanRank& r : plan.ranks) replicas = std::max(replicas, r.replica + 1);
  return replicas;
}

std::vector<PlanRank> replicated_ranks(const std::vector<PlanStage>& stages, int devices, int replicas) {
  std::vector<PlanRank> ranks;
  for (int k = 0; k < replicas; ++k)
    for (int d = 0; d < devices; ++d) {
      PlanRank r{k * devices + d, k * devices + d, k, {}};
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

Plan load_plan(const std::string& path, std::vector<Module>* programs) {
  return plan_from_json(read_source_file(path)->text(), path, programs);
}

}  // namespace pf
