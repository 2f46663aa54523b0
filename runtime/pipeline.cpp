// Pipelined training on CPU devices in one process.
#include "runtime/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "ir/printer.h"
#include "ir/verifier.h"
#include "runtime/safetensors.h"
#include "runtime/stage_program.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

std::vector<std::byte> zeroed(int64_t bytes) { return std::vector<std::byte>(static_cast<size_t>(bytes)); }

/// Thrown in a worker woken because another stage failed: that stage's error
/// is the step's, so this one only unwinds the worker.
struct Stopped {};

/// Thrown by a wait the watchdog ended; the message names every stage that
/// was waiting, so it does not depend on which waiter's clock ran out first.
struct Timeout {
  std::string message;
};

/// What a stage is blocked on, for the watchdog's message.
struct Waiting {
  const char* what = nullptr;  // "activations" or "gradients"; null when not waiting
  int microbatch = 0;
  int sender = 0;
};

}  // namespace

/// Hand-offs between neighbouring stages: which micro-batches' activations
/// (forward) or gradients (backward) are ready at each boundary. The data
/// stays in the sender's per-micro-batch buffers; only readiness moves.
struct Pipeline::Shared {
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::vector<char>> act_ready;   // [boundary s -> s+1][mb]
  std::vector<std::vector<char>> grad_ready;  // [boundary s+1 -> s][mb], indexed by the sender s+1
  std::vector<Waiting> waiting;               // [stage]
  std::string error;                          // the first failure; stops every worker
  bool failed = false;

  void mark(std::vector<std::vector<char>>& table, int stage, int mb) {
    {
      std::lock_guard lock(mutex);
      table[stage][mb] = 1;
    }
    changed.notify_all();
  }

  /// Stage `stage` waits until `sender` has marked micro-batch `mb` ready
  /// in `table` (`what`: "activations" or "gradients").
  void wait(std::vector<std::vector<char>>& table, int stage, int sender, int mb, double timeout_s,
            const char* what) {
    std::unique_lock lock(mutex);
    waiting[stage] = {what, mb, sender};
    bool ok = changed.wait_for(lock, std::chrono::duration<double>(timeout_s),
                               [&] { return failed || table[sender][mb]; });
    if (!ok && !failed) throw Timeout{stalled(timeout_s)};
    waiting[stage] = {};
    if (failed) throw Stopped{};
    table[sender][mb] = 0;
  }

  /// The watchdog's message: every stage waiting now, in stage order. Called
  /// with the mutex held.
  std::string stalled(double timeout_s) const {
    std::string out = fmt::format("watchdog: no hand-off for {:g} s", timeout_s);
    const char* sep = ": ";
    for (size_t s = 0; s < waiting.size(); ++s) {
      const Waiting& w = waiting[s];
      if (!w.what) continue;
      out += fmt::format("{}stage {} waits for the {} of micro-batch {} from stage {}", sep, s, w.what, w.microbatch,
                         w.sender);
      sep = "; ";
    }
    return out;
  }

  void fail(const std::string& message) {
    {
      std::lock_guard lock(mutex);
      if (!failed) error = message;
      failed = true;
    }
    changed.notify_all();
  }
};

struct Pipeline::Stage {
  StageModule spec;
  std::string backward_text;  // the differentiated module, as the plan stores it
  ParameterSet params;
  std::unique_ptr<StageProgram> program;
  std::unique_ptr<Optimizer> optimizer;
  std::vector<int> input_args;                       // per graph argument: index into spec.inputs, or -1
  std::vector<int64_t> input_sample_bytes;           // per model input the stage reads: bytes of one micro-batch
  std::vector<int> float_outputs;                    // differentiated results
  std::vector<std::vector<std::vector<std::byte>>> sends;       // [mb][send i]
  std::vector<std::vector<std::vector<std::byte>>> send_grads;  // [mb][recv i] (gradients going back)
  std::vector<float> losses;                         // [mb]
  float loss_seed = 1.0f;                            // the loss's gradient: 1/m (the step's loss is the mean)
  std::vector<int> free_slots;
  std::vector<int> slot_of;                          // [mb]
  int inflight = 0, peak = 0;
};

Pipeline::Pipeline(std::vector<StageModule> stages, const DimBinding& micro_binding, const PipelineOptions& options)
    : options_(options), shared_(std::make_unique<Shared>()) {
  int n = static_cast<int>(stages.size());
  if (n % options.virtual_stages != 0)
    throw Error(fmt::format("{} stages do not divide into {} virtual stages per device", n, options.virtual_stages));
  schedule_ = make_schedule(options.schedule, n / options.virtual_stages, options.microbatches, options.virtual_stages);
  Simulation sim = simulate(schedule_);
  int m = options.microbatches;
  // Schedules with a weight-gradient action run each backward in two parts.
  const bool split = std::any_of(schedule_.per_device.begin(), schedule_.per_device.end(), [](const auto& list) {
    return std::any_of(list.begin(), list.end(), [](const Action& a) { return a.kind == ActionKind::backward_weight; });
  });
  for (int s = 0; s < n; ++s) {
    auto st = std::make_unique<Stage>();
    st->spec = std::move(stages[s]);
    const AutodiffOptions ad = stage_autodiff_options(st->spec);
    Module module = std::move(st->spec.module);
    st->float_outputs = ad.outputs;
    GradientProgram gradients = differentiate(module, micro_binding, ad);
    st->backward_text = print_module(module);
    const Function& graph = module.graph();
    int results = gradients.original_results;
    for (size_t a = 0; a < graph.args.size(); ++a) {
      const std::string& name = graph.values[graph.args[a]].name;
      auto it = std::find(st->spec.inputs.begin(), st->spec.inputs.end(), name);
      st->input_args.push_back(it == st->spec.inputs.end() ? -1 : static_cast<int>(it - st->spec.inputs.begin()));
      if (it != st->spec.inputs.end()) st->input_sample_bytes.push_back(graph.type_of(graph.args[a]).bytes());
    }
    // Buffers for every micro-batch, allocated and touched once.
    st->sends.resize(m);
    st->send_grads.resize(m);
    for (int mb = 0; mb < m; ++mb) {
      for (int r = st->spec.has_loss ? 1 : 0; r < results; ++r)
        st->sends[mb].push_back(zeroed(graph.type_of(graph.returns[r]).bytes()));
      for (const std::string& name : ad.wrt_inputs)
        st->send_grads[mb].push_back(zeroed(graph.type_of(graph.find_value(name)).bytes()));
    }
    st->losses.assign(m, 0.0f);
    st->loss_seed = 1.0f / static_cast<float>(m);
    int slots = std::max(1, sim.peak_stashed[s]);
    for (int k = slots - 1; k >= 0; --k) st->free_slots.push_back(k);
    st->slot_of.assign(m, -1);
    st->program = std::make_unique<StageProgram>(std::move(module), micro_binding, std::move(gradients), st->params,
                                                 slots, /*caller_results=*/true, split);
    stages_.push_back(std::move(st));
  }
  shared_->waiting.assign(n, Waiting{});
  shared_->act_ready.assign(n, std::vector<char>(m, 0));
  shared_->grad_ready.assign(n, std::vector<char>(m, 0));
}

Pipeline::~Pipeline() = default;

std::unique_ptr<Pipeline> Pipeline::from_plan(const Plan& plan, PipelineOptions options) {
  auto kind = parse_schedule_kind(plan.schedule);
  if (!kind)
    throw Error(fmt::format("plan for @{}: unknown schedule '{}'; this pipeforge runs gpipe, 1f1b, interleaved and zb1",
                            plan.model_name, plan.schedule));
  if (plan.loss_stage_output.empty())
    throw Error(fmt::format("plan for @{} is an inference plan: it has no loss to train", plan.model_name));
  options.schedule = *kind;
  options.microbatches = plan.microbatches;
  options.virtual_stages = plan.virtual_stages;
  std::vector<StageModule> stages;
  for (const PlanStage& ps : plan.stages) {
    StageModule sm;
    sm.module = stage_program(plan, ps, "forward");
    sm.layers = ps.layers;
    for (const PlanTensor& t : ps.inputs) sm.inputs.push_back(t.name);
    for (const PlanTensor& t : ps.recv) sm.recv.push_back(t.name);
    for (const PlanTensor& t : ps.send) sm.send.push_back(t.name);
    for (const PlanParam& p : ps.params) sm.params.push_back(p.name);
    sm.has_loss = ps.index + 1 == static_cast<int>(plan.stages.size());
    stages.push_back(std::move(sm));
  }
  auto pipeline = std::make_unique<Pipeline>(std::move(stages), plan.binding, options);
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    const std::string& want = plan.stages[s].backward;
    if (!want.empty() && pipeline->backward_text(static_cast<int>(s)) != want)
      throw Error(fmt::format("plan stage {}: its backward program is not the one this pipeforge derives from its "
                              "forward program; compile the plan again",
                              s));
  }
  return pipeline;
}

std::string Pipeline::backward_text(int stage) const { return stages_.at(stage)->backward_text; }

int Pipeline::stages() const { return static_cast<int>(stages_.size()); }
int Pipeline::devices() const { return schedule_.devices; }
const Schedule& Pipeline::schedule() const { return schedule_; }

std::vector<Optimizer*> Pipeline::optimizers() {
  std::vector<Optimizer*> out;
  for (auto& s : stages_)
    if (s->optimizer) out.push_back(s->optimizer.get());
  return out;
}

std::vector<ParameterSet*> Pipeline::parameter_sets() {
  std::vector<ParameterSet*> out;
  for (auto& s : stages_) out.push_back(&s->params);
  return out;
}

void Pipeline::initialize(uint64_t seed) {
  for (auto& s : stages_) s->params.initialize(seed);
}

void Pipeline::load(const SafeTensors& file, const std::string& what) {
  for (auto& s : stages_) s->params.load_values(file, what, /*allow_unexpected=*/true);
}

void Pipeline::save_grads(SafeTensors& file) const {
  std::map<std::string, bool> seen;
  for (const auto& s : stages_)
    for (const auto& e : s->params.entries())
      if (!seen[e.name]) {
        seen[e.name] = true;
        file.add(e.name, e.type, e.grad.data());
      }
}

void Pipeline::save_values(SafeTensors& file) const {
  std::map<std::string, bool> seen;
  for (const auto& s : stages_)
    for (const auto& e : s->params.entries())
      if (!seen[e.name]) {
        seen[e.name] = true;
        file.add(e.name, e.type, e.value.data());
      }
}

void Pipeline::start() {
  const TrainerOptions& t = options_.train;
  for (auto& s : stages_) {
    if (t.optimizer == "sgd") {
      s->optimizer = std::make_unique<Sgd>(s->params.optimizer_params(), SgdOptions{t.momentum, t.weight_decay});
    } else if (t.optimizer == "adamw") {
      AdamWOptions adam;
      adam.weight_decay = t.weight_decay;
      s->optimizer = std::make_unique<AdamW>(s->params.optimizer_params(), adam);
    } else {
      throw Error(fmt::format("unknown optimizer '{}'; use sgd or adamw", t.optimizer));
    }
  }
  lr_ = t.cosine || t.warmup > 0 ? LrSchedule::warmup_cosine(t.lr, t.lr / 10, t.warmup, t.steps)
                                 : LrSchedule::constant(t.lr);
}

void Pipeline::run_device(int device, const std::vector<std::pair<std::string, const void*>>& inputs, bool backward,
                          PipelineStepResult& result) {
  using Fault = PipelineOptions::Fault;
  auto t0 = Clock::now();
  const Fault& fault = options_.fault;
  auto faulty = [&](const Action& a, Fault::Kind kind) {
    return fault.kind == kind && fault.stage == a.stage && fault.microbatch == a.microbatch;
  };
  for (const Action& a : schedule_.per_device[device]) {
    if (a.kind == ActionKind::step) break;
    // A forward pass keeps the schedule's order of forwards and activation
    // hand-offs; with the backward actions gone no wait can close a cycle.
    if (!backward && a.kind != ActionKind::forward && a.kind != ActionKind::send_act &&
        a.kind != ActionKind::recv_act)
      continue;
    Stage& st = *stages_[a.stage];
    double start = since(t0);
    try {
      switch (a.kind) {
        case ActionKind::recv_act:
          shared_->wait(shared_->act_ready, a.stage, a.stage - 1, a.microbatch, options_.timeout_s, "activations");
          break;
        case ActionKind::recv_grad:
          shared_->wait(shared_->grad_ready, a.stage, a.stage + 1, a.microbatch, options_.timeout_s, "gradients");
          break;
        case ActionKind::send_act:
          if (faulty(a, Fault::Kind::drop_send)) break;
          shared_->mark(shared_->act_ready, a.stage, a.microbatch);
          break;
        case ActionKind::send_grad:
          shared_->mark(shared_->grad_ready, a.stage, a.microbatch);
          break;
        case ActionKind::forward: {
          if (faulty(a, Fault::Kind::throw_error)) throw Error("injected fault");
          const Function& g = st.program->graph();
          std::vector<const void*> args;
          size_t recv_index = 0, input_index = 0;
          for (size_t i = 0; i < g.args.size(); ++i) {
            int model_input = st.input_args[i];
            if (model_input >= 0) {
              const std::string& name = st.spec.inputs[model_input];
              auto it = std::find_if(inputs.begin(), inputs.end(), [&](auto& p) { return p.first == name; });
              if (it == inputs.end()) throw Error(fmt::format("the batch has no input '{}'", name));
              int64_t bytes = st.input_sample_bytes[input_index++];
              args.push_back(static_cast<const std::byte*>(it->second) + bytes * a.microbatch);
            } else {
              args.push_back(stages_[a.stage - 1]->sends[a.microbatch][recv_index++].data());
            }
          }
          std::vector<void*> results;
          if (st.spec.has_loss) results.push_back(&st.losses[a.microbatch]);
          for (auto& b : st.sends[a.microbatch]) results.push_back(b.data());
          if (st.free_slots.empty()) throw Error("no stash slot free: the schedule keeps more in flight than planned");
          int slot = st.free_slots.back();
          st.free_slots.pop_back();
          st.slot_of[a.microbatch] = slot;
          st.inflight += 1;
          st.peak = std::max(st.peak, st.inflight);
          st.program->forward(slot, args, results);
          if (!backward) {
            // No backward will read the stash: the slot is free again.
            st.free_slots.push_back(slot);
            st.inflight -= 1;
          }
          break;
        }
        case ActionKind::backward:
        case ActionKind::backward_input: {
          // Seeds live until the step ends: the weight part may read them later.
          std::vector<const void*> seeds;
          size_t send_index = 0;
          for (int r : st.float_outputs) {
            if (st.spec.has_loss && r == 0) {
              seeds.push_back(&st.loss_seed);
            } else {
              seeds.push_back(stages_[a.stage + 1]->send_grads[a.microbatch][send_index++].data());
            }
          }
          int slot = st.slot_of[a.microbatch];
          if (st.program->split())
            st.program->backward_input(slot, seeds);
          else
            st.program->backward(slot, seeds);
          for (size_t i = 0; i < st.send_grads[a.microbatch].size(); ++i)
            std::memcpy(st.send_grads[a.microbatch][i].data(), st.program->input_grad(static_cast<int>(i)),
                        st.send_grads[a.microbatch][i].size());
          st.inflight -= 1;
          if (!st.program->split()) st.free_slots.push_back(slot);
          break;
        }
        case ActionKind::backward_weight:
          st.program->backward_weight(st.slot_of[a.microbatch]);
          st.free_slots.push_back(st.slot_of[a.microbatch]);
          break;
        case ActionKind::step:
          break;
      }
    } catch (const Stopped&) {
      return;  // another stage failed first; its error is the step's
    } catch (const Timeout& t) {
      shared_->fail(t.message);
      return;
    } catch (const Error& e) {
      shared_->fail(fmt::format("stage {}: {}", a.stage, e.message()));
      return;
    } catch (const std::bad_alloc&) {
      shared_->fail(fmt::format("stage {}: out of memory", a.stage));
      return;
    } catch (const std::exception& e) {
      // Not a pf::Error: a defect rather than bad input, but it must still
      // stop every worker instead of escaping the thread (std::terminate).
      shared_->fail(fmt::format("stage {}: {}", a.stage, e.what()));
      return;
    } catch (...) {
      shared_->fail(fmt::format("stage {}: unknown exception", a.stage));
      return;
    }
    if (options_.trace || is_compute(a.kind)) {
      std::lock_guard lock(shared_->mutex);
      result.trace.push_back({device, a, start, since(t0)});
    }
  }
}

void Pipeline::sum_tied_grads() {
  std::map<std::string, std::vector<ParameterSet::Entry*>> copies;
  for (auto& s : stages_)
    for (auto& e : s->params.entries()) copies[e.name].push_back(&e);
  for (auto& [name, list] : copies) {
    if (list.size() < 2) continue;
    std::vector<float>& total = list[0]->grad;
    for (size_t k = 1; k < list.size(); ++k)
      for (size_t i = 0; i < total.size(); ++i) total[i] += list[k]->grad[i];
    for (size_t k = 1; k < list.size(); ++k) list[k]->grad = total;
  }
}

PipelineStepResult Pipeline::run_step(const std::vector<std::pair<std::string, const void*>>& inputs, bool backward) {
  PipelineStepResult result;
  for (auto& s : stages_) {
    if (backward) s->params.zero_grads();
    s->peak = 0;
  }
  shared_->failed = false;
  shared_->error.clear();
  auto t0 = Clock::now();
  std::vector<std::thread> workers;
  for (int d = 0; d < devices(); ++d)
    workers.emplace_back([this, d, &inputs, backward, &result] { run_device(d, inputs, backward, result); });
  for (auto& w : workers) w.join();
  if (shared_->failed) {
    for (auto& s : stages_) {
      s->free_slots.clear();
      for (int k = s->program->slots() - 1; k >= 0; --k) s->free_slots.push_back(k);
      s->inflight = 0;
    }
    for (auto& row : shared_->act_ready) std::fill(row.begin(), row.end(), 0);
    for (auto& row : shared_->grad_ready) std::fill(row.begin(), row.end(), 0);
    std::fill(shared_->waiting.begin(), shared_->waiting.end(), Waiting{});
    throw Error(shared_->error);
  }
  result.seconds = since(t0);

  Stage& last = *stages_.back();
  for (float l : last.losses) result.loss += l;
  result.loss /= options_.microbatches;
  double busy = 0;
  for (const TraceEvent& e : result.trace)
    if (is_compute(e.action.kind)) busy += e.end_s - e.start_s;
  result.bubble = std::max(0.0, 1.0 - busy / (devices() * result.seconds));
  for (auto& s : stages_) {
    result.peak_inflight.push_back(s->peak);
    result.peak_stash_bytes.push_back(s->peak * s->program->stash_bytes());
  }
  return result;
}

PipelineStepResult Pipeline::forward(const std::vector<std::pair<std::string, const void*>>& inputs) {
  return run_step(inputs, /*backward=*/false);
}

PipelineStepResult Pipeline::train_step(const std::vector<std::pair<std::string, const void*>>& inputs,
                                        bool step_optimizer) {
  PipelineStepResult result = run_step(inputs, /*backward=*/true);
  sum_tied_grads();
  // The global norm counts each tied parameter once.
  std::map<std::string, bool> seen;
  double sq = 0;
  for (auto& s : stages_)
    for (auto& e : s->params.entries())
      if (!seen[e.name]) {
        seen[e.name] = true;
        for (float g : e.grad) sq += static_cast<double>(g) * g;
      }
  result.grad_norm = std::sqrt(sq);
  if (!step_optimizer) return result;
  if (!lr_) throw Error("Pipeline::start() was not called");
  double factor = options_.train.clip > 0 ? clip_factor(result.grad_norm, options_.train.clip) : 1.0;
  result.lr = lr_->at(stages_[0]->optimizer->step_count());
  if (!std::isfinite(result.grad_norm)) return result;
  for (auto& s : stages_) {
    std::vector<Param> views = s->params.optimizer_params();
    if (factor != 1.0) scale_grads(views, factor);
    s->optimizer->step(result.lr);
  }
  return result;
}

std::string trace_json(const std::vector<TraceEvent>& events, int devices) {
  std::string out = "{\"traceEvents\": [\n";
  bool first = true;
  for (int d = 0; d < devices; ++d) {
    out += fmt::format("{}{{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": {}, "
                       "\"args\": {{\"name\": \"device {}\"}}}}",
                       first ? "" : ",\n", d, d);
    first = false;
  }
  for (const TraceEvent& e : events) {
    std::string name;
    switch (e.action.kind) {
      case ActionKind::forward: name = fmt::format("F{}", e.action.microbatch); break;
      case ActionKind::backward: name = fmt::format("B{}", e.action.microbatch); break;
      case ActionKind::backward_input: name = fmt::format("B{}", e.action.microbatch); break;
      case ActionKind::backward_weight: name = fmt::format("W{}", e.action.microbatch); break;
      default: name = std::string(action_kind_name(e.action.kind)); break;
    }
    out += fmt::format(",\n{{\"name\": \"{}\", \"cat\": \"{}\", \"ph\": \"X\", \"pid\": 0, \"tid\": {}, "
                       "\"ts\": {:.3f}, \"dur\": {:.3f}, \"args\": {{\"stage\": {}, \"microbatch\": {}}}}}",
                       name, action_kind_name(e.action.kind), e.device, e.start_s * 1e6,
                       (e.end_s - e.start_s) * 1e6, e.action.stage, e.action.microbatch);
  }
  return out + "\n]}\n";
}

}  // namespace pf
