// Pipelined training in one process, each stage on the CPU or a CUDA device.
#include "runtime/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "ir/printer.h"
#include "ir/verifier.h"
#include "runtime/safetensors.h"
#include "runtime/stage_program.h"
#ifdef PF_CUDA
#include "runtime/cuda_stage_program.h"
#endif

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

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
    case ActionKind::step: return "the wait for its GPU work";
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
    // While some stage is computing, the wait may be its consequence: the
    // main thread times computations, and its failure wakes this wait. Only
    // a wait with nothing computing anywhere (a lost hand-off) times out here.
    while (!changed.wait_for(lock, std::chrono::duration<double>(timeout_s),
                             [&] { return failed || table[sender][mb]; })) {
      const bool computing = std::any_of(busy.begin(), busy.end(), [](const Busy& b) { return b.active; });
      if (!computing) throw Timeout{stalled(timeout_s)};
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

  /// Called in a catch block of a worker running stage `stage`: records the
  /// exception being handled as the step's failure (the first one wins).
  void fail_with_current_exception(int stage) {
    try {
      throw;
    } catch (const Stopped&) {
      // another stage failed first; its error is the step's
    } catch (const Timeout& t) {
      fail(t.message);
    } catch (const Error& e) {
      fail(fmt::format("stage {}: {}", stage, e.message()));
    } catch (const std::bad_alloc&) {
      fail(fmt::format("stage {}: out of memory", stage));
    } catch (const std::exception& e) {
      // Not a pf::Error: a defect rather than bad input, but it must still
      // stop every worker instead of escaping the thread (std::terminate).
      fail(fmt::format("stage {}: {}", stage, e.what()));
    } catch (...) {
      fail(fmt::format("stage {}: unknown exception", stage));
    }
  }
};

namespace {

/// How a stage reads what a neighbour hands it: nothing to do when both are
/// on the CPU (it reads the neighbour's buffers in place), else the copies
/// StageRunner::receive makes (or, dst == src, only orders).
struct Inbound {
  bool active = false;
  std::vector<std::vector<HandOffCopy>> copies;  // [mb][tensor]
};

}  // namespace

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
  std::unique_ptr<StageRunner> program;              // a StageProgram, or a CudaStageProgram on a GPU
  std::unique_ptr<Optimizer> optimizer;
  std::vector<int> input_args;                       // per graph argument: index into spec.inputs, or -1
  std::vector<int64_t> input_stride_bytes;           // per model input the stage reads: bytes from one micro-batch to the next (0: whole)
  std::vector<TensorType> input_types;               // per model input the stage reads: its micro-batch type
  std::vector<int> float_outputs;                    // differentiated results
  int results = 0;                                   // the graph's own results (the loss, then what it sends)
  // Hand-offs (connect_stages), each buffer in the memory of the stage that writes it.
  std::vector<std::vector<void*>> sends;             // [mb][send i]: activations its forward writes
  std::vector<int64_t> send_bytes;                   // [send i]
  std::vector<std::vector<void*>> send_grads;        // [mb][recv i]: gradients going back
  std::vector<TensorType> send_grad_types;           // [recv i], as the model declares them
  std::vector<int64_t> send_grad_bytes;              // [recv i], as the stage stores them
  std::vector<std::vector<const void*>> recvs;       // [mb][recv i]: what its forward reads
  std::vector<std::vector<const void*>> seeds_in;    // [mb][send i]: the gradients its backward reads
  Inbound from_previous, from_next;
  std::vector<float> losses;                         // [mb]
  std::vector<void*> loss_out;                       // [mb]: where the forward writes the loss (&losses[mb] on the CPU)
  const void* loss_seed = nullptr;                   // the loss's gradient: 1/m (the step's loss is the mean)
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
  const std::vector<int>& gpus = options.stage_gpus;
  if (!gpus.empty() && static_cast<int>(gpus.size()) != n)
    throw Error(fmt::format("stage_gpus places {} stages, but the pipeline has {}", gpus.size(), n));
  if (options.dtype != DType::f32 && options.dtype != DType::bf16)
    throw Error(fmt::format("pipeline dtype {}: stages compute in f32 or bf16", dtype_name(options.dtype)));
  const auto first_gpu = std::find_if(gpus.begin(), gpus.end(), [](int g) { return g >= 0; });
#ifdef PF_CUDA
  std::optional<CudaStages> cuda_stages;
  if (first_gpu != gpus.end()) cuda_stages.emplace(gpus, options.allow_tf32);
#else
  if (first_gpu != gpus.end())
    throw Error(fmt::format("stage {} is placed on CUDA device {}, but this pipeforge was built without CUDA",
                            first_gpu - gpus.begin(), *first_gpu));
#endif
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
      if (it != st->spec.inputs.end()) {
        // Micro-batch k reads bytes [k * stride, (k + 1) * stride) of a split
        // input, and all of a whole one.
        const bool whole = std::find(st->spec.whole_inputs.begin(), st->spec.whole_inputs.end(), name) !=
                           st->spec.whole_inputs.end();
        st->input_stride_bytes.push_back(whole ? 0 : graph.type_of(graph.args[a]).bytes());
        st->input_types.push_back(graph.type_of(graph.args[a]));
      }
    }
    st->results = results;
    for (const std::string& name : ad.wrt_inputs) st->send_grad_types.push_back(graph.type_of(graph.find_value(name)));
    st->losses.assign(m, 0.0f);
    int slots = std::max(1, sim.peak_stashed[s]);
    for (int k = slots - 1; k >= 0; --k) st->free_slots.push_back(k);
    st->slot_of.assign(m, -1);
    const int gpu = gpus.empty() ? -1 : gpus[s];
    if (gpu < 0) {
      st->program = std::make_unique<StageProgram>(std::move(module), micro_binding, std::move(gradients), st->params,
                                                   slots, /*caller_results=*/true, split);
    } else {
#ifdef PF_CUDA
      CudaStageOptions co;
      co.microbatches = m;
      co.slots = slots;
      co.split = split;
      co.float_dtype = options.dtype;
      st->program = cuda_stages->make(s, std::move(module), micro_binding, std::move(gradients), st->params, co);
#endif
    }
    stages_.push_back(std::move(st));
  }
  connect_stages();
  shared_->waiting.assign(n, Waiting{});
  shared_->act_ready.assign(n, std::vector<char>(m, 0));
  shared_->grad_ready.assign(n, std::vector<char>(m, 0));
}

namespace {

/// Stage `receiver`'s view of `buffers` ([mb][tensor], `bytes` each), which
/// `sender` writes: the buffers themselves when both share a memory, else
/// buffers of the receiver's own (pinned host memory from a GPU sender) that
/// `in` copies into.
void link(StageRunner& receiver, StageRunner& sender, const std::vector<std::vector<void*>>& buffers,
          const std::vector<int64_t>& bytes, std::vector<std::vector<const void*>>& views, Inbound& in) {
  const StagePlace r = receiver.place(), s = sender.place();
  in.active = !(r.on_host() && s.on_host());
  views.assign(buffers.size(), {});
  in.copies.assign(in.active ? buffers.size() : 0, {});
  for (size_t mb = 0; mb < buffers.size(); ++mb)
    for (size_t i = 0; i < buffers[mb].size(); ++i) {
      void* src = buffers[mb][i];
      void* dst = r == s ? src : r.on_host() ? sender.allocate_host(bytes[i]) : receiver.allocate(bytes[i]);
      views[mb].push_back(dst);
      if (in.active) in.copies[mb].push_back({dst, src, bytes[i]});
    }
}

}  // namespace

void Pipeline::connect_stages() {
  const int n = stages(), m = options_.microbatches;
  for (int s = 0; s + 1 < n; ++s) {
    const StageRunner &a = *stages_[s]->program, &b = *stages_[s + 1]->program;
    if (a.float_dtype() != b.float_dtype())
      throw Error(fmt::format("stages {} and {} would hand over floats as {} and {}: a bf16 plan computes in bf16 on "
                              "CUDA devices and in f32 on CPU devices; place both on the same kind of device or "
                              "compile the plan with --dtype f32",
                              s, s + 1, dtype_name(a.float_dtype()), dtype_name(b.float_dtype())));
  }
  // A buffer stage s writes and stage `reader` reads: in s's memory, but
  // pinned (allocated by the reader) when s is on the CPU and the reader on
  // a GPU, so that the reader's copies run asynchronously at bus speed.
  auto buffer = [&](int s, int reader, int64_t bytes) -> void* {
    StageRunner& own = *stages_[s]->program;
    if (reader >= 0 && reader < n && own.place().on_host() && !stages_[reader]->program->place().on_host())
      return stages_[reader]->program->allocate_host(bytes);
    return own.allocate(bytes);
  };
  for (int s = 0; s < n; ++s) {
    Stage& st = *stages_[s];
    StageRunner& p = *st.program;
    st.send_bytes.clear();
    for (int r = st.spec.has_loss ? 1 : 0; r < st.results; ++r) st.send_bytes.push_back(p.result_type(r).bytes());
    st.send_grad_bytes.clear();
    for (const TensorType& t : st.send_grad_types) st.send_grad_bytes.push_back(stored_bytes(t, p.float_dtype()));
    // Every micro-batch's buffers, allocated (and touched) once.
    st.sends.assign(static_cast<size_t>(m), {});
    st.send_grads.assign(static_cast<size_t>(m), {});
    for (auto& row : st.sends)
      for (int64_t bytes : st.send_bytes) row.push_back(buffer(s, s + 1, bytes));
    for (auto& row : st.send_grads)
      for (int64_t bytes : st.send_grad_bytes) row.push_back(buffer(s, s - 1, bytes));
    st.loss_out.clear();
    if (st.spec.has_loss) {
      const int64_t bytes = p.result_type(0).bytes();
      auto* base = p.place().on_host() ? nullptr : static_cast<std::byte*>(p.allocate(bytes * m));
      for (int mb = 0; mb < m; ++mb)
        st.loss_out.push_back(base ? static_cast<void*>(base + bytes * mb) : &st.losses[static_cast<size_t>(mb)]);
    }
    st.loss_seed = p.scalar(1.0f / static_cast<float>(m));
  }
  for (int s = 0; s < n; ++s) {
    Stage& st = *stages_[s];
    if (s > 0) {
      const Stage& prev = *stages_[s - 1];
      link(*st.program, *prev.program, prev.sends, prev.send_bytes, st.recvs, st.from_previous);
    }
    if (s + 1 < n) {
      const Stage& next = *stages_[s + 1];
      link(*st.program, *next.program, next.send_grads, next.send_grad_bytes, st.seeds_in, st.from_next);
    }
  }
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

namespace {

/// Per plan stage, the CUDA device it runs on (-1: the CPU): the plan's k-th
/// device of kind "cuda" is GPU k % the number visible. Empty when the plan
/// names no GPU. Throws when it does and this process cannot use one.
std::vector<int> gpus_of_stages(const Plan& plan) {
  std::vector<int> cuda_index(plan.devices.size(), -1);  // per plan device: its rank among the CUDA ones
  int count = 0;
  for (size_t d = 0; d < plan.devices.size(); ++d)
    if (plan.devices[d].kind == "cuda") cuda_index[d] = count++;
  const auto first = std::find_if(plan.stages.begin(), plan.stages.end(), [&](const PlanStage& s) {
    return cuda_index.at(static_cast<size_t>(s.device)) >= 0;
  });
  if (first == plan.stages.end()) return {};
  const std::string where =
      fmt::format("plan stage {} is on {}", first->index, plan.devices.at(static_cast<size_t>(first->device)).name);
#ifdef PF_CUDA
  const int visible = visible_cuda_devices();
  if (visible == 0)
    throw Error(where +
                " but no CUDA device is visible; compile the plan for cpu devices or run on a machine with a GPU");
  std::vector<int> out;
  for (const PlanStage& s : plan.stages) {
    const int k = cuda_index.at(static_cast<size_t>(s.device));
    out.push_back(k < 0 ? -1 : k % visible);
  }
  return out;
#else
  throw Error(where + " but this pipeforge was built without CUDA; compile the plan for cpu devices or build "
                      "pipeforge where nvcc is found (-DPF_CUDA=ON)");
#endif
}

}  // namespace

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
  options.dtype = plan.dtype;
  options.stage_gpus = options.cpu_only ? std::vector<int>{} : gpus_of_stages(plan);
  std::vector<StageModule> stages;
  for (const PlanStage& ps : plan.stages) {
    StageModule sm;
    sm.module = stage_program(plan, ps, "forward");
    sm.layers = ps.layers;
    for (const PlanTensor& t : ps.inputs) {
      sm.inputs.push_back(t.name);
      if (t.whole) sm.whole_inputs.push_back(t.name);
    }
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

void Pipeline::set_profile(bool on) {
  for (auto& s : stages_)
    if (s->program) s->program->set_profile(on);
}

void Pipeline::reset_profile() {
  for (auto& s : stages_)
    if (s->program) s->program->reset_profile();
}

std::vector<backend::OpTime> Pipeline::op_times(int stage) const {
  const Stage& s = *stages_.at(static_cast<size_t>(stage));
  return s.program ? s.program->op_times() : std::vector<backend::OpTime>{};
}

std::vector<ParameterSet*> Pipeline::parameter_sets() {
  std::vector<ParameterSet*> out;
  for (auto& s : stages_) out.push_back(&s->params);
  return out;
}

void Pipeline::initialize(uint64_t seed) {
  for (auto& s : stages_) {
    s->params.initialize(seed);
    s->program->upload(nullptr);
  }
}

void Pipeline::load(const SafeTensors& file, const std::string& what) {
  for (auto& s : stages_) {
    s->params.load_values(file, what, /*allow_unexpected=*/true);
    s->program->upload(nullptr);
  }
}

void Pipeline::copy_to_host() {
  for (auto& s : stages_) s->program->download(s->optimizer.get());
}

void Pipeline::copy_to_devices() {
  for (auto& s : stages_) s->program->upload(s->optimizer.get());
}

void Pipeline::save_grads(SafeTensors& file) const {
  for (const auto& s : stages_) s->program->download(nullptr);
  std::map<std::string, bool> seen;
  for (const auto& s : stages_)
    for (const auto& e : s->params.entries())
      if (!seen[e.name]) {
        seen[e.name] = true;
        file.add(e.name, e.type, e.grad.data());
      }
}

void Pipeline::save_values(SafeTensors& file) const {
  for (const auto& s : stages_) s->program->download(nullptr);
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
  for (auto& s : stages_) s->optimizer = s->program->make_optimizer(t);
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
          if (st.from_previous.active)
            st.program->receive(*w.stages[a.stage - 1]->program, HandOff::activations, a.microbatch,
                                st.from_previous.copies[a.microbatch]);
          break;
        case ActionKind::recv_grad:
          w.shared->wait(w.shared->grad_ready, a.stage, a.stage + 1, a.microbatch, w.options.timeout_s, "gradients");
          if (st.from_next.active)
            st.program->receive(*w.stages[a.stage + 1]->program, HandOff::gradients, a.microbatch,
                                st.from_next.copies[a.microbatch]);
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
              const int64_t bytes = st.input_stride_bytes[input_index];
              args.push_back(st.program->stage_input(static_cast<int>(i),
                                                     static_cast<const std::byte*>(it->second) + bytes * a.microbatch,
                                                     st.input_types[input_index]));
              ++input_index;
            } else {
              args.push_back(st.recvs[a.microbatch][recv_index++]);
            }
          }
          std::vector<void*> results;
          if (st.spec.has_loss) results.push_back(st.loss_out[a.microbatch]);
          for (void* b : st.sends[a.microbatch]) results.push_back(b);
          if (st.free_slots.empty()) throw Error("no stash slot free: the schedule keeps more in flight than planned");
          int slot = st.free_slots.back();
          st.free_slots.pop_back();
          st.slot_of[a.microbatch] = slot;
          st.inflight += 1;
          st.peak = std::max(st.peak, st.inflight);
          st.program->forward(slot, args, results);
          st.program->mark_produced(HandOff::activations, a.microbatch);
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
              seeds.push_back(st.loss_seed);
            } else {
              seeds.push_back(st.seeds_in[a.microbatch][send_index++]);
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
            st.program->copy_input_grad(static_cast<int>(i), st.send_grads[a.microbatch][i], st.send_grad_bytes[i]);
          st.program->mark_produced(HandOff::gradients, a.microbatch);
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
    } catch (...) {
      w.shared->fail_with_current_exception(a.stage);
      return;
    }
    if (compute) w.shared->leave(device);
    if (w.options.trace || compute) {
      std::lock_guard lock(w.shared->mutex);
      result.trace.push_back({device, a, start, since(t0)});
    }
  }
  // A CUDA stage's actions queue work and return: wait for it (watched like
  // a computation), so that the losses and gradients are there when the step
  // ends and bad data a kernel found fails the step. Nothing for CPU stages.
  for (size_t s = static_cast<size_t>(device); s < w.stages.size(); s += static_cast<size_t>(w.schedule.devices)) {
    Stage& st = *w.stages[s];
    if (st.program->place().on_host()) continue;
    w.shared->enter(device, Action{ActionKind::step, -1, static_cast<int>(s), -1});
    try {
      st.program->finish();
      if (st.spec.has_loss)
        st.program->read_floats(st.loss_out.front(), st.losses.data(), static_cast<int64_t>(st.losses.size()));
    } catch (...) {
      w.shared->fail_with_current_exception(static_cast<int>(s));
      return;
    }
    w.shared->leave(device);
  }
}

void Pipeline::sum_tied_grads() {
  struct Copy {
    StageRunner* stage;
    ParameterSet::Entry* entry;
  };
  std::map<std::string, std::vector<Copy>> copies;
  for (auto& s : stages_)
    for (auto& e : s->params.entries()) copies[e.name].push_back({s->program.get(), &e});
  for (auto& [name, list] : copies) {
    if (list.size() < 2) continue;
    const bool on_host =
        std::all_of(list.begin(), list.end(), [](const Copy& c) { return c.stage->place().on_host(); });
    if (on_host) {
      std::vector<float>& total = list[0].entry->grad;
      for (size_t k = 1; k < list.size(); ++k)
        for (size_t i = 0; i < total.size(); ++i) total[i] += list[k].entry->grad[i];
      for (size_t k = 1; k < list.size(); ++k) list[k].entry->grad = total;
      continue;
    }
    // A copy on a GPU: summed through host memory, in the same order. (Only
    // tied weights cross stages, once per step: the embedding of a GPT.)
    std::vector<float> total(list[0].entry->grad.size(), 0.0f), part(total.size());
    for (const Copy& c : list) {
      c.stage->read_grad(name, part.data());
      for (size_t i = 0; i < total.size(); ++i) total[i] += part[i];
    }
    for (const Copy& c : list) c.stage->write_grad(name, total.data());
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
  for_each_device([&](int s) {
    sq[static_cast<size_t>(s)] = stages_[static_cast<size_t>(s)]->program->grad_sq_norm(owned[static_cast<size_t>(s)]);
  });
  double total = 0;
  for (double x : sq) total += x;
  result.grad_norm = std::sqrt(total);
  if (!step_optimizer) return result;
  if (!lr_) throw Error("Pipeline::start() was not called");
  double factor = options_.train.clip > 0 ? clip_factor(result.grad_norm, options_.train.clip) : 1.0;
  result.lr = lr_->at(stages_[0]->optimizer->step_count());
  if (!std::isfinite(result.grad_norm)) return result;
  for_each_device([&](int s) {
    if (factor != 1.0) stages_[static_cast<size_t>(s)]->program->scale_grads(views[static_cast<size_t>(s)], factor);
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
