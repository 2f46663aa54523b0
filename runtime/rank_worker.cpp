// One rank of a pipeline: its action list and its hand-offs (the end of its step: rank_worker_epilogue.cpp).
#include "runtime/rank_worker.h"

#include <fmt/format.h>

#include <algorithm>
#include <new>
#include <thread>

#include "ir/diagnostic.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::string describe(const Action& a) {
  switch (a.kind) {
    case ActionKind::forward: return fmt::format("the forward of micro-batch {}", a.microbatch);
    case ActionKind::backward: return fmt::format("the backward of micro-batch {}", a.microbatch);
    case ActionKind::backward_input: return fmt::format("the input-gradient backward of micro-batch {}", a.microbatch);
    case ActionKind::backward_weight:
      return fmt::format("the weight-gradient backward of micro-batch {}", a.microbatch);
    default: return fmt::format("an action of micro-batch {}", a.microbatch);
  }
}

constexpr int kActivations = 0;
constexpr int kGradients = 1;

bool runs_in_forward_pass(ActionKind kind) {
  return kind == ActionKind::forward || kind == ActionKind::send_act || kind == ActionKind::recv_act;
}

}  // namespace

int64_t hand_off_tag(int receiver, int kind, int mb, int tensor, int microbatches) {
  return ((static_cast<int64_t>(receiver) * 2 + kind) * microbatches + mb) * 65536 + tensor;
}

RankWorker::RankWorker(int rank, int microbatches, std::vector<Action> actions, std::vector<size_t> receive_order,
                       std::vector<PipelineStage*> stages, Communicator& comm, RankGroups groups,
                       std::vector<std::vector<Param>> norm_params, int threads)
    : rank_(rank),
      microbatches_(microbatches),
      kernels_(threads),
      actions_(std::move(actions)),
      receive_order_(std::move(receive_order)),
      stages_(std::move(stages)),
      comm_(comm),
      groups_(std::move(groups)),
      norm_params_(std::move(norm_params)) {
  for (PipelineStage* st : stages_) {
    classifiers_.emplace_back();
    if (!st->has_loss) continue;
    const Function& g = st->program->graph();
    for (const Op& op : g.ops) {
      if (op.kind != OpKind::cross_entropy) continue;
      const TensorType logits = g.type_of(op.operands[0]), targets = g.type_of(op.operands[1]);
      Classifier c;
      c.logits = g.values[op.operands[0]].name;
      c.targets = g.values[op.operands[1]].name;
      c.classes = logits.shape.empty() ? 0 : logits.shape.back();
      c.rows = targets.numel();
      if (const Attr* ignore = op.attr("ignore_index"); ignore && ignore->dim.is_constant())
        c.ignore_index = ignore->dim.constant();
      if (logits.dtype == DType::f32 && targets.dtype == DType::i32 && c.classes > 0 &&
          logits.numel() == c.rows * c.classes)
        classifiers_.back() = std::move(c);
    }
  }
  if (groups_.stage_replicas.size() != stages_.size())
    throw Error(fmt::format("rank {}: {} replica groups for {} stages", rank_, groups_.stage_replicas.size(),
                            stages_.size()));
  if (!groups_.replica_own.empty() && groups_.replica_own.size() != stages_.size())
    throw Error(fmt::format("rank {}: its replica's own parameters listed for {} stages of {}", rank_,
                            groups_.replica_own.size(), stages_.size()));
  groups_.replica_own.resize(stages_.size());
  own_entries_.resize(stages_.size());
  for (size_t k = 0; k < stages_.size(); ++k)
    for (const ParameterSet::Entry& e : stages_[k]->params.entries()) {
      const std::vector<Param>& own = groups_.replica_own[k];
      own_entries_[k].push_back(
          std::any_of(own.begin(), own.end(), [&](const Param& p) { return p.name == e.name; }));
    }
  replica_buffers_.resize(stages_.size());
  own_buffers_.resize(stages_.size());
  last_grad_action_.assign(stages_.size(), -1);
  for (size_t i = 0; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    // A split backward's input part writes no weight gradient.
    if (a.kind != ActionKind::backward && a.kind != ActionKind::backward_weight) continue;
    for (size_t k = 0; k < stages_.size(); ++k)
      if (stages_[k]->index == a.stage) last_grad_action_[k] = static_cast<int>(i);
  }
}

PipelineStage& RankWorker::stage(int index) const {
  for (PipelineStage* s : stages_)
    if (s->index == index) return *s;
  throw Error(fmt::format("rank {} holds no stage {}", rank_, index));
}

void RankWorker::run(const RankStep& step, RankOutcome& out) {
  const cpu::KernelPoolScope device_threads(&kernels_);
  try {
    in_flight_.clear();  // a failed step's
    correct_ = predicted_ = 0;
    unclassified_ = false;
    post_receives(step);
    watch_weights();
    walk(step, out);
    finish_devices();
    // The weights change in the update: their packed copies are stale.
    for (PipelineStage* st : stages_)
      if (st->packed_weights) st->packed_weights->invalidate();
    out.walked_s = since(step.start);
    current_stage_ = -1;
    // The replicas' sums before the loss's collective, which waits for the
    // whole world: a stage done early has its sum done before the others end.
    if (step.backward) finish_replica_grads();
    loss(step, out);
    if (!step.backward) return;
    sum_tied_grads();
    out.grad_norm = grad_norm();
    if (step.update) {
      // On a trace, the optimizer's own time (clipping and the update), after
      // the collectives that a rank done early spends waiting in.
      const double begin = since(step.start);
      update(step, out.grad_norm);
      if (step.trace) out.trace.push_back({rank_, Action{ActionKind::step, -1, -1, -1}, begin, since(step.start)});
    }
  } catch (const CommAborted&) {
    // another rank failed first; its error is the step's
  } catch (const CommTimeout&) {
    // the communicator has failed the step with the watchdog's message
  } catch (const Error& e) {
    comm_.abort(current_stage_ >= 0 ? fmt::format("stage {}: {}", current_stage_, e.message())
                                    : fmt::format("rank {}: {}", rank_, e.message()));
  } catch (const std::bad_alloc&) {
    comm_.abort(current_stage_ >= 0 ? fmt::format("stage {}: out of memory", current_stage_)
                                    : fmt::format("rank {}: out of memory", rank_));
  } catch (const std::exception& e) {
    // Not a pf::Error: a defect rather than bad input, but it must still stop
    // every rank instead of escaping the thread (std::terminate).
    comm_.abort(fmt::format("stage {}: {}", std::max(current_stage_, 0), e.what()));
  } catch (...) {
    comm_.abort(fmt::format("stage {}: unknown exception", std::max(current_stage_, 0)));
  }
}

// The weights the stages' products may keep packed through this step's
// actions: every parameter as it is now (loaded or stepped since the last).
void RankWorker::watch_weights() {
  for (PipelineStage* st : stages_) {
    if (!st->packed_weights) continue;
    st->packed_weights->invalidate();
    for (const ParameterSet::Entry& e : st->params.entries())
      st->packed_weights->watch(e.value.data(), static_cast<int64_t>(sizeof(float) * e.value.size()));
  }
}

// One slice of a weight packed ahead: `first`'s (about to run), else another
// stage's. False when every stage is packed.
bool RankWorker::pack_ahead(PipelineStage& first) {
  if (first.packed_weights && first.packed_weights->pack_ahead()) return true;
  return std::any_of(stages_.begin(), stages_.end(), [&](PipelineStage* st) {
    return st != &first && st->packed_weights && st->packed_weights->pack_ahead();
  });
}

// Every receive of the step is posted before the first action, so that a
// communicator between processes can land each message where it belongs; in
// the senders' order, in which a communicator without tags (NCCL) matches them.
void RankWorker::post_receives(const RankStep& step) {
  posted_.assign(actions_.size(), {});
  for (size_t k : receive_order_) {
    const Action& a = actions_.at(k);
    const bool act = a.kind == ActionKind::recv_act, grad = a.kind == ActionKind::recv_grad;
    if (!act && !(grad && step.backward)) continue;
    PipelineStage& st = stage(a.stage);
    const int sender = act ? a.stage - 1 : a.stage + 1;
    const std::string waiting = fmt::format("stage {} waits for the {} of micro-batch {} from stage {}", a.stage,
                                            act ? "activations" : "gradients", a.microbatch, sender);
    const auto& views = act ? st.recvs : st.seeds_in;
    const auto& landing = act ? st.recv_landing : st.seed_landing;
    const bool copies = act ? st.recv_copies : st.seed_copies;
    const auto mb = static_cast<size_t>(a.microbatch);
    const std::vector<const void*>& row = views[mb];
    for (size_t i = 0; i < row.size(); ++i) {
      RecvRequest r;
      r.peer = a.peer;
      r.tag = hand_off_tag(a.stage, act ? kActivations : kGradients, a.microbatch, static_cast<int>(i), microbatches_);
      // Into the receiver's own buffer when it copies or the sender is in
      // another process; lent (read in place) otherwise.
      r.dst = copies ? const_cast<void*>(row[i]) : landing.empty() ? nullptr : landing[mb][i];
      r.bytes = act ? st.recv_bytes[i] : st.seed_bytes[i];
      r.waiting = waiting;
      posted_[k].handles.push_back(comm_.post(std::move(r)));
    }
  }
}

void RankWorker::walk(const RankStep& step, RankOutcome& out) {
  using Fault = PipelineOptions::Fault;
  auto faulty = [&](const Action& a, Fault::Kind kind) {
    return step.fault.kind == kind && step.fault.stage == a.stage && step.fault.microbatch == a.microbatch;
  };
  // The stages whose gradients are final, waiting for the sends that follow
  // their last backward before their replicas' sums start: a neighbour
  // waits for those.
  std::vector<size_t> done;
  const auto start_done = [&] {
    for (size_t d : done) start_replica_grads(d);
    done.clear();
  };
  for (size_t k = 0; k < actions_.size(); ++k) {
    const Action& a = actions_[k];
    if (a.kind == ActionKind::step) break;
    // A forward pass keeps the schedule's order of forwards and activation
    // hand-offs; with the backward actions gone no wait can close a cycle.
    if (!step.backward && !runs_in_forward_pass(a.kind)) continue;
    if (a.kind != ActionKind::send_act && a.kind != ActionKind::send_grad) start_done();
    current_stage_ = a.stage;
    const double start = since(step.start);
    const bool compute = is_compute(a.kind);
    if (compute) comm_.set_busy(fmt::format("stage {}", a.stage), describe(a));
    const cpu::PackedWeightsScope packing(compute ? stage(a.stage).packed_weights.get() : nullptr);
    switch (a.kind) {
      case ActionKind::recv_act:
      case ActionKind::recv_grad: {
        PipelineStage& st = stage(a.stage);
        const bool act = a.kind == ActionKind::recv_act;
        auto& views = act ? st.recvs : st.seeds_in;
        std::vector<const void*>& row = views[static_cast<size_t>(a.microbatch)];
        std::vector<HandOffCopy> copies;
        void* sender = nullptr;
        // Until the message comes (or first, where the communicator cannot
        // tell), the stages pack ahead the weights their products read
        // packed, which the next product would pack itself. Not in a
        // forward pass, which would pack the backward's layouts for nothing.
        if (step.backward)
          for (size_t i = 0; i < row.size(); ++i)
            while (!comm_.ready(posted_[k].handles[i]) && pack_ahead(st)) {
            }
        for (size_t i = 0; i < row.size(); ++i) {
          const Received got = comm_.wait(posted_[k].handles[i]);
          sender = got.context;
          if (act ? st.recv_copies : st.seed_copies)
            copies.push_back({const_cast<void*>(row[i]), got.data, act ? st.recv_bytes[i] : st.seed_bytes[i]});
          else
            row[i] = got.data;  // the sender's buffer, read in place
        }
        // A device on either end: the receiver's device copies (or only
        // orders its reads after the sender's work) through the sender's
        // runner, which the in-process message carries.
        if (!copies.empty())
          st.program->receive(*static_cast<StageRunner*>(sender),
                              act ? HandOff::activations : HandOff::gradients, a.microbatch, copies);
        break;
      }
      case ActionKind::send_act:
        if (faulty(a, Fault::Kind::drop_send)) break;
        send(a, step);
        break;
      case ActionKind::send_grad:
        send(a, step);
        break;
      case ActionKind::forward:
        if (faulty(a, Fault::Kind::throw_error)) throw Error("injected fault");
        if (faulty(a, Fault::Kind::stall)) {
          // A kernel that does not return: nothing here looks at the failure.
          const auto until = Clock::now() + std::chrono::duration<double>(4 * step.timeout_s);
          while (Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
          if (!comm_.error().empty()) throw CommAborted{};  // given up meanwhile: the batch may be gone
        }
        forward(a, step);
        break;
      case ActionKind::backward:
      case ActionKind::backward_input:
        backward(a);
        break;
      case ActionKind::backward_weight: {
        PipelineStage& st = stage(a.stage);
        st.program->backward_weight(st.slot_of[static_cast<size_t>(a.microbatch)],
                                    /*overwrite_grads=*/!st.grads_written);
        st.grads_written = true;
        st.free_slots.push_back(st.slot_of[static_cast<size_t>(a.microbatch)]);
        break;
      }
      case ActionKind::step:
        break;
    }
    if (compute) {
      comm_.set_busy(fmt::format("stage {}", a.stage), "");
      // A rank given up while it computed (the step has failed and returned)
      // stops here instead of reading the caller's batch in a later action.
      if (!comm_.error().empty()) throw CommAborted{};
    }
    if (step.trace || compute) out.trace.push_back({rank_, a, start, since(step.start)});
    if (step.backward)
      for (size_t d = 0; d < stages_.size(); ++d)
        if (last_grad_action_[d] == static_cast<int>(k)) done.push_back(d);
  }
  start_done();
}

void RankWorker::send(const Action& a, const RankStep&) {
  PipelineStage& st = stage(a.stage);
  const bool act = a.kind == ActionKind::send_act;
  const int receiver = act ? a.stage + 1 : a.stage - 1;
  const auto& row = (act ? st.sends : st.send_grads)[static_cast<size_t>(a.microbatch)];
  const auto& bytes = act ? st.send_bytes : st.send_grad_bytes;
  // In process the receiver reaches the sender's memory through its runner;
  // a communicator moving device memory itself orders after its event.
  void* context = comm_.device_messages()
                      ? st.program->hand_off_event(act ? HandOff::activations : HandOff::gradients, a.microbatch)
                      : st.program.get();
  for (size_t i = 0; i < row.size(); ++i)
    comm_.send(a.peer, hand_off_tag(receiver, act ? kActivations : kGradients, a.microbatch, static_cast<int>(i),
                                    microbatches_),
               row[i], bytes[i], context);
}

void RankWorker::forward(const Action& a, const RankStep& step) {
  PipelineStage& st = stage(a.stage);
  const Function& g = st.program->graph();
  const auto mb = static_cast<size_t>(a.microbatch);
  std::vector<const void*> args;
  size_t recv_index = 0, input_index = 0;
  for (size_t i = 0; i < g.args.size(); ++i) {
    const int model_input = st.input_args[i];
    if (model_input >= 0) {
      const std::string& name = st.inputs[static_cast<size_t>(model_input)];
      auto it = std::find_if(step.inputs.begin(), step.inputs.end(), [&](auto& p) { return p.first == name; });
      if (it == step.inputs.end()) throw Error(fmt::format("the batch has no input '{}'", name));
      const int64_t bytes = st.input_stride_bytes[input_index];
      // A replica's micro-batches are its share of the batch, after those
      // of the replicas before it.
      const int64_t slice = st.replica * microbatches_ + a.microbatch;
      args.push_back(st.program->stage_input(static_cast<int>(i),
                                             static_cast<const std::byte*>(it->second) + bytes * slice,
                                             st.input_types[input_index]));
      ++input_index;
    } else {
      args.push_back(st.recvs[mb][recv_index++]);
    }
  }
  std::vector<void*> results;
  if (st.has_loss) results.push_back(st.loss_out[mb]);
  for (void* b : st.sends[mb]) results.push_back(b);
  if (st.free_slots.empty()) throw Error("no stash slot free: the schedule keeps more in flight than planned");
  const int slot = st.free_slots.back();
  st.free_slots.pop_back();
  st.slot_of[mb] = slot;
  st.inflight += 1;
  st.peak = std::max(st.peak, st.inflight);
  st.peak_held = std::max(st.peak_held, st.program->slots() - static_cast<int>(st.free_slots.size()));
  st.program->forward(slot, args, results);
  st.program->mark_produced(HandOff::activations, a.microbatch);
  if (!step.backward) {
    classify(st, slot);
    // No backward will read the stash: the slot is free again.
    st.free_slots.push_back(slot);
    st.inflight -= 1;
  }
}

void RankWorker::backward(const Action& a) {
  PipelineStage& st = stage(a.stage);
  const auto mb = static_cast<size_t>(a.microbatch);
  // Seeds live until the step ends: the weight part may read them later.
  std::vector<const void*> seeds;
  size_t send_index = 0;
  for (int r : st.float_outputs) seeds.push_back(st.has_loss && r == 0 ? st.loss_seed : st.seeds_in[mb][send_index++]);
  const int slot = st.slot_of[mb];
  if (st.program->split()) {
    st.program->backward_input(slot, seeds);
  } else {
    st.program->backward(slot, seeds, /*overwrite_grads=*/!st.grads_written);
    st.grads_written = true;
  }
  for (size_t i = 0; i < st.send_grads[mb].size(); ++i)
    st.program->copy_input_grad(static_cast<int>(i), st.send_grads[mb][i], st.send_grad_bytes[i]);
  st.program->mark_produced(HandOff::gradients, a.microbatch);
  st.inflight -= 1;
  if (!st.program->split()) st.free_slots.push_back(slot);
}

// A CUDA stage's actions queue work and return: wait for it (watched like a
// computation), so that the losses and gradients are there when the step
// ends and bad data a kernel found fails the step. Nothing for CPU stages.
void RankWorker::finish_devices() {
  for (PipelineStage* st : stages_) {
    if (st->program->place().on_host()) continue;
    current_stage_ = st->index;
    comm_.set_busy(fmt::format("stage {}", st->index), "the wait for its GPU work");
    st->program->finish();
    if (st->has_loss)
      st->program->read_floats(st->loss_out.front(), st->losses.data(), static_cast<int64_t>(st->losses.size()));
    comm_.set_busy(fmt::format("stage {}", st->index), "");
  }
}

}  // namespace pf
