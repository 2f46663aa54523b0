// A pipeline's parameters, optimizers and per-op profiles, over the stages
// this process holds: initialised, loaded, saved and checkpointed by name.
#include <algorithm>
#include <map>

#include "runtime/pipeline.h"
#include "runtime/pipeline_stage.h"
#include "runtime/safetensors.h"

namespace pf {

std::vector<Optimizer*> Pipeline::optimizers() {
  std::vector<Optimizer*> out;
  for (PipelineStage* s : local_stages())
    if (s->optimizer) out.push_back(s->optimizer.get());
  return out;
}

std::vector<StageMemory> Pipeline::memory() const {
  std::vector<StageMemory> out;
  for (const PipelineStage* s : local_stages()) {
    StageMemory m;
    m.stage = s->index;
    m.rank = s->rank;
    const int64_t param_bytes = s->params.numel() * static_cast<int64_t>(sizeof(float));
    m.weights = m.gradients = param_bytes;
    if (s->optimizer)
      for (const StateBuffer& b : s->optimizer->state()) m.optimizer_state += b.type.bytes();
    m.slots = s->program->slots();
    m.activations = m.slots * s->program->stash_bytes();
    m.workspace = s->program->arena_bytes();
    for (const std::vector<int64_t>* per_mb : {&s->send_bytes, &s->send_grad_bytes})
      for (int64_t b : *per_mb) m.workspace += b * static_cast<int64_t>(s->sends.size());
    out.push_back(m);
  }
  return out;
}

void Pipeline::set_profile(bool on) {
  for (PipelineStage* s : local_stages()) s->program->set_profile(on);
}

void Pipeline::reset_profile() {
  for (PipelineStage* s : local_stages()) s->program->reset_profile();
}

std::vector<backend::OpTime> Pipeline::op_times(int stage) const {
  const PipelineStage* s = stages_.at(static_cast<size_t>(stage)).get();  // replica 0's
  return s ? s->program->op_times() : std::vector<backend::OpTime>{};
}

std::vector<ParameterSet*> Pipeline::parameter_sets() {
  std::vector<ParameterSet*> out;
  for (PipelineStage* s : local_stages()) out.push_back(&s->params);
  return out;
}

bool Pipeline::parameters_on_host() const {
  const std::vector<PipelineStage*> stages = local_stages();
  return std::all_of(stages.begin(), stages.end(), [](const PipelineStage* s) { return s->program->place().on_host(); });
}

void Pipeline::initialize(uint64_t seed) {
  for (PipelineStage* s : local_stages()) {
    s->params.initialize(seed);
    s->program->upload(nullptr);
  }
}

void Pipeline::load(const SafeTensors& file, const std::string& what) {
  for (PipelineStage* s : local_stages()) {
    s->params.load_values(file, what, /*allow_unexpected=*/true);
    s->program->upload(nullptr);
  }
}

void Pipeline::copy_to_host() {
  for (PipelineStage* s : local_stages()) s->program->download(s->optimizer.get());
}

void Pipeline::copy_to_devices() {
  for (PipelineStage* s : local_stages()) s->program->upload(s->optimizer.get());
}

namespace {

/// Every parameter the stages hold, a tied or replicated one once (its
/// copies are equal): its values, or its gradients.
void save_parameters(const std::vector<PipelineStage*>& stages, bool grads, SafeTensors& file) {
  std::map<std::string, bool> seen;
  for (PipelineStage* s : stages) {
    s->program->download(nullptr);
    for (const auto& e : s->params.entries())
      if (!seen[e.name]) {
        seen[e.name] = true;
        file.add(e.name, e.type, grads ? e.grad.data() : e.value.data());
      }
  }
}

}  // namespace

void Pipeline::save_grads(SafeTensors& file) const { save_parameters(local_stages(), true, file); }

void Pipeline::save_values(SafeTensors& file) const { save_parameters(local_stages(), false, file); }

std::vector<std::pair<int, SafeTensors>> Pipeline::checkpoint_shards() const {
  std::vector<std::pair<int, SafeTensors>> out;
  for (PipelineStage* s : local_stages()) {
    if (s->replica != 0) continue;  // the replicas hold the same numbers
    SafeTensors shard;
    for (const ParameterSet::Entry& e : s->params.entries()) shard.add(e.name, e.type, e.value.data());
    // A state buffer named like a parameter ("w.exp_avg" beside a parameter
    // "w.exp_avg") makes add() throw: the checkpoint would be ambiguous.
    for (const StateBuffer& b : s->optimizer->state()) shard.add(b.name, b.type, b.data);
    shard.metadata = {{"stage", std::to_string(s->index)}};
    out.emplace_back(s->index, std::move(shard));
  }
  return out;
}

void Pipeline::start() {
  const TrainingOptions& t = options_.train;
  for (PipelineStage* s : local_stages()) s->optimizer = s->program->make_optimizer(t);
  lr_ = t.cosine || t.warmup > 0 ? LrSchedule::warmup_cosine(t.lr, t.lr / 10, t.warmup, t.steps)
                                 : LrSchedule::constant(t.lr);
}

}  // namespace pf
