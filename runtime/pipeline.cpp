// Pipelined training in one process, each stage on the CPU or a CUDA device.
#include "runtime/pipeline.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "comm/local_communicator.h"
#include "runtime/plan_schedule.h"
#include "runtime/rank_worker.h"
#include "runtime/stage_program.h"
#ifdef PF_CUDA
#include "runtime/cuda_stage_program.h"
#endif

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

}  // namespace

Pipeline::Pipeline(const Plan& plan, std::vector<Module> programs, const PipelineOptions& options)
    : options_(options) {
  const int n = static_cast<int>(plan.stages.size());
  tensor_ = std::max(1, plan.tensor_parallel);
  experts_ = std::max(1, plan.expert_parallel);
  // Every stage's program, then each stage's parts: with tensor parallelism
  // one per place of its group, with expert parallelism one per replica.
  const int parts_per_stage = tensor_ > 1 ? tensor_ : experts_ > 1 ? experts_ : 0;
  if (static_cast<int>(programs.size()) != n * (1 + parts_per_stage))
    throw Error(fmt::format("{} stage programs for a plan of {} stages{}", programs.size(), n,
                            parts_per_stage > 0 ? fmt::format(" and their {} parts each", parts_per_stage) : ""));
  if (n % options.virtual_stages != 0)
    throw Error(fmt::format("{} stages do not divide into {} virtual stages per device", n, options.virtual_stages));
  schedule_ = planned_schedule(options.schedule, plan.schedule_actions, n / options.virtual_stages,
                               options.microbatches, options.virtual_stages, plan_action_costs(plan));
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
  replicas_ = replica_count(plan);
  shard_optimizer_ = plan.shard_optimizer && replicas_ > 1;
  if (replicas_ > 1 && first_gpu != gpus.end())
    throw Error(fmt::format("plan stage {} is on a GPU, and this pipeforge runs the data-parallel replicas of a plan "
                            "on CPU devices only; compile it without --data-parallel",
                            first_gpu - gpus.begin()));
  const int p = n / options.virtual_stages;
  ranks_ = static_cast<int>(plan.ranks.size());
  local_ranks_ = options.ranks;
  if (local_ranks_.empty())
    for (int r = 0; r < ranks_; ++r) local_ranks_.push_back(r);
  std::sort(local_ranks_.begin(), local_ranks_.end());
  for (int r : local_ranks_)
    if (r < 0 || r >= ranks_) throw Error(fmt::format("rank {} is not one of the plan's {} ranks", r, ranks_));
  if (options.comm && local_ranks_.size() != 1)
    throw Error(fmt::format("a communicator to other processes serves one rank, not {}", local_ranks_.size()));
  if (!options.comm && static_cast<int>(local_ranks_.size()) != ranks_)
    throw Error(fmt::format("{} of the plan's {} ranks run here: the others need a communicator between processes",
                            local_ranks_.size(), ranks_));
  auto local = [&](int rank) { return std::binary_search(local_ranks_.begin(), local_ranks_.end(), rank); };
  // One copy of the pipeline per replica and place in the tensor-parallel
  // groups: copy q = replica * T + place runs on ranks q * p...
  stages_.resize(static_cast<size_t>(replicas_ * tensor_ * n));
  for (int q = 0; q < replicas_ * tensor_; ++q) {
    const int replica = q / tensor_, shard = q % tensor_;
    for (int s = 0; s < n; ++s) {
      const int rank = rank_of_stage(plan, s, replica, shard);
      if (!local(rank)) continue;
      // A tensor-parallel stage runs as the part of its rank's place, a
      // stage whose experts the replicas share out as its replica's block.
      const int part_index = stage_part(plan, plan.ranks[static_cast<size_t>(rank)]);
      std::optional<PlanStage> part;
      if (part_index >= 0) part = shard_stage(plan.stages[static_cast<size_t>(s)], part_index, plan.sequence_parallel);
      const PlanStage& ps = part ? *part : plan.stages[static_cast<size_t>(s)];
      if (!ps.gradients) throw Error(fmt::format("plan stage {} has no backward to train with", s));
      if (split && !ps.split)
        throw Error(fmt::format("plan stage {} runs its backward whole, but schedule {} runs it in two parts; compile "
                                "the plan again",
                                s, plan.schedule));
      auto st = std::make_unique<PipelineStage>();
      st->index = s;
      st->replica = replica;
      st->shard = shard;
      // The schedule places stage s on a device (stage_placement), and a
      // copy on rank q * devices + that; the plan's topology must agree.
      st->rank = rank;
      const int scheduled = q * p + schedule_.device_of(s);
      if (st->rank != scheduled)
        throw Error(fmt::format("plan stage {} of replica {} runs on rank {}, but schedule {} runs it on rank {}; "
                                "compile the plan again",
                                s, replica, st->rank, plan.schedule, scheduled));
      // Each copy compiles a module of its own.
      Module module = programs[static_cast<size_t>(part_index >= 0 ? n + s * parts_per_stage + part_index : s)];
      if (tensor_ > 1)
        st->tensor_group = std::make_unique<CommTensorParallelGroup>(
            CommGroup{fmt::format("tensor-parallel group of stage {} in replica {}", s, replica),
                      rank_view(plan, st->rank).tensor_group});
      if (experts_ > 1) {
        st->replica_own = replica_own_params(plan, plan.stages[static_cast<size_t>(s)], part_index);
        std::vector<int> sharing;  // the stage in every replica of its expert group
        for (int k : expert_group_replicas(plan, replica)) sharing.push_back(rank_of_stage(plan, s, k, 0));
        st->expert_group = std::make_unique<CommTensorParallelGroup>(
            CommGroup{fmt::format("experts of stage {} in group {}", s, replica / experts_), std::move(sharing)});
      }
      GradientProgram gradients = *ps.gradients;
      for (const PlanTensor& t : ps.inputs) st->inputs.push_back(t.name);
      st->has_loss = s == n - 1 && !plan.loss_stage_output.empty();
      st->float_outputs = gradients.outputs;
      const Function& graph = module.graph();
      for (size_t a = 0; a < graph.args.size(); ++a) {
        const std::string& name = graph.values[graph.args[a]].name;
        auto it = std::find_if(ps.inputs.begin(), ps.inputs.end(), [&](const PlanTensor& t) { return t.name == name; });
        st->input_args.push_back(it == ps.inputs.end() ? -1 : static_cast<int>(it - ps.inputs.begin()));
        if (it != ps.inputs.end()) {
          // Micro-batch k reads bytes [k * stride, (k + 1) * stride) of a split
          // input, and all of a whole one.
          st->input_stride_bytes.push_back(it->whole ? 0 : graph.type_of(graph.args[a]).bytes());
          st->input_types.push_back(graph.type_of(graph.args[a]));
        }
      }
      st->results = gradients.original_results;
      for (const std::string& name : gradients.input_grads)
        st->send_grad_types.push_back(graph.type_of(graph.find_value(name)));
      st->losses.assign(m, 0.0f);
      int slots = std::max(1, sim.peak_stashed[s]);
      for (int k = slots - 1; k >= 0; --k) st->free_slots.push_back(k);
      st->slot_of.assign(m, -1);
      std::optional<BackwardSplit> parts = split ? ps.split : std::nullopt;
      const int gpu = gpus.empty() ? -1 : gpus[s];
      if (gpu < 0) {
        st->program = std::make_unique<StageProgram>(std::move(module), plan.binding, std::move(gradients),
                                                     std::move(parts), st->params, slots, /*caller_results=*/true,
                                                     st->tensor_group.get(), options.dtype == DType::bf16,
                                                     st->expert_group.get());
      } else {
  #ifdef PF_CUDA
        CudaStageOptions co;
        co.microbatches = m;
        co.slots = slots;
        co.split = std::move(parts);
        co.float_dtype = options.dtype;
        st->program = cuda_stages->make(s, std::move(module), plan.binding, std::move(gradients), st->params, co);
  #endif
      }
      stages_[static_cast<size_t>(q * n + s)] = std::move(st);
    }
  }
  connect_stages();
  make_workers(plan);
}

std::vector<PipelineStage*> Pipeline::local_stages() const {
  std::vector<PipelineStage*> out;
  for (const auto& s : stages_)
    if (s) out.push_back(s.get());
  return out;
}

void Pipeline::make_workers(const Plan& plan) {
  const int n = stages(), p = schedule_.devices;
  if (!options_.comm) world_ = std::make_unique<LocalWorld>(ranks_, options_.timeout_s);
  for (int r : local_ranks_) {
    const RankView view = rank_view(plan, r);
    std::vector<PipelineStage*> own;
    std::vector<std::vector<Param>> norm_params;
    RankGroups groups;
    groups.world = CommGroup{"world", view.world};
    groups.replica = CommGroup{fmt::format("replica {}", view.replica), view.replica_ranks};
    groups.replicas = replicas_;
    groups.shard_optimizer = shard_optimizer_;
    if (experts_ > 1) {
      std::vector<int> sharing;  // every rank of its replica's expert group
      for (int k : expert_group_replicas(plan, view.replica))
        for (const PlanRank& other : plan.ranks)
          if (other.replica == k) sharing.push_back(other.rank);
      std::sort(sharing.begin(), sharing.end());
      groups.experts = CommGroup{fmt::format("expert group {}", view.replica / experts_), std::move(sharing)};
    }
    // The places of a tensor-parallel group compute the same loss: the
    // first counts it.
    groups.counts_loss = view.shard == 0;
    const int q = view.replica * tensor_ + view.shard;  // its copy of the pipeline
    const std::string place = tensor_ > 1 ? fmt::format(" place {}", view.shard) : "";
    Communicator& comm = options_.comm ? *options_.comm : world_->rank(r);
    for (size_t k = 0; k < view.stages.size(); ++k) {
      const int s = view.stages[k];
      PipelineStage& st = *stages_[static_cast<size_t>(q * n + s)];
      if (st.tensor_group) st.tensor_group->attach(comm);
      if (st.expert_group) st.expert_group->attach(comm);
      own.push_back(&st);
      groups.stage_replicas.push_back(CommGroup{fmt::format("stage {}{}", s, place), view.stage_replicas[k].second});
      // A tied parameter counts in the norm once, on the first stage holding
      // it; a whole parameter of a tensor-parallel stage once, on the first
      // place (every place holds it), and each place's block of a split one.
      // A replica's own experts count apart: its expert group's add up.
      const PlanStage& ps = plan.stages[static_cast<size_t>(s)];
      const int part = stage_part(plan, plan.ranks[static_cast<size_t>(r)]);
      const std::vector<PlanParam>& listed = part >= 0 ? ps.shards[static_cast<size_t>(part)].params : ps.params;
      const std::vector<std::string>& alone = st.replica_own;
      std::vector<Param> counted, replica_own;
      for (const Param& param : st.params.optimizer_params()) {
        const PlanParam& pp =
            *std::find_if(listed.begin(), listed.end(), [&](const PlanParam& x) { return x.name == param.name; });
        const bool once = pp.shared_with.empty() || pp.shared_with.front() > s;
        if (std::find(alone.begin(), alone.end(), param.name) != alone.end())
          replica_own.push_back(param);
        else if (once && (view.shard == 0 || pp.piece))
          counted.push_back(param);
      }
      norm_params.push_back(std::move(counted));
      groups.replica_own.push_back(std::move(replica_own));
      if (experts_ > 1) {
        std::vector<int> holders;  // the stage's copies holding the same block of the experts
        for (int holder : expert_block_replicas(plan, view.replica))
          holders.push_back(rank_of_stage(plan, s, holder, 0));
        groups.block_replicas.push_back(
            CommGroup{fmt::format("block {} of stage {}", view.replica % experts_, s), std::move(holders)});
      }
    }
    for (const auto& [name, holders] : view.tied)
      groups.tied.push_back(
          {name, CommGroup{fmt::format("tied {} of replica {}{}", name, view.replica, place), holders}, {}, {}});
    // The schedule's list for this rank's place in its replica, its peers
    // made ranks of the same copy.
    std::vector<Action> actions = schedule_.per_device[static_cast<size_t>(r % p)];
    for (Action& a : actions)
      if (a.peer >= 0) a.peer += q * p;
    const PlanRank& placed = *std::find_if(plan.ranks.begin(), plan.ranks.end(), [&](auto& x) { return x.rank == r; });
    const PlanDevice& device = plan.devices.at(static_cast<size_t>(placed.device));
    const int threads = options_.cpu_threads > 0 ? options_.cpu_threads : device.threads;
    if (packs_weights(plan, device, view.stages, own))
      for (PipelineStage* st : own)
        if (st->program->place().on_host()) st->packed_weights = std::make_unique<cpu::PackedWeights>();
    workers_.push_back(std::make_unique<RankWorker>(r, options_.microbatches, std::move(actions),
                                                    receive_order(schedule_, r % p), std::move(own), comm,
                                                    std::move(groups), std::move(norm_params), threads));
  }
}

// PipelineOptions::pack_weights for a rank holding `stages` (their plan
// indices `indices`) on `device`.
bool Pipeline::packs_weights(const Plan& plan, const PlanDevice& device, const std::vector<int>& indices,
                             const std::vector<PipelineStage*>& stages) const {
  if (options_.pack_weights != PackWeights::automatic) return options_.pack_weights == PackWeights::on;
  // With one micro-batch each weight is read once per layout: nothing to keep.
  if (options_.microbatches < 2) return false;
  if (device.memory_bytes <= 0) return true;
  int64_t needs = 0;
  for (int s : indices) needs += plan.stages.at(static_cast<size_t>(s)).predicted.memory_bytes;
  for (const PipelineStage* st : stages) needs += packed_weights_bound(st->params);
  return needs <= device.memory_bytes;
}

Pipeline::~Pipeline() {
  if (!stuck_) return;
  // A worker the watchdog gave up on may still be inside a kernel that reads
  // and writes the stages: they stay allocated until the process ends.
  for (auto& s : stages_) (void)s.release();  // null ones too: nothing to free
  for (auto& w : workers_) (void)w.release();
  (void)world_.release();
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

int nccl_device(const Plan& plan, int rank) {
  for (const PlanRank& r : plan.ranks)
    if (plan.devices.at(static_cast<size_t>(r.device)).kind != "cuda" || r.stages.empty()) return -1;
  const std::vector<int> gpus = gpus_of_stages(plan);
  for (const PlanRank& r : plan.ranks)
    if (r.rank == rank) return gpus.at(static_cast<size_t>(r.stages.front()));
  throw Error(fmt::format("rank {} is not one of the plan's {} ranks", rank, plan.ranks.size()));
}

std::unique_ptr<Pipeline> Pipeline::from_plan(const Plan& plan, PipelineOptions options) {
  std::vector<Module> programs;
  for (const PlanStage& ps : plan.stages) programs.push_back(stage_program(plan, ps));
  for (const PlanStage& ps : plan.stages)
    for (int t = 0; t < static_cast<int>(ps.shards.size()); ++t)
      programs.push_back(stage_program(plan, shard_stage(ps, t, plan.sequence_parallel)));
  return from_plan(plan, std::move(programs), std::move(options));
}

void check_executable(const Plan& plan) {
  if (plan.tensor_parallel <= 1) return;
  const int t = plan.tensor_parallel;
  for (const PlanStage& s : plan.stages)
    if (s.shards.empty())
      throw Error(fmt::format("this plan models tensor parallelism (T={}) without each rank's part of its stages (a "
                              "plan written before they were); compile it again to run it",
                              t));
  for (const PlanDevice& d : plan.devices)
    if (d.kind != "cpu")
      throw Error(fmt::format("this plan splits its stages over tensor-parallel groups of {} on {}, and this "
                              "pipeforge runs tensor parallelism on cpu devices only; compile it for cpu devices or "
                              "without --tensor-parallel",
                              t, d.name));
}

std::unique_ptr<Pipeline> Pipeline::from_plan(const Plan& plan, std::vector<Module> programs,
                                              PipelineOptions options) {
  check_executable(plan);
  const ScheduleKind kind = plan_schedule_kind(plan);
  if (plan.loss_stage_output.empty())
    throw Error(fmt::format("plan for @{} is an inference plan: it has no loss to train", plan.model_name));
  options.schedule = kind;
  options.microbatches = plan.microbatches;
  options.virtual_stages = plan.virtual_stages;
  options.dtype = plan.dtype;
  if (options.stage_gpus.empty() && !options.cpu_only) options.stage_gpus = gpus_of_stages(plan);
  return std::unique_ptr<Pipeline>(new Pipeline(plan, std::move(programs), options));
}

int Pipeline::stages() const { return static_cast<int>(stages_.size()) / (replicas_ * tensor_); }
int Pipeline::devices() const { return ranks_; }
int Pipeline::replicas() const { return replicas_; }
const Schedule& Pipeline::schedule() const { return schedule_; }

struct Pipeline::StepState {
  RankStep step;
  std::vector<RankOutcome> outcomes;  // per local rank
};

// Every rank here, each on a thread over the in-process world, this thread
// the watchdog.
std::string Pipeline::run_ranks(const std::shared_ptr<StepState>& state) {
  world_->start_step();
  std::vector<std::thread> threads;
  for (size_t w = 0; w < workers_.size(); ++w) {
    RankWorker* worker = workers_[w].get();
    LocalWorld* world = world_.get();
    const int rank = local_ranks_[w];
    threads.emplace_back([state, worker, world, w, rank] {
      worker->run(state->step, state->outcomes[w]);
      world->finish(rank);
    });
  }
  const std::vector<int> stuck = world_->watch();
  for (size_t w = 0; w < workers_.size(); ++w) {
    if (std::find(stuck.begin(), stuck.end(), local_ranks_[w]) == stuck.end())
      threads[w].join();
    else
      threads[w].detach();  // it cannot be interrupted; the pipeline is retired
  }
  const std::string error = world_->error();
  if (!stuck.empty()) {
    stuck_ = error;
    throw Error(error);
  }
  return error;
}

// The one rank here, on this thread, over a communicator to the other
// processes, whose waits end on a failure anywhere.
std::string Pipeline::run_rank(StepState& state) {
  workers_.front()->run(state.step, state.outcomes.front());
  return options_.comm->error();
}

PipelineStepResult Pipeline::run_step(const std::vector<std::pair<std::string, const void*>>& inputs, bool backward,
                                      bool update) {
  if (stuck_) throw Error(fmt::format("this pipeline cannot run again: {}", *stuck_));
  if (update && !lr_) throw Error("Pipeline::start() was not called");
  for (PipelineStage* s : local_stages()) {
    s->grads_written = false;  // no zeroing pass: the first backward of the step writes them
    s->peak = 0;
    s->peak_held = 0;
  }
  // What the workers read and write lives on the heap: a worker that the
  // watchdog gives up on may still hold it after this call returns (and the
  // stages, workers and world it points to are then never freed).
  auto state = std::make_shared<StepState>();
  RankStep& step = state->step;
  step.inputs = inputs;
  step.backward = backward;
  step.update = update;
  step.lr = update ? lr_->at(local_stages().front()->optimizer->step_count()) : 0;
  step.clip = options_.train.clip;
  step.trace = options_.trace;
  step.timeout_s = options_.timeout_s;
  step.fault = options_.fault;
  state->outcomes.resize(workers_.size());
  step.start = Clock::now();
  const std::string error = options_.comm ? run_rank(*state) : run_ranks(state);
  if (!error.empty()) {
    for (PipelineStage* s : local_stages()) {
      s->free_slots.clear();
      for (int k = s->program->slots() - 1; k >= 0; --k) s->free_slots.push_back(k);
      s->inflight = 0;
    }
    throw Error(error);
  }
  PipelineStepResult result;
  result.seconds = since(step.start);
  result.loss = state->outcomes[0].loss;  // every rank's
  result.grad_norm = state->outcomes[0].grad_norm;
  result.correct = state->outcomes[0].correct;  // every rank's
  result.predicted = state->outcomes[0].predicted;
  result.lr = step.lr;
  for (RankOutcome& o : state->outcomes)
    result.trace.insert(result.trace.end(), o.trace.begin(), o.trace.end());
  std::stable_sort(result.trace.begin(), result.trace.end(),
                   [](const TraceEvent& a, const TraceEvent& b) { return a.start_s < b.start_s; });
  // What every rank measured, summed over the processes when the ranks are
  // in several: [busy seconds, walked seconds per rank, then per copy of
  // each stage its peak micro-batches in flight, stash bytes and packed weights].
  const int n = stages(), copies = replicas_ * tensor_ * n;  // every copy of every stage
  std::vector<double> stats(static_cast<size_t>(1 + ranks_ + 3 * copies), 0.0);
  for (const TraceEvent& e : result.trace)
    if (is_compute(e.action.kind)) stats[0] += e.end_s - e.start_s;
  for (size_t w = 0; w < workers_.size(); ++w)
    stats[static_cast<size_t>(1 + local_ranks_[w])] = state->outcomes[w].walked_s;
  for (PipelineStage* s : local_stages()) {
    const auto copy = static_cast<size_t>(1 + ranks_ + (s->replica * tensor_ + s->shard) * n + s->index);
    stats[copy] = s->peak;
    stats[copy + static_cast<size_t>(copies)] = static_cast<double>(s->peak_held * s->program->stash_bytes());
    if (s->packed_weights)
      stats[copy + 2 * static_cast<size_t>(copies)] = static_cast<double>(s->packed_weights->bytes());
  }
  if (options_.comm) {
    try {
      options_.comm->all_reduce(CommGroup::world(ranks_), stats);
    } catch (const CommAborted&) {
      throw Error(options_.comm->error());  // another rank failed after its walk
    } catch (const CommTimeout& t) {
      throw Error(t.message);
    }
  }
  // The bubble is the schedule's: idle time until the last rank's actions
  // are done, not the collectives and the update after them.
  const double walked = *std::max_element(stats.begin() + 1, stats.begin() + 1 + ranks_);
  result.bubble = std::max(0.0, 1.0 - stats[0] / (ranks_ * walked));
  result.update_seconds = std::max(0.0, result.seconds - walked);
  // Per stage, its busiest copy.
  result.peak_inflight.assign(static_cast<size_t>(n), 0);
  result.peak_stash_bytes.assign(static_cast<size_t>(n), 0);
  result.packed_weight_bytes.assign(static_cast<size_t>(n), 0);
  for (int c = 0; c < copies; ++c) {
    const auto s = static_cast<size_t>(c % n);
    const auto copy = static_cast<size_t>(1 + ranks_ + c);
    result.peak_inflight[s] = std::max(result.peak_inflight[s], static_cast<int>(stats[copy]));
    result.peak_stash_bytes[s] =
        std::max(result.peak_stash_bytes[s], static_cast<int64_t>(stats[copy + static_cast<size_t>(copies)]));
    result.packed_weight_bytes[s] = std::max(result.packed_weight_bytes[s],
                                             static_cast<int64_t>(stats[copy + 2 * static_cast<size_t>(copies)]));
  }
  return result;
}

PipelineStepResult Pipeline::forward(const std::vector<std::pair<std::string, const void*>>& inputs) {
  return run_step(inputs, /*backward=*/false, /*update=*/false);
}

PipelineStepResult Pipeline::train_step(const std::vector<std::pair<std::string, const void*>>& inputs,
                                        bool step_optimizer) {
  return run_step(inputs, /*backward=*/true, step_optimizer);
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
      case ActionKind::step: name = "optimizer"; break;
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
