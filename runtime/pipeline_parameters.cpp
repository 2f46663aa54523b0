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

int64_t packed_weights_bound(const ParameterSet& params) {
  int64_t bytes = 0;
  for (const ParameterSet::Entry& e : params.entries()) {
    const std::vector<int64_t>& shape = e.type.shape;
    if (shape.size() < 2 || e.type.numel() == 0) continue;  // never a product's B
    const int64_t rows = shape[shape.size() - 2], cols = shape.back();
    bytes += cpu::PackedWeights::bound_bytes(e.type.numel() / (rows * cols), rows, cols);
  }
  return bytes;
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
    if (s->packed_weights) m.packed_weights = packed_weights_bound(s->params);
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

OptimizerShare Pipeline::optimizer_share(const PipelineStage& stage) const {
  if (!shard_optimizer_) return {};
  // The replicas holding the same block of the experts are every experts_-th.
  return {stage.replica, replicas_, stage.replica_own, stage.replica / experts_, replicas_ / experts_};
}

// Replica r's packed share holds the shared parameters' run first, then its
// own experts': the first replica takes the former from everyone, and the
// writer of a block of the experts the latter from the replicas holding it.
void Pipeline::add_whole_state(PipelineStage& writer, SafeTensors& shard) const {
  const int stage = writer.index, place = writer.shard;
  const std::vector<Param> params = writer.params.optimizer_params();
  const auto [shared, own] = part_own(params, writer.replica_own);
  std::set<std::string> blocks;  // the parameters split over the group: each place writes its own
  for (const ParameterSet::Entry& e : writer.params.entries())
    if (e.piece) blocks.insert(e.name);
  const std::vector<std::string>& slots = writer.optimizer->slot_names();
  const bool writes_shared = writer.replica == 0;
  const int holders = replicas_ / experts_;
  // Per parameter (shared ones, then own), per slot: its whole state, if written.
  std::vector<std::vector<float>> whole;
  for (const std::vector<Param>* list : {&shared, &own})
    for (const Param& p : *list)
      for (size_t k = 0; k < slots.size(); ++k)
        whole.emplace_back(list == &own || writes_shared ? static_cast<size_t>(p.numel()) : 0);
  // Copies `index`'s pieces of `list` from `at` into `whole` from `first` on.
  auto unpack = [&](const std::vector<Param>& list, int index, int of, size_t first, const float*& at) {
    for (const ShardPiece& piece : shard_pieces(list, of)) {
      if (piece.replica != index) continue;
      for (size_t k = 0; k < slots.size(); ++k, at += piece.count)
        std::copy(at, at + piece.count, whole[first + piece.param * slots.size() + k].begin() + piece.offset);
    }
  };
  for (int r = 0; r < replicas_; ++r) {
    const bool holder = r % experts_ == writer.replica;  // of the writer's block of the experts
    if (!writes_shared && !holder) continue;
    const int64_t shared_floats = share_floats(shared, r, replicas_, slots.size());
    const int64_t floats = shared_floats + (holder ? share_floats(own, r / experts_, holders, slots.size()) : 0);
    std::vector<float> packed;
    if (PipelineStage* copy = copy_here(stage, r, place)) {
      packed = packed_state(*copy->optimizer);
      if (!holder) packed.resize(static_cast<size_t>(std::min<int64_t>(floats, std::ssize(packed))));
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
    if (std::ssize(packed) != floats)
      throw Error(fmt::format("stage {}: replica {} holds {} floats of optimizer state, not its share's {}", stage, r,
                              packed.size(), floats));
    const float* at = packed.data();
    if (writes_shared)
      unpack(shared, r, replicas_, 0, at);
    else
      at += shared_floats;
    if (holder) unpack(own, r / experts_, holders, shared.size() * slots.size(), at);
  }
  size_t at = 0;
  for (const std::vector<Param>* list : {&shared, &own})
    for (const Param& p : *list) {
      const bool written = list == &own || (writes_shared && (place == 0 || blocks.count(p.name)));
      for (size_t k = 0; k < slots.size(); ++k, ++at)
        if (written) shard.add(p.name + "." + slots[k], TensorType{DType::f32, p.shape}, whole[at].data());
    }
}

// Replica 0's copy of the stage takes the first run of every other
// replica's share (the state of the parameters every replica holds); the
// copy in the first expert group holding the same block of the experts takes
// the whole share, for the run after it. A replica holding block 0 sends
// replica 0 its whole share in one message.
void Pipeline::send_state_share(PipelineStage& stage, std::vector<std::vector<float>>& sent) const {
  const int block_writer = stage.replica % experts_;
  const std::vector<Param> params = stage.params.optimizer_params();
  const auto [shared, own] = part_own(params, stage.replica_own);
  const std::vector<float> packed = packed_state(*stage.optimizer);
  const int64_t tag = state_tag(stage.index, stage.replica * tensor_ + stage.shard);
  auto send = [&](int writer, size_t floats) {
    if (writer == stage.replica || copy_here(stage.index, writer, stage.shard)) return;
    std::vector<float>& buffer = sent.emplace_back(packed.begin(), packed.begin() + static_cast<std::ptrdiff_t>(floats));
    options_.comm->send(copy_rank(stage.index, writer, stage.shard), tag, buffer.data(),
                        static_cast<int64_t>(buffer.size() * sizeof(float)));
  };
  const size_t shared_floats =
      static_cast<size_t>(share_floats(shared, stage.replica, replicas_, stage.optimizer->slot_names().size()));
  send(0, block_writer == 0 ? packed.size() : shared_floats);
  if (block_writer != 0) send(block_writer, packed.size());
}

std::vector<std::pair<int, SafeTensors>> Pipeline::checkpoint_shards() const {
  // Between processes, a replica's share of a sharded optimizer goes to the
  // rank writing its stage, from a buffer kept until the barrier below.
  std::vector<std::vector<float>> sent;
  if (shard_optimizer_)
    for (PipelineStage* s : local_stages()) send_state_share(*s, sent);
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
      add_whole_state(*s, shard);
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
    s->optimizer = s->program->make_optimizer(t, optimizer_share(*s));
  lr_ = t.cosine || t.warmup > 0 ? LrSchedule::warmup_cosine(t.lr, t.lr / 10, t.warmup, t.steps)
                                 : LrSchedule::constant(t.lr);
}

}  // namespace pf
