// Pipelined training in one process: one worker thread per device walks its
// schedule's action list; each stage runs on the CPU or on a CUDA device, and
// activations and gradients are handed between stages by micro-batch:
// without copying between CPU stages or stages sharing a GPU, by peer copies
// between GPUs, and through pinned host memory between a CPU and a GPU.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/executor.h"
#include "plan/plan.h"
#include "runtime/lr_schedule.h"
#include "runtime/optimizer.h"
#include "runtime/optimizer_shard.h"
#include "runtime/parameters.h"
#include "runtime/schedule.h"
#include "runtime/step_result.h"
#include "runtime/train_options.h"

namespace pf {

class Communicator;
class LocalWorld;
class RankWorker;
struct PipelineStage;

struct PipelineOptions {
  ScheduleKind schedule = ScheduleKind::one_f_one_b;
  int microbatches = 1;
  int virtual_stages = 1;
  TrainingOptions train;
  /// The watchdog against hangs: a worker that waits longer than this for a
  /// peer while no stage is computing stops the step with one error naming
  /// every stage then waiting and what for; a computation (one stage's forward or backward of one
  /// micro-batch) that runs longer stops it naming that stage and action.
  /// A thread stuck inside a kernel cannot be interrupted: if a worker has
  /// not returned `timeout_s` after the step failed, the step throws anyway,
  /// leaves that thread running, and the pipeline refuses to run again
  /// (restart from the last checkpoint, which is never partly written).
  double timeout_s = 60;
  /// Record every action's start and end for a Perfetto trace.
  bool trace = false;
  /// The kernel threads of each rank's CPU stages: 0 takes its device's
  /// from the plan (PlanDevice::threads); n > 0 gives every device n.
  int cpu_threads = 0;

  /// The ranks this pipeline runs (see Plan::ranks); empty: all of them,
  /// each on a thread, over an in-process communicator. Given one rank and
  /// `comm` (its end of a communicator between processes, which must
  /// outlive the pipeline), it builds only that rank's stages, receives its
  /// neighbours' hand-offs into buffers of its own, and runs its steps on
  /// the calling thread; the other ranks run the same plan elsewhere.
  std::vector<int> ranks;
  Communicator* comm = nullptr;

  /// Per stage: the CUDA device (ordinal) it runs on, or -1 for a CPU
  /// thread; empty: every stage on the CPU. When it is empty, from_plan
  /// fills it from the plan's devices unless `cpu_only`. Several stages may
  /// share a GPU (each gets its own stream).
  std::vector<int> stage_gpus;
  /// from_plan: run every stage on the CPU whatever devices the plan names.
  bool cpu_only = false;
  /// How CUDA stages store and compute floats: f32, or bf16 with f32 master
  /// weights (the optimizer steps f32 weights, the kernels read a bf16 copy,
  /// bf16 gradients are summed into f32 ones; no loss scaling). CPU stages
  /// store f32 either way; with bf16 their products round the operands to
  /// bf16 and sum in f32 (cpu::Bf16Products). from_plan takes the plan's
  /// dtype.
  DType dtype = DType::f32;
  /// CUDA stages in f32: let cuBLAS and cuDNN use TF32 tensor cores (about
  /// 1e-3 relative error instead of 1e-6). Off: a CUDA stage computes what a
  /// CPU stage computes to rounding.
  bool allow_tf32 = false;
  /// Each CPU stage's weights kept packed through a step (StageMemory::packed_weights).
  PackWeights pack_weights = PackWeights::automatic;

  /// Fault injection, for the tests of failure handling only
  /// (tests/runtime/runtime_test.cpp): makes one stage misbehave at one
  /// micro-batch the way a defect would, so that the error path and the
  /// watchdog can be exercised. Off (kind none) everywhere else.
  struct Fault {
    enum class Kind {
      none,
      throw_error,  ///< the forward of (stage, microbatch) throws pf::Error("injected fault")
      drop_send,    ///< the send_act of (stage, microbatch) never happens: the receiver waits
      stall,        ///< the forward of (stage, microbatch) runs 4 * timeout_s, deaf to the failure (a hung kernel)
    };
    Kind kind = Kind::none;
    int stage = 0;
    int microbatch = 0;
  };
  Fault fault;
};

/// What one stage holds, in bytes, as allocated when the pipeline starts:
/// nothing grows during a step, so this is its peak.
struct StageMemory {
  int stage = 0;
  int rank = 0;               // the worker running it, on its own device
  int64_t weights = 0;
  int64_t gradients = 0;
  int64_t optimizer_state = 0;
  int64_t activations = 0;    // its stash slots: `slots` micro-batches in flight
  int slots = 0;
  int64_t workspace = 0;      // its executors' arenas and hand-off buffers
  int64_t packed_weights = 0; // at most, held from the first step on (PipelineOptions::pack_weights)
  int64_t total() const { return weights + gradients + optimizer_state + activations + workspace + packed_weights; }
};

/// Throws pf::Error when `plan` models what the runtime does not execute:
/// tensor parallelism ("this plan models tensor parallelism (T=8), which the
/// runtime does not execute; compile without --tensor-parallel to run it").
void check_executable(const Plan& plan);

/// The CUDA device that rank `rank` of `plan` computes on when every rank
/// of the plan computes on a GPU, so that its processes talk over NCCL
/// (ProcessGroup); -1 when some rank is on the CPU (they talk over Gloo).
/// Throws, as loading would, when the plan names a GPU this process cannot use.
int nccl_device(const Plan& plan, int rank);

class Pipeline {
 public:
  ~Pipeline();

  /// The pipeline a plan describes: its schedule, micro-batches, virtual
  /// stages and dtype override those of `options`, and each stage runs the
  /// program the plan holds (no pass runs here). Stage s runs on device
  /// s % devices, a worker thread. A stage on a device of kind "cuda" runs
  /// on a GPU: the plan's k-th CUDA device is GPU k % the number visible,
  /// unless `options.stage_gpus` places the stages already or `cpu_only`.
  /// Throws pf::Error naming the stage and its device when the plan names a
  /// GPU and none is visible, or this build has no CUDA, and when the plan
  /// is one the runtime does not execute (check_executable).
  static std::unique_ptr<Pipeline> from_plan(const Plan& plan, PipelineOptions options);
  /// The same with the stages' programs already parsed and verified, in
  /// stage order (as load_plan hands them out): nothing is parsed again.
  static std::unique_ptr<Pipeline> from_plan(const Plan& plan, std::vector<Module> programs,
                                             PipelineOptions options);

  /// The plan's stages (each replica runs a copy of every one).
  int stages() const;
  /// Devices, one rank each: every replica's.
  int devices() const;
  /// Data-parallel replicas of the pipeline.
  int replicas() const;
  const Schedule& schedule() const;
  /// Every parameter of every stage (a tied one once per stage holding it),
  /// replica after replica: the first stages() sets are replica 0's.
  /// A CUDA stage's are host copies: see copy_to_host.
  std::vector<ParameterSet*> parameter_sets();
  /// Whether every stage here computes on the CPU: then the parameter sets'
  /// values are the weights themselves, not copies of a device's.
  bool parameters_on_host() const;
  void initialize(uint64_t seed);
  /// Loads each stage's parameters from one file holding the whole model's.
  void load(const SafeTensors& file, const std::string& what);
  /// The gradients of the last step, one per parameter (tied ones summed).
  void save_grads(SafeTensors& file) const;
  void save_values(SafeTensors& file) const;
  /// Per stage of replica 0 held here, its index and a checkpoint shard: its
  /// parameters and their optimizer state by name (see copy_to_host). With
  /// the optimizer state sharded over the replicas, each stage's state is
  /// put together from every replica's share; between processes every rank
  /// calls it, and sends its shares to the ranks of replica 0.
  std::vector<std::pair<int, SafeTensors>> checkpoint_shards() const;
  /// Whether each replica of a stage keeps the optimizer state of a share
  /// of its parameters only (Plan::shard_optimizer).
  bool optimizer_sharded() const { return shard_optimizer_; }
  /// CUDA stages keep their parameters, gradients and optimizer state on
  /// their devices: copies them into the host ParameterSets and the
  /// optimizers' state buffers (what parameter_sets() and optimizers()
  /// show). Nothing to do for CPU stages. save_values and save_grads copy
  /// what they write themselves.
  void copy_to_host();
  /// After the host copies were changed from outside (optimizer state loaded
  /// from a checkpoint): copies them to the devices. initialize and load do
  /// it themselves.
  void copy_to_devices();
  void start();

  /// One step on a full batch: `inputs` are the model's inputs by name, each
  /// holding `microbatches` micro-batches back to back along its first axis.
  /// Forward and backward of every micro-batch in schedule order, then the
  /// tied gradients are summed, clipped together, and every stage steps.
  PipelineStepResult train_step(const std::vector<std::pair<std::string, const void*>>& inputs,
                                bool step_optimizer = true);

  /// The loss of a full batch (same layout as train_step) without gradients
  /// or an update: only the forward actions of the schedule run, in its
  /// order, and each stash slot is freed as soon as it is filled. The
  /// parameters' gradients are left as the last train_step left them.
  PipelineStepResult forward(const std::vector<std::pair<std::string, const void*>>& inputs);

  /// Each stage's optimizer, in stage order, replica after replica (a tied
  /// or replicated parameter has state in every stage holding it, equal in
  /// all); empty before start(). A CUDA
  /// stage's steps on its device; its state buffers are host copies (see
  /// copy_to_host).
  std::vector<Optimizer*> optimizers();

  /// What each stage held here holds (every replica's copy), after start().
  std::vector<StageMemory> memory() const;

  /// Per-op kernel times of every stage's programs (StageRunner::set_profile):
  /// summed over the steps since reset_profile(). Profiled CUDA stages wait
  /// for each program they run, so steps take longer while it is on.
  void set_profile(bool on);
  void reset_profile();
  /// Stage `stage`'s op times (its copy in replica 0).
  std::vector<backend::OpTime> op_times(int stage) const;

 private:
  Pipeline(const Plan& plan, std::vector<Module> programs, const PipelineOptions& options);
  PipelineStepResult run_step(const std::vector<std::pair<std::string, const void*>>& inputs, bool backward,
                              bool update);
  struct StepState;
  /// A step's walk: every rank here on threads, or the one rank over a
  /// communicator between processes. Returns the step's failure, empty if
  /// none; throws when the watchdog gave up on a rank.
  std::string run_ranks(const std::shared_ptr<StepState>& state);
  std::string run_rank(StepState& state);
  /// Allocates every hand-off buffer, each in the memory of the stage that
  /// writes it (pinned host memory when a GPU neighbour copies it), and
  /// decides how each stage reads its neighbours': in place, or through
  /// copies that receive() makes.
  void connect_stages();
  void connect_replica(int replica);
  /// One rank per device over an in-process communicator, each with its
  /// stages, its tied parameters and the parameters it counts in the norm,
  /// as the plan's view of the rank says.
  void make_workers(const Plan& plan);
  bool packs_weights(const Plan& plan, const PlanDevice& device, const std::vector<int>& indices,
                     const std::vector<PipelineStage*>& stages) const;

  PipelineOptions options_;
  Schedule schedule_;
  int replicas_ = 1;
  int tensor_ = 1;   // ranks per tensor-parallel group
  int experts_ = 1;  // replicas sharing the experts out (Plan::expert_parallel)
  /// Copy after copy of the pipeline, each in stage order: the copy of
  /// replica k at place t of the tensor-parallel groups is q = k * T + t,
  /// and its stage s is stages_[q * stages() + s]; null where another
  /// process runs it.
  std::vector<std::unique_ptr<PipelineStage>> stages_;
  /// The stages this pipeline runs, in the order of stages_.
  std::vector<PipelineStage*> local_stages() const;
  std::vector<int> local_ranks_;  // increasing
  std::unique_ptr<LocalWorld> world_;  // when every rank runs here
  std::vector<std::unique_ptr<RankWorker>> workers_;  // per local rank
  int ranks_ = 0;  // in the plan
  bool shard_optimizer_ = false;  // the plan's, with more than one replica
  /// The rank running stage `stage`'s copy in `replica` at `place` of its
  /// tensor-parallel group, and the copy when it runs here.
  int copy_rank(int stage, int replica, int place) const;
  PipelineStage* copy_here(int stage, int replica, int place) const;
  /// The share of its parameters stage copy `stage`'s optimizer steps.
  OptimizerShare optimizer_share(const PipelineStage& stage) const;
  /// The optimizer state `writer` writes to the checkpoint, put together
  /// from every replica's share, into `shard`: that of the parameters every
  /// replica holds by the first replica's copies (all of it at place 0 of a
  /// tensor-parallel group, its blocks of the split parameters at the
  /// others), and that of a replica's own experts by the copy of the first
  /// expert group holding them.
  void add_whole_state(PipelineStage& writer, SafeTensors& shard) const;
  /// Sends what add_whole_state needs of `stage`'s share to the ranks
  /// writing it that run elsewhere, from buffers in `sent`.
  void send_state_share(PipelineStage& stage, std::vector<std::vector<float>>& sent) const;
  std::optional<LrSchedule> lr_;
  std::optional<std::string> stuck_;  // set when a worker was given up on: why
};

/// Chrome/Perfetto trace JSON: one track per device, a slice per action.
std::string trace_json(const std::vector<TraceEvent>& events, int devices);

}  // namespace pf
