// Pipelined training on CPU devices in one process.
#include "runtime/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <mutex>
#include <set>
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
  // The watchdog's view of the workers: the computation each is inside, and
  // which have returned from the step.
  struct Busy {
    bool active = false;
    Action action;
    Clock::time_point since;
  };
  std::vector<Busy> busy;   // [device]
  std::vector<char> done;   // [device]

  void enter(int device, const Action& a) {
    std::lock_guard lock(mutex);
    busy[static_cast<size_t>(device)] = {true, a, Clock::now()};
  }
  void leave(int device) {
    std::lock_guard lock(mutex);
    busy[static_cast<size_t>(device)].active = false;
  }
  void finish(int device) {
    {
      std::lock_guard lock(mutex);
      done[static_cast<size_t>(device)] = 1;
    }
    changed.notify_all();
  }

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
    if (!ok && !failed) {
      // A computation that outlived the limit explains the wait better.
      std::string stuck = stuck_computation(timeout_s);
      throw Timeout{stuck.empty() ? stalled(timeout_s) : stuck};
    }
    waiting[stage] = {};
    if (failed) throw Stopped{};
    table[sender][mb] = 0;
  }

  /// The watchdog's message for a computation running longer than
  /// `timeout_s`, or "" when none is. Called with the mutex held.
  std::string stuck_computation(double timeout_s) const {
    const Clock::time_point now = Clock::now();
    for (const Busy& b : busy)
      if (b.active && now - b.since >= std::chrono::duration<double>(timeout_s))
        return fmt::format("watchdog: stage {} has spent more than {:g} s in {} and does not return", b.action.stage,
                           timeout_s, describe(b.action));
    return "";
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

struct Pipeline::StepState {
  std::vector<std::pair<std::string, const void*>> inputs;
  PipelineStepResult result;
  PipelineOptions options;
  Schedule schedule;
  std::vector<Stage*> stages;
  Shared* shared = nullptr;
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
  bool grads_written = false;  // this step: the first backward writes the gradients, later ones add to them
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

Pipeline::~Pipeline() {
  if (!stuck_) return;
  // A worker the watchdog gave up on may still be inside a kernel that reads
  // and writes the stages: they stay allocated until the process ends.
  for (auto& s : stages_) (void)s.release();
  (void)shared_.release();
}


std::vector<int> Pipeline::watch_workers() {
  const auto limit = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.timeout_s));
  Shared& sh = *shared_;
  std::unique_lock lock(sh.mutex);
  std::optional<Clock::time_point> give_up_at;  // once the step has failed: how long the others get to return
  auto finished = [&] { return std::all_of(sh.done.begin(), sh.done.end(), [](char c) { return c != 0; }); };
  while (!finished()) {
    const Clock::time_point now = Clock::now();
    if (sh.failed && !give_up_at) give_up_at = now + limit;
    if (give_up_at && now >= *give_up_at) break;
    Clock::time_point wake = give_up_at ? *give_up_at : now + limit;
    if (!sh.failed) {
      std::string stuck = sh.stuck_computation(options_.timeout_s);
      if (!stuck.empty()) {
        sh.failed = true;
        sh.error = std::move(stuck);
        sh.changed.notify_all();
        continue;
      }
    }
    for (size_t d = 0; d < sh.busy.size(); ++d)
      if (!sh.done[d] && sh.busy[d].active) wake = std::min(wake, sh.busy[d].since + limit);
    sh.changed.wait_until(lock, std::max(wake, now + std::chrono::milliseconds(1)));
  }
  std::vector<int> stuck;
  for (size_t d = 0; d < sh.done.size(); ++d)
    if (!sh.done[d]) stuck.push_back(static_cast<int>(d));
  return stuck;
}

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

void Pipeline::run_device(StepState& w, int device, bool backward) {
  const std::vector<std::pair<std::string, const void*>>& inputs = w.inputs;
  PipelineStepResult& result = w.result;
  // However the walk ends, the watchdog learns that this worker returned.
  struct Finish {
    Shared& shared;
    int device;
    ~Finish() { shared.finish(device); }
  } finish{*w.shared, device};
  using Fault = PipelineOptions::Fault;
  auto t0 = Clock::now();
  const Fault& fault = w.options.fault;
  auto faulty = [&](const Action& a, Fault::Kind kind) {
    return fault.kind == kind && fault.stage == a.stage && fault.microbatch == a.microbatch;
  };
  for (const Action& a : w.schedule.per_device[device]) {
    if (a.kind == ActionKind::step) break;
    // A forward pass keeps the schedule's order of forwards and activation
    // hand-offs; with the backward actions gone no wait can close a cycle.
    if (!backward && a.kind != ActionKind::forward && a.kind != ActionKind::send_act &&
        a.kind != ActionKind::recv_act)
      continue;
    Stage& st = *w.stages[a.stage];
    double start = since(t0);
    const bool compute = is_compute(a.kind);
    if (compute) w.shared->enter(device, a);
    try {
      switch (a.kind) {
        case ActionKind::recv_act:
          w.shared->wait(w.shared->act_ready, a.stage, a.stage - 1, a.microbatch, w.options.timeout_s, "activations");
          break;
        case ActionKind::recv_grad:
          w.shared->wait(w.shared->grad_ready, a.stage, a.stage + 1, a.microbatch, w.options.timeout_s, "gradients");
          break;
        case ActionKind::send_act:
          if (faulty(a, Fault::Kind::drop_send)) break;
          w.shared->mark(w.shared->act_ready, a.stage, a.microbatch);
          break;
        case ActionKind::send_grad:
          w.shared->mark(w.shared->grad_ready, a.stage, a.microbatch);
          break;
        case ActionKind::forward: {
          if (faulty(a, Fault::Kind::throw_error)) throw Error("injected fault");
          if (faulty(a, Fault::Kind::stall)) {
            // A kernel that does not return: nothing here looks at the failure flag.
            const auto until = Clock::now() + std::chrono::duration<double>(4 * w.options.timeout_s);
            while (Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
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
              args.push_back(w.stages[a.stage - 1]->sends[a.microbatch][recv_index++].data());
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
              seeds.push_back(w.stages[a.stage + 1]->send_grads[a.microbatch][send_index++].data());
            }
          }
          int slot = st.slot_of[a.microbatch];
          if (st.program->split()) {
            st.program->backward_input(slot, seeds);
          } else {
            st.program->backward(slot, seeds, /*overwrite_grads=*/!st.grads_written);
            st.grads_written = true;
          }
          for (size_t i = 0; i < st.send_grads[a.microbatch].size(); ++i)
            std::memcpy(st.send_grads[a.microbatch][i].data(), st.program->input_grad(static_cast<int>(i)),
                        st.send_grads[a.microbatch][i].size());
          st.inflight -= 1;
          if (!st.program->split()) st.free_slots.push_back(slot);
          break;
        }
        case ActionKind::backward_weight:
          st.program->backward_weight(st.slot_of[a.microbatch], /*overwrite_grads=*/!st.grads_written);
          st.grads_written = true;
          st.free_slots.push_back(st.slot_of[a.microbatch]);
          break;
        case ActionKind::step:
          break;
      }
    } catch (const Stopped&) {
      return;  // another stage failed first; its error is the step's
    } catch (const Timeout& t) {
      w.shared->fail(t.message);
      return;
    } catch (const Error& e) {
      w.shared->fail(fmt::format("stage {}: {}", a.stage, e.message()));
      return;
    } catch (const std::bad_alloc&) {
      w.shared->fail(fmt::format("stage {}: out of memory", a.stage));
      return;
    } catch (const std::exception& e) {
      // Not a pf::Error: a defect rather than bad input, but it must still
      // stop every worker instead of escaping the thread (std::terminate).
      w.shared->fail(fmt::format("stage {}: {}", a.stage, e.what()));
      return;
    } catch (...) {
      w.shared->fail(fmt::format("stage {}: unknown exception", a.stage));
      return;
    }
    if (compute) w.shared->leave(device);
    if (w.options.trace || compute) {
      std::lock_guard lock(w.shared->mutex);
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
  if (stuck_) throw Error(fmt::format("this pipeline cannot run again: {}", *stuck_));
  for (auto& s : stages_) {
    s->grads_written = false;  // no zeroing pass: the first backward of the step writes them
    s->peak = 0;
  }
  shared_->failed = false;
  shared_->error.clear();
  shared_->busy.assign(static_cast<size_t>(devices()), {});
  shared_->done.assign(static_cast<size_t>(devices()), 0);
  // What the workers read and write lives on the heap: a worker that the
  // watchdog gives up on may still hold it after this call returns (and the
  // stages and hand-offs it points to are then never freed).
  auto state = std::make_shared<StepState>();
  state->inputs = inputs;
  state->options = options_;
  state->schedule = schedule_;
  for (auto& s : stages_) state->stages.push_back(s.get());
  state->shared = shared_.get();
  auto t0 = Clock::now();
  std::vector<std::thread> workers;
  for (int d = 0; d < devices(); ++d) workers.emplace_back([d, state, backward] { run_device(*state, d, backward); });
  const std::vector<int> stuck = watch_workers();
  for (int d = 0; d < devices(); ++d) {
    if (std::find(stuck.begin(), stuck.end(), d) == stuck.end())
      workers[static_cast<size_t>(d)].join();
    else
      workers[static_cast<size_t>(d)].detach();  // it cannot be interrupted; the pipeline is retired
  }
  if (!stuck.empty()) {
    stuck_ = shared_->error;
    throw Error(shared_->error);
  }
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
  PipelineStepResult result = std::move(state->result);
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
  // Each device reads its stages' gradients for the global norm, then steps
  // their optimizers, in parallel; a tied parameter's norm counts once.
  std::vector<std::vector<Param>> owned(stages_.size()), views(stages_.size());
  std::set<std::string> seen;
  for (size_t s = 0; s < stages_.size(); ++s) {
    views[s] = stages_[s]->params.optimizer_params();
    for (const Param& p : views[s])
      if (seen.insert(p.name).second) owned[s].push_back(p);
  }
  std::vector<double> sq(stages_.size(), 0.0);
  for_each_device([&](int s) { sq[static_cast<size_t>(s)] = grad_sq_norm(owned[static_cast<size_t>(s)]); });
  double total = 0;
  for (double x : sq) total += x;
  result.grad_norm = std::sqrt(total);
  if (!step_optimizer) return result;
  if (!lr_) throw Error("Pipeline::start() was not called");
  double factor = options_.train.clip > 0 ? clip_factor(result.grad_norm, options_.train.clip) : 1.0;
  result.lr = lr_->at(stages_[0]->optimizer->step_count());
  if (!std::isfinite(result.grad_norm)) return result;
  for_each_device([&](int s) {
    if (factor != 1.0) scale_grads(views[static_cast<size_t>(s)], factor);
    stages_[static_cast<size_t>(s)]->optimizer->step(result.lr);
  });
  return result;
}

void Pipeline::for_each_device(const std::function<void(int stage)>& fn) {
  std::vector<std::thread> workers;
  for (int d = 0; d < devices(); ++d)
    workers.emplace_back([&, d] {
      for (int s = d; s < stages(); s += devices()) fn(s);
    });
  for (auto& w : workers) w.join();
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
