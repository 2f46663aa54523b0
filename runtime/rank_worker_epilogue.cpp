// The end of a rank's step: what the ranks combine through collectives once
// their action lists are walked (the loss, the replicas' and the tied
// parameters' gradient sums, the gradient norm) and the update.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <deque>

#include "runtime/optimizer_shard.h"
#include "runtime/rank_worker.h"

namespace pf {

// The ranks holding the last stage bring the losses; the sum reaches every
// rank, and doubles as the barrier after which every lent buffer is free.
void RankWorker::loss(const RankStep& step, RankOutcome& out) {
  // A forward pass also sums the classifications (exact in a double below
  // 2^53), and whether some rank could not read its classifier's stash.
  const bool counts = groups_.counts_loss;
  std::vector<double> total = {0.0};
  if (!step.backward)
    total = {0.0, counts ? static_cast<double>(correct_) : 0.0, counts ? static_cast<double>(predicted_) : 0.0,
             unclassified_ ? 1.0 : 0.0};
  for (PipelineStage* st : stages_)
    if (st->has_loss && counts)
      for (float l : st->losses) total[0] += l;
  comm_.all_reduce(groups_.world, total);
  out.loss = total[0] / (microbatches_ * groups_.replicas);
  if (!step.backward && total[3] == 0) {
    out.correct = static_cast<int64_t>(total[1]);
    out.predicted = static_cast<int64_t>(total[2]);
  }
}

// The prediction is the first largest logit of each row, as torch.argmax.
void RankWorker::classify(const PipelineStage& st, int slot) {
  const size_t k = static_cast<size_t>(std::find(stages_.begin(), stages_.end(), &st) - stages_.begin());
  const std::optional<Classifier>& c = classifiers_.at(k);
  if (!c) return;
  const auto* logits = static_cast<const float*>(st.program->stashed_on_host(slot, c->logits));
  const auto* targets = static_cast<const int32_t*>(st.program->stashed_on_host(slot, c->targets));
  if (!logits || !targets) {
    unclassified_ = true;
    return;
  }
  for (int64_t r = 0; r < c->rows; ++r) {
    if (targets[r] == c->ignore_index) continue;
    const float* row = logits + r * c->classes;
    predicted_ += 1;
    if (std::max_element(row, row + c->classes) - row == targets[r]) correct_ += 1;
  }
}

void RankWorker::all_reduce_grad(PipelineStage& st, const std::string& name, const CommGroup& group,
                                 std::vector<float>& scratch) {
  std::vector<float>& grad = st.params.at(name).grad;
  if (st.program->place().on_host()) {
    comm_.all_reduce(group, grad);
    return;
  }
  scratch.resize(grad.size());
  st.program->read_grad(name, scratch.data());
  comm_.all_reduce(group, scratch);
  st.program->write_grad(name, scratch.data());
}

// Each stage's gradients summed over its copies in the replicas, whose loss
// seeds already divide by the number of replicas: every copy gets the
// gradient of the whole batch, bit for bit the same, and steps alike. A
// stage's sum starts as soon as its last backward is done (and sent on), so
// that between processes the bytes travel while this rank works on its other
// stages and the other ranks finish theirs. The gradients travel in buckets
// of whole parameters (one collective for many: fewer messages between
// processes), each summed element by element as a tensor of its own would
// be; the buckets of a stage lie end to end in one buffer, kept from step to
// step (fresh pages fault on first touch). A replica's own experts (under
// expert parallelism) go apart, over the replicas holding the same block:
// each group of replicas already summed its tokens into them.
void RankWorker::start_replica_grads(size_t k) {
  start_sums(k, groups_.stage_replicas[k], false);
  if (k < groups_.block_replicas.size()) start_sums(k, groups_.block_replicas[k], true);
}

void RankWorker::start_sums(size_t k, const CommGroup& group, bool own) {
  constexpr size_t kBucketFloats = size_t{8} << 20;  // 32 MiB
  if (group.ranks.size() < 2) return;
  PipelineStage& st = *stages_[k];
  current_stage_ = st.index;
  const bool host = st.program->place().on_host();
  std::deque<ParameterSet::Entry>& entries = st.params.entries();
  size_t total = 0;
  auto summed = [&](size_t e) { return averaged(k, e) != own; };
  auto summed_floats = [&](size_t e) { return summed(e) ? entries[e].grad.size() : 0; };
  for (size_t e = 0; e < entries.size(); ++e) total += summed_floats(e);
  std::vector<float>& buffer = (own ? own_buffers_ : replica_buffers_)[k];
  buffer.resize(total);
  float* at = buffer.data();
  for (size_t first = 0; first < entries.size();) {
    size_t last = first, floats = 0;
    while (last < entries.size() && (last == first || floats + summed_floats(last) <= kBucketFloats))
      floats += summed_floats(last++);
    if (floats == 0) {
      first = last;
      continue;
    }
    float* bucket = at;
    for (size_t e = first; e < last; ++e) {
      if (!summed(e)) continue;
      std::vector<float>& grad = entries[e].grad;
      if (host)
        std::copy(grad.begin(), grad.end(), at);
      else
        st.program->read_grad(entries[e].name, at);
      at += grad.size();
    }
    const int handle = comm_.start_all_reduce(group, std::span<float>(bucket, floats));
    in_flight_.push_back({k, first, last, static_cast<size_t>(bucket - buffer.data()), handle, own});
    first = last;
  }
}

void RankWorker::finish_replica_grads() {
  for (const Bucket& b : in_flight_) {
    PipelineStage& st = *stages_[b.stage];
    current_stage_ = st.index;
    comm_.finish_all_reduce(b.handle);
    const bool host = st.program->place().on_host();
    const float* at = (b.own ? own_buffers_ : replica_buffers_)[b.stage].data() + b.offset;
    std::deque<ParameterSet::Entry>& entries = st.params.entries();
    for (size_t e = b.first; e < b.last; ++e) {
      if (averaged(b.stage, e) == b.own) continue;
      std::vector<float>& grad = entries[e].grad;
      if (host)
        std::copy(at, at + grad.size(), grad.begin());
      else
        st.program->write_grad(entries[e].name, at);
      at += grad.size();
    }
  }
  in_flight_.clear();
}

// Each tied parameter's gradient: this rank's copies summed in stage order,
// then over the ranks holding it in rank order; every copy gets the total.
// One copy on the host (the usual case) is summed where it lies.
void RankWorker::sum_tied_grads() {
  for (TiedParam& tied : groups_.tied) {
    std::vector<PipelineStage*> holders;
    for (PipelineStage* st : stages_)
      if (st->params.find(tied.name)) holders.push_back(st);
    if (holders.size() == 1) {
      current_stage_ = holders[0]->index;
      all_reduce_grad(*holders[0], tied.name, tied.group, tied.buffer);
      continue;
    }
    std::vector<float>& total = tied.buffer;
    std::vector<float>& part = tied.part;
    for (size_t k = 0; k < holders.size(); ++k) {
      current_stage_ = holders[k]->index;
      std::vector<float>& into = k == 0 ? total : part;
      into.resize(holders[k]->params.at(tied.name).grad.size());
      holders[k]->program->read_grad(tied.name, into.data());
      if (k > 0)
        for (size_t i = 0; i < total.size(); ++i) total[i] += part[i];
    }
    if (tied.group.ranks.size() > 1) comm_.all_reduce(tied.group, total);
    for (PipelineStage* st : holders) st->program->write_grad(tied.name, total.data());
  }
}

// The replicas hold the same gradients but for their own experts: the rest
// is summed over the replica, the experts over the replicas of its expert
// group (which hold every block once).
double RankWorker::grad_norm() {
  std::vector<double> sq = {0.0}, own = {0.0};
  for (size_t k = 0; k < stages_.size(); ++k) {
    current_stage_ = stages_[k]->index;
    sq[0] += stages_[k]->program->grad_sq_norm(norm_params_[k]);
    if (!groups_.replica_own[k].empty()) own[0] += stages_[k]->program->grad_sq_norm(groups_.replica_own[k]);
  }
  current_stage_ = -1;
  comm_.all_reduce(groups_.replica, sq);
  if (groups_.experts) comm_.all_reduce(*groups_.experts, own);
  return std::sqrt(sq[0] + own[0]);
}

// Every rank decides alike from the same norm: skip a non-finite step, or
// clip, then step its own optimizers.
void RankWorker::update(const RankStep& step, double norm) {
  if (!std::isfinite(norm)) return;
  const double factor = step.clip > 0 ? clip_factor(norm, step.clip) : 1.0;
  for (PipelineStage* st : stages_) {
    current_stage_ = st->index;
    // Every gradient, not only a sharded optimizer's share: the gradients
    // a run saves are the clipped ones, whoever steps them.
    if (factor != 1.0) st->program->scale_grads(st->params.optimizer_params(), factor);
    st->optimizer->step(step.lr);
  }
  if (groups_.shard_optimizer) share_updates();
}

// Each replica's updated share goes to the others in one collective: its
// pieces laid end to end in the stage's replica buffer (which the gradients'
// sum is done with by now), then copied back into place. Replicas run on
// CPU devices only (Pipeline refuses others), so every share lies in host
// memory. One broadcast per piece instead cost 20 % of a 2-replica GPT step
// between processes, a collective's latency per parameter. A replica's own
// experts go round the replicas holding the same block only.
void RankWorker::share_updates() {
  for (size_t k = 0; k < stages_.size(); ++k) {
    PipelineStage& st = *stages_[k];
    current_stage_ = st.index;
    // The parameters every replica holds, as the entries marked at start-up
    // tell them from the replica's own experts (groups_.replica_own).
    const std::vector<Param> params = st.params.optimizer_params();
    std::vector<Param> shared;
    for (size_t e = 0; e < params.size(); ++e)
      if (averaged(k, e)) shared.push_back(params[e]);
    share_over(groups_.stage_replicas[k], shared, replica_buffers_[k]);
    if (k < groups_.block_replicas.size())
      share_over(groups_.block_replicas[k], groups_.replica_own[k], own_buffers_[k]);
  }
  current_stage_ = -1;
}

void RankWorker::share_over(const CommGroup& group, const std::vector<Param>& params, std::vector<float>& packed) {
  if (group.ranks.size() < 2 || params.empty()) return;
  const std::vector<ShardPiece> pieces = shard_pieces(params, static_cast<int>(group.ranks.size()));
  for (size_t r = 0; r < group.ranks.size(); ++r) {
    const bool mine = group.ranks[r] == rank_;
    size_t floats = 0;
    for (const ShardPiece& piece : pieces)
      if (piece.replica == static_cast<int>(r)) floats += static_cast<size_t>(piece.count);
    if (floats == 0) continue;
    packed.resize(std::max(packed.size(), floats));
    float* at = packed.data();
    for (const ShardPiece& piece : pieces)
      if (piece.replica == static_cast<int>(r) && mine) {
        const float* from = params[piece.param].value + piece.offset;
        at = std::copy(from, from + piece.count, at);
      }
    comm_.broadcast(group, group.ranks[r], packed.data(), static_cast<int64_t>(floats * sizeof(float)));
    if (mine) continue;
    const float* from = packed.data();
    for (const ShardPiece& piece : pieces)
      if (piece.replica == static_cast<int>(r)) {
        std::copy(from, from + piece.count, params[piece.param].value + piece.offset);
        from += piece.count;
      }
  }
}

}  // namespace pf
