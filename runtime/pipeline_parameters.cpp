// A pipeline's parameters, optimizers and per-op profiles, over the stages
// this process holds: initialised, loaded, saved and checkpointed by name
// (a sharded optimizer's state put together from the replicas' shares).
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "ir/diagnostic.h"
#include "runtime/optimizer_shard.h"
#include "runtime/rank_gather.h"

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

int Pipeline::copy_rank(int stage, int replica, int place) const {
  return (replica * tensor_ + place) * schedule_.devices + schedule_.device_of(stage);
}

PipelineStage* Pipeline::copy_here(int stage, int replica, int place) const {
  return stages_[static_cast<size_t>((replica * tensor_ + place) * stages() + stage)].get();
}

namespace {

/// A replica's share of a stage's optimizer state as one run of floats: its
/// state buffers in order (piece by piece, slot by slot within a piece).
std::vector<float> packed_state(Optimizer& optimizer) {
  std::vector<float> out;
  for (const StateBuffer& b : optimizer.state()) out.insert(out.end(), b.data, b.data + b.type.numel());
  return out;
}

/// The message of one copy's share (copy q = replica * T + place).
int64_t state_tag(int stage, int copy) { return kGatherStateTag + int64_t{stage} * 65536 + copy; }

}  // namespace

void Pipeline::add_whole_state(int stage, int place, SafeTensors& shard) const {
  PipelineStage& writer = *copy_here(stage, 0, place);
  const std::vector<Param> params = writer.params.optimizer_params();
  std::set<std::string> blocks;  // the parameters split over the group: each place writes its own
  for (const ParameterSet::Entry& e : writer.params.entries())
    if (e.piece) blocks.insert(e.name);
  const std::vector<std::string>& slots = writer.optimizer->slot_names();
  std::vector<std::vector<float>> whole;  // [param * slots + slot]
  for (const Param& p : params)
    for (size_t k = 0; k < slots.size(); ++k) whole.emplace_back(static_cast<size_t>(p.numel()));
  const std::vector<ShardPiece> pieces = shard_pieces(params, replicas_);
  for (int r = 0; r < replicas_; ++r) {
    int64_t floats = 0;
    for (const ShardPiece& piece : pieces)
      if (piece.replica == r) floats += piece.count * static_cast<int64_t>(slots.size());
    std::vector<float> packed;
    if (PipelineStage* copy = copy_here(stage, r, place)) {
      packed = packed_state(*copy->optimizer);
    } else {
      packed.resize(static_cast<size_t>(floats));
      const int64_t bytes = floats * static_cast<int64_t>(sizeof(float));
      const int h = options_.comm->post({copy_rank(stage, r, place), state_tag(stage, r * tensor_ + place),
                                         packed.data(), bytes,
                                         fmt::format("stage {} waits for replica {}'s share of its optimizer state",
                                                     stage, r)});
      const Received got = options_.comm->wait(h);
      if (got.data != packed.data()) std::memcpy(packed.data(), got.data, static_cast<size_t>(bytes));
    }
    if (static_cast<int64_t>(packed.size()) != floats)
      throw Error(fmt::format("stage {}: replica {} holds {} floats of optimizer state, not its share's {}", stage, r,
                              packed.size(), floats));
    const float* at = packed.data();
    for (const ShardPiece& piece : pieces) {
      if (piece.replica != r) continue;
      for (size_t k = 0; k < slots.size(); ++k, at += piece.count)
        std::copy(at, at + piece.count, whole[piece.param * slots.size() + k].begin() + piece.offset);
    }
  }
  for (size_t p = 0; p < params.size(); ++p)
    if (place == 0 || blocks.count(params[p].name))
      for (size_t k = 0; k < slots.size(); ++k)
        shard.add(params[p].name + "." + slots[k], TensorType{DType::f32, params[p].shape},
                  whole[p * slots.size() + k].data());
}

std::vector<std::pair<int, SafeTensors>> Pipeline::checkpoint_shards() const {
  // Between processes, a replica's share of a sharded optimizer goes to the
  // rank writing its stage, from a buffer kept until the barrier below.
  std::vector<std::vector<float>> sent;
  if (shard_optimizer_)
    for (PipelineStage* s : local_stages()) {
      if (s->replica == 0 || copy_here(s->index, 0, s->shard)) continue;
      std::vector<float>& packed = sent.emplace_back(packed_state(*s->optimizer));
      options_.comm->send(copy_rank(s->index, 0, s->shard), state_tag(s->index, s->replica * tensor_ + s->shard),
                          packed.data(),
                          static_cast<int64_t>(packed.size() * sizeof(float)));
    }
  std::vector<std::pair<int, SafeTensors>> out;
  std::map<int, size_t> at;  // stage -> its shard in `out`
  for (PipelineStage* s : local_stages()) {
    // The replicas hold the same numbers, but for their blocks of the
    // experts: the first expert group writes them.
    if (s->replica >= experts_) continue;
    // The places of a tensor-parallel group write one shard: the first its
    // whole parameters and their state, each its blocks of the split ones.
    // The replicas sharing the experts out likewise.
    auto [it, fresh] = at.try_emplace(s->index, out.size());
    if (fresh) out.emplace_back(s->index, SafeTensors{});
    SafeTensors& shard = out[it->second].second;
    const bool whole_too = s->shard == 0 && s->replica == 0;
    // A block of its own: a tensor-parallel place's, or a replica's experts.
    auto own_block = [&](const ParameterSet::Entry& e) {
      return s->replica == 0 ? e.piece.has_value()
                             : std::find(s->replica_own.begin(), s->replica_own.end(), e.name) != s->replica_own.end();
    };
    std::vector<std::string> blocks;  // its split parameters' names, each with the dot its state's names add
    for (const ParameterSet::Entry& e : s->params.entries())
      if (whole_too || own_block(e)) {
        shard.add(e.name, e.type, e.value.data());
        if (own_block(e)) blocks.push_back(e.name + ".");
      }
    auto of_a_block = [&](const std::string& state) {
      return std::any_of(blocks.begin(), blocks.end(), [&](const std::string& b) { return state.starts_with(b); });
    };
    // A state buffer named like a parameter ("w.exp_avg" beside a parameter
    // "w.exp_avg") makes add() throw: the checkpoint would be ambiguous.
    if (shard_optimizer_)
      add_whole_state(s->index, s->shard, shard);
    else
      for (const StateBuffer& b : s->optimizer->state())
        if (whole_too || of_a_block(b.name)) shard.add(b.name, b.type, b.data);
    shard.metadata = {{"stage", std::to_string(s->index)}};
  }
  if (shard_optimizer_ && options_.comm) options_.comm->barrier(CommGroup::world(ranks_));
  return out;
}

void Pipeline::start() {
  const TrainingOptions& t = options_.train;
  for (PipelineStage* s : local_stages())
    s->optimizer = shard_optimizer_ ? s->program->make_optimizer(t, s->replica, replicas_)
                                    : s->program->make_optimizer(t, 0, 1);
  lr_ = t.cosine || t.warmup > 0 ? LrSchedule::warmup_cosine(t.lr, t.lr / 10, t.warmup, t.steps)
                                 : LrSchedule::constant(t.lr);
}

}  // namespace pf
