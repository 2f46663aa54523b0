// The Pipeforge runtime as a library: a Pipeline from a plan, weights, batches and checkpoints.
#include "runtime/runtime.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "backends/cpu/blas.h"
#include "ir/diagnostic.h"
#include "ir/units.h"
#include "plan/plan.h"
#include "runtime/checkpoint.h"
#include "runtime/pipeline.h"
#include "runtime/parameter_pieces.h"
#include "runtime/rank_gather.h"
#include "runtime/safetensors.h"
#include "support/host_memory.h"

namespace pf {

namespace {

// Metadata of a checkpoint file. The optimizer's kind and step count use the
// keys of Optimizer::save_state, so that Optimizer::load_state reads them.
constexpr const char* kFormatKey = "format";
constexpr const char* kFormat = "pipeforge-checkpoint";
constexpr const char* kVersionKey = "version";
constexpr const char* kVersion = "2";
constexpr const char* kModelKey = "model";
constexpr const char* kStepKey = "step";
constexpr const char* kOptimizerKey = "optimizer";
constexpr const char* kOptimizerStepKey = "optimizer.step";
constexpr const char* kPiecesKey = "pieces";  // the split parameters' pieces, when the plan has any

void check_options(const RuntimeOptions& o) {
  check_training_options(o.train, "runtime options");
  if (!(o.timeout_s > 0)) throw Error(fmt::format("runtime options: timeout_s must be positive, not {}", o.timeout_s));
  if (o.threads < 0)
    throw Error(fmt::format("runtime options: threads must be 0 (each device's own) or positive, not {}", o.threads));
}

using Json = nlohmann::ordered_json;

/// A non-negative decimal integer, or nullopt.
std::optional<int64_t> parse_count(const std::string& text) {
  bool digits = std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (text.empty() || text.size() > 18 || !digits) return std::nullopt;
  return std::stoll(text);
}

}  // namespace

struct Runtime::Impl {
  Plan plan;
  RuntimeOptions options;
  std::unique_ptr<Pipeline> pipeline;
  std::vector<std::pair<std::string, TensorType>> inputs;  // whole-batch types, in first-use order
  PipelineStepResult last;
  int64_t step = 0;
  bool has_weights = false;

  /// Every parameter once (a tied one is held by several stages, equal in all).
  std::vector<std::pair<std::string, TensorType>> parameter_types() const {
    std::vector<std::pair<std::string, TensorType>> out;
    std::set<std::string> seen;
    for (ParameterSet* set : pipeline->parameter_sets())
      for (const ParameterSet::Entry& e : set->entries())
        if (seen.insert(e.name).second) out.emplace_back(e.name, e.type);
    return out;
  }

  /// Every optimizer state buffer once, for the same reason.
  std::vector<StateBuffer> state_buffers() const {
    std::vector<StateBuffer> out;
    std::set<std::string> seen;
    for (Optimizer* opt : pipeline->optimizers())
      for (const StateBuffer& b : opt->state())
        if (seen.insert(b.name).second) out.push_back(b);
    return out;
  }

  /// The batch as the pipeline takes it, after checking it names every input
  /// once and nothing else.
  std::vector<std::pair<std::string, const void*>> checked(const Batch& batch) const {
    if (!has_weights)
      throw Error("the runtime has no weights yet: call initialize(), load_weights() or load_checkpoint() first");
    for (size_t i = 0; i < batch.inputs.size(); ++i) {
      const auto& [name, data] = batch.inputs[i];
      if (std::none_of(inputs.begin(), inputs.end(), [&](auto& in) { return in.first == name; })) {
        std::string known;
        for (const auto& in : inputs) known += (known.empty() ? "" : ", ") + in.first;
        throw Error(fmt::format("batch: unknown input '{}'; @{} takes {}", name, plan.model_name, known));
      }
      for (size_t j = 0; j < i; ++j)
        if (batch.inputs[j].first == name) throw Error(fmt::format("batch: input '{}' is given twice", name));
      if (data == nullptr) throw Error(fmt::format("batch: input '{}' is null", name));
    }
    for (const auto& [name, type] : inputs)
      if (std::none_of(batch.inputs.begin(), batch.inputs.end(), [&](auto& in) { return in.first == name; }))
        throw Error(fmt::format("batch: missing input '{}' ({})", name, type.str()));
    return batch.inputs;
  }

  /// Runs a collective between processes; one that another rank's failure
  /// ends throws that failure as a pf::Error.
  template <class F>
  auto collective(F&& f) const {
    try {
      return f();
    } catch (const CommAborted&) {
      throw Error(options.comm->error());
    } catch (const CommTimeout& t) {
      throw Error(t.message);
    }
  }

  /// Writes what this process's stages hold by name: between processes,
  /// rank 0 writes what every rank's stages hold.
  /// A parameter that the plan splits between stages is written whole.
  void write_gathered(SafeTensors local, const std::string& path) const {
    SafeTensors all = options.comm ? collective([&] { return gather_parameters(*options.comm, plan, 0, local); })
                                   : std::move(local);
    if (options.comm && options.comm->rank() != 0) return;
    join_pieces(all, plan_pieces(plan));
    all.write(path);
  }

  /// Starts training afresh from the current weights: new optimizer state.
  void restart() {
    pipeline->start();
    step = 0;
    has_weights = true;
  }
};

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Runtime::Runtime(Runtime&&) noexcept = default;
Runtime& Runtime::operator=(Runtime&&) noexcept = default;
Runtime::~Runtime() = default;

namespace {

// A plan compiled for devices with more memory than this machine has would
// page for minutes before anything failed: refused at once instead, by the
// peak the compiler predicted for the CPU stages this process runs.
void check_host_memory(const Plan& plan, const std::string& what, int rank) {
  int64_t need = 0;
  for (const PlanRank& r : plan.ranks) {
    if (rank >= 0 && r.rank != rank) continue;
    if (plan.devices.at(static_cast<size_t>(r.device)).kind != "cpu") continue;
    for (int s : r.stages) need += plan.stages.at(static_cast<size_t>(s)).predicted.memory_bytes;
  }
  const double have = host_memory_bytes();
  if (have <= 0 || static_cast<double>(need) <= have) return;
  throw Error(fmt::format("{}: the plan needs {} of memory here (the predicted peak of {}: weights, gradients, "
                          "optimizer state and activations in flight), but this machine has {}; compile it for more "
                          "devices, fewer samples per micro-batch or a smaller model",
                          what, format_bytes(static_cast<double>(need)),
                          rank >= 0 ? fmt::format("rank {}'s CPU stages", rank) : "its CPU stages",
                          format_bytes(have)));
}

/// Throws pf::Error when the stages a rank holds take more memory than its
/// device's `memory_bytes` says it has: naming the device, each of its
/// stages with what it holds, and the flags that lower it.
void check_device_memory(const Plan& plan, const std::vector<StageMemory>& stages, const std::string& what,
                         const std::string& optimizer) {
  std::map<int, std::vector<const StageMemory*>> by_rank;
  for (const StageMemory& m : stages) by_rank[m.rank].push_back(&m);
  for (const auto& [rank, held] : by_rank) {
    const int device = plan.ranks.at(static_cast<size_t>(rank)).device;
    const PlanDevice& d = plan.devices.at(static_cast<size_t>(device));
    int64_t total = 0;
    for (const StageMemory* m : held) total += m->total();
    if (d.memory_bytes <= 0 || total <= d.memory_bytes) continue;
    auto bytes = [](int64_t b) { return format_bytes(static_cast<double>(b)); };
    std::vector<std::string> parts;
    for (const StageMemory* m : held)
      parts.push_back(fmt::format("stage {} holds {} (weights {}, gradients {}, optimizer state {}, activations of {} "
                                  "micro-batch{} in flight {}, workspace {}{})",
                                  m->stage, bytes(m->total()), bytes(m->weights), bytes(m->gradients),
                                  bytes(m->optimizer_state), m->slots, m->slots == 1 ? "" : "es",
                                  bytes(m->activations), bytes(m->workspace),
                                  m->packed_weights ? fmt::format(", weights packed for the products {}",
                                                                  bytes(m->packed_weights))
                                                    : ""));
    throw Error(fmt::format("{}: {} needs {}, more than the {} the plan gives it (devices[{}].memory_bytes): {}; "
                            "lower it by compiling for more devices (--devices), more and smaller micro-batches "
                            "(--microbatches){}{}{}",
                            what, d.name, bytes(total), bytes(d.memory_bytes), device, fmt::join(parts, "; "),
                            plan.schedule == "gpipe" ? ", the 1f1b schedule (fewer in flight)" : "",
                            optimizer == "adamw" ? ", or training with --optimizer sgd (one state buffer, not two)"
                                                 : "",
                            std::any_of(held.begin(), held.end(), [](auto* m) { return m->packed_weights > 0; })
                                ? "; or run with --pack-weights off"
                                : ""));
  }
}

}  // namespace

Runtime Runtime::load(const std::string& plan_path, const RuntimeOptions& options) {
  check_options(options);
  std::vector<Module> programs;  // parsed once, while the plan is checked
  Plan plan = load_plan(plan_path, &programs);
  check_executable(plan);
  check_host_memory(plan, plan_path, options.comm ? options.rank : -1);
  return start(std::move(plan), std::move(programs), options, plan_path);
}

Runtime Runtime::from_plan(Plan plan, const std::string& what, const RuntimeOptions& options) {
  check_options(options);
  std::vector<Module> programs;
  check_plan(plan, what, &programs);
  check_executable(plan);
  check_host_memory(plan, what, options.comm ? options.rank : -1);
  return start(std::move(plan), std::move(programs), options, what);
}

Runtime Runtime::start(Plan plan, std::vector<Module> programs, const RuntimeOptions& options,
                       const std::string& what) {
  auto impl = std::make_unique<Impl>();
  impl->plan = std::move(plan);
  impl->options = options;
  // Each device's worker splits its kernels over a pool of its own, of the
  // device's threads; the process-wide budget stays one thread.
  cpu::set_cpu_threads(1);
  PipelineOptions po;
  po.cpu_threads = options.threads;
  po.pack_weights = options.pack_weights;
  po.train = options.train;
  po.timeout_s = options.timeout_s;
  po.trace = options.trace;
  if (options.comm) {
    const int ranks = static_cast<int>(impl->plan.ranks.size());
    if (options.comm->size() != ranks || options.comm->rank() != options.rank)
      throw Error(fmt::format("the communicator is rank {} of {}, but this process runs rank {} of a plan of {} ranks",
                              options.comm->rank(), options.comm->size(), options.rank, ranks));
    po.ranks = {options.rank};
    po.comm = options.comm;
  }
  impl->pipeline = Pipeline::from_plan(impl->plan, std::move(programs), po);
  // The optimizers exist from the start (their state zero), so that a
  // checkpoint can be checked against them before any weights are set.
  impl->pipeline->start();
  check_device_memory(impl->plan, impl->pipeline->memory(), what, options.train.optimizer);
  for (const PlanStage& stage : impl->plan.stages)
    for (const PlanTensor& t : stage.inputs) {
      if (std::any_of(impl->inputs.begin(), impl->inputs.end(), [&](auto& p) { return p.first == t.name; }))
        continue;
      TensorType whole = t.type;
      // A slice per micro-batch of each replica (the plan has the axis: loading checked).
      if (!t.whole) whole.shape[0] *= impl->plan.microbatches * replica_count(impl->plan);
      impl->inputs.emplace_back(t.name, whole);
    }
  return Runtime(std::move(impl));
}

void Runtime::initialize() { initialize(impl_->options.train.seed); }

void Runtime::initialize(uint64_t seed) {
  impl_->pipeline->initialize(seed);
  impl_->restart();
}

void Runtime::load_weights(const std::string& safetensors_path) {
  SafeTensors file = read_weights(safetensors_path);
  cut_pieces(file, plan_pieces(impl_->plan));
  // Every stage's parameters at once: a stage loading its part alone would
  // leave the earlier stages changed when a later one finds a problem.
  check_tensors(file, impl_->parameter_types(), safetensors_path, /*allow_unexpected=*/true);
  impl_->pipeline->load(file, safetensors_path);
  impl_->restart();
}

void Runtime::save_weights(const std::string& safetensors_path) const {
  SafeTensors file;
  impl_->pipeline->save_values(file);
  impl_->write_gathered(std::move(file), safetensors_path);
}

void Runtime::save_gradients(const std::string& safetensors_path) const {
  SafeTensors file;
  impl_->pipeline->save_grads(file);
  impl_->write_gathered(std::move(file), safetensors_path);
}

std::vector<std::pair<std::string, TensorType>> Runtime::parameters() const { return impl_->parameter_types(); }

void Runtime::read_parameters(const std::vector<std::pair<std::string, float*>>& out) const {
  // A tied or replicated parameter's copies are equal: the first one serves.
  std::map<std::string, const ParameterSet::Entry*, std::less<>> held;
  for (ParameterSet* set : impl_->pipeline->parameter_sets())
    for (const ParameterSet::Entry& e : set->entries()) held.emplace(e.name, &e);
  for (const auto& [name, data] : out)
    if (!held.contains(name))
      throw Error(fmt::format("read_parameters: @{} has no parameter '{}'", impl_->plan.model_name, name));
  impl_->pipeline->copy_to_host();  // CUDA stages' values
  for (const auto& [name, data] : out) {
    const std::vector<float>& value = held.at(name)->value;
    std::copy(value.begin(), value.end(), data);
  }
}

std::vector<std::pair<std::string, const float*>> Runtime::host_parameters() const {
  std::vector<std::pair<std::string, const float*>> out;
  if (!impl_->pipeline->parameters_on_host()) return out;
  std::set<std::string, std::less<>> seen;
  for (ParameterSet* set : impl_->pipeline->parameter_sets())
    for (const ParameterSet::Entry& e : set->entries())
      if (seen.insert(e.name).second) out.emplace_back(e.name, e.value.data());
  return out;
}

void Runtime::load_parameters(const std::vector<std::pair<std::string, const float*>>& values) {
  std::map<std::string, const float*, std::less<>> given;
  std::vector<std::string> problems;
  for (const auto& [name, data] : values)
    if (!given.emplace(name, data).second) problems.push_back(fmt::format("'{}' given twice", name));
  std::set<std::string> known;
  for (const auto& [name, type] : impl_->parameter_types()) {
    known.insert(name);
    if (!given.contains(name)) problems.push_back(fmt::format("missing '{}' ({})", name, type.str()));
  }
  for (const auto& [name, data] : given) {
    if (!known.contains(name)) problems.push_back(fmt::format("@{} has no parameter '{}'", impl_->plan.model_name, name));
    else if (data == nullptr) problems.push_back(fmt::format("'{}' is null", name));
  }
  if (!problems.empty()) throw Error(fmt::format("load_parameters: {}", fmt::join(problems, "; ")));
  // Every stage holding a parameter gets its values.
  for (ParameterSet* set : impl_->pipeline->parameter_sets())
    for (ParameterSet::Entry& e : set->entries()) std::copy_n(given.at(e.name), e.value.size(), e.value.begin());
  impl_->pipeline->copy_to_devices();  // CUDA stages' values
  impl_->restart();
}

std::vector<std::pair<std::string, TensorType>> Runtime::batch_inputs() const { return impl_->inputs; }

double Runtime::train_step(const Batch& batch) {
  PipelineStepResult r = impl_->pipeline->train_step(impl_->checked(batch));
  impl_->last = std::move(r);
  impl_->step += 1;
  return impl_->last.loss;
}

double Runtime::forward(const Batch& batch) {
  PipelineStepResult r = impl_->pipeline->forward(impl_->checked(batch));
  impl_->last = std::move(r);
  return impl_->last.loss;
}

const PipelineStepResult& Runtime::last_step() const { return impl_->last; }
int64_t Runtime::step() const { return impl_->step; }

namespace {

bool is_index_key(const std::string& key) {
  for (const char* own :
       {kFormatKey, kVersionKey, kModelKey, kStepKey, kOptimizerKey, kOptimizerStepKey, kPiecesKey, "shards"})
    if (key == own) return true;
  return false;
}

}  // namespace

void Runtime::save_checkpoint(const std::string& path, const CheckpointNotes& notes) const {
  if (!impl_->has_weights) throw Error(fmt::format("{}: the runtime has no weights to save yet", path));
  for (const auto& [key, value] : notes)
    if (is_index_key(key) || key.empty())
      throw Error(fmt::format("{}: a checkpoint note may not be called '{}': the index uses that key", path, key));
  Pipeline& pipeline = *impl_->pipeline;
  pipeline.copy_to_host();  // CUDA stages' weights and optimizer state
  // A shard per stage (a tied parameter in every stage holding it).
  Json entries = Json::array();
  for (const auto& [stage, shard] : impl_->collective([&] { return pipeline.checkpoint_shards(); }))
    entries.push_back(Json::parse(write_shard(path, stage, shard)));
  if (Communicator* comm = impl_->options.comm) {
    // Rank 0 writes the index once every shard is written.
    const std::string mine = entries.dump();
    const CommGroup world = CommGroup::world(static_cast<int>(impl_->plan.ranks.size()));
    const std::vector<std::string> texts = impl_->collective([&] { return gather_text(*comm, world, 0, mine); });
    if (comm->rank() != 0) return;
    entries = Json::array();
    for (const std::string& text : texts)
      for (Json& e : Json::parse(text)) entries.push_back(std::move(e));
  }
  std::sort(entries.begin(), entries.end(),
            [](const Json& a, const Json& b) { return a["stage"].get<int>() < b["stage"].get<int>(); });
  std::vector<std::string> texts;
  for (const Json& e : entries) texts.push_back(e.dump());
  const Optimizer& first = *pipeline.optimizers().front();
  CheckpointMeta meta = {{kFormatKey, kFormat},
                         {kVersionKey, kVersion},
                         {kModelKey, impl_->plan.model_name},
                         {kStepKey, std::to_string(impl_->step)},
                         {kOptimizerKey, std::string(first.kind())},
                         {kOptimizerStepKey, std::to_string(first.step_count())}};
  // The shards hold a split parameter in pieces; a reader joins them by this.
  if (const ParameterPieces pieces = plan_pieces(impl_->plan); !pieces.empty())
    meta[kPiecesKey] = pieces_to_text(pieces);
  meta.insert(notes.begin(), notes.end());  // checked above: no key of the index's own
  write_index(path, meta, texts);
}

CheckpointNotes Runtime::load_checkpoint(const std::string& path) {
  SafeTensors file = read_checkpoint(path);
  auto meta = [&](const char* key) -> std::string {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string() : it->second;
  };
  if (meta(kFormatKey) != kFormat)
    throw Error(fmt::format("{}: not a pipeforge checkpoint (its metadata has no format \"{}\"); a weights file "
                            "loads with --init-from (load_weights)",
                            path, kFormat));
  if (meta(kVersionKey) != kVersion)
    throw Error(fmt::format("{}: checkpoint version '{}'; this pipeforge reads version {}", path, meta(kVersionKey),
                            kVersion));
  const std::string& model = impl_->plan.model_name;
  if (meta(kModelKey) != model)
    throw Error(fmt::format("{}: a checkpoint of @{}, not of @{}", path, meta(kModelKey), model));
  if (meta(kOptimizerKey) != impl_->options.train.optimizer)
    throw Error(fmt::format("{}: the checkpoint holds {} state but this run trains with {}", path,
                            meta(kOptimizerKey), impl_->options.train.optimizer));
  std::optional<int64_t> step = parse_count(meta(kStepKey));
  if (!step) throw Error(fmt::format("{}: step is '{}', not a step count", path, meta(kStepKey)));
  if (!parse_count(meta(kOptimizerStepKey)))
    throw Error(fmt::format("{}: optimizer.step is '{}', not a step count", path, meta(kOptimizerStepKey)));
  // Parameters split between stages: whole as the writer's plan split them,
  // then cut as this plan splits them.
  if (!meta(kPiecesKey).empty()) join_pieces(file, pieces_from_text(meta(kPiecesKey), path));
  cut_pieces(file, plan_pieces(impl_->plan));

  // Every tensor, weights and optimizer state, before anything changes.
  std::vector<std::pair<std::string, TensorType>> expected = impl_->parameter_types();
  for (const StateBuffer& b : impl_->state_buffers()) expected.emplace_back(b.name, b.whole);
  // Between processes, the other ranks' stages' tensors are theirs to check.
  check_tensors(file, expected, path, /*allow_unexpected=*/impl_->options.comm != nullptr);

  // Nothing below can fail: the checks above are the ones these loaders make.
  impl_->pipeline->load(file, path);
  for (Optimizer* opt : impl_->pipeline->optimizers()) opt->load_state(file);
  impl_->pipeline->copy_to_devices();  // CUDA stages' optimizer state
  impl_->step = *step;
  impl_->has_weights = true;
  CheckpointNotes notes;
  for (const auto& [key, value] : file.metadata)
    if (!is_index_key(key)) notes.emplace(key, value);
  return notes;
}

const Plan& Runtime::plan() const { return impl_->plan; }
int Runtime::stages() const { return impl_->pipeline->stages(); }
int64_t Runtime::packed_weight_bytes() const {
  int64_t most = 0;
  for (const StageMemory& m : impl_->pipeline->memory()) most = std::max(most, m.packed_weights);
  return most;
}
int Runtime::devices() const { return impl_->pipeline->devices(); }

}  // namespace pf
