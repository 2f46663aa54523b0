// The predicted time of one training step of a partitioned pipeline: its
// schedule simulated on the stages' costs, the data-parallel all-reduce the
// schedule leaves exposed, and the optimizer step.
#pragma once

#include "partitioner/cost_graph.h"
#include "partitioner/device_profile.h"
#include "partitioner/stage_search.h"
#include "plan/plan.h"
#include "runtime/schedule.h"

namespace pf {

/// How the pipeline of a PartitionResult runs a step.
struct StepOptions {
  ScheduleKind schedule = ScheduleKind::one_f_one_b;
  std::string schedule_actions;  // for custom: its schedule file (read_schedule_text)
  int microbatches = 1;
  int virtual_stages = 1;
  int data_parallel = 1;
  LinkSpec replica_link;                 // what each stage's gradient all-reduce crosses
  int expert_parallel = 1;               // as PartitionOptions
  double optimizer_state_factor = 2.0;   // as PartitionOptions (a replica's share where it is sharded)
  double own_optimizer_state_factor = 2.0;  // as PartitionOptions
  /// Each replica steps 1/D of a stage's parameters (Plan::shard_optimizer),
  /// then the replicas gather the updated shares.
  bool shard_optimizer = false;
  double memory_bandwidth = 0;           // bytes/s of one device: the optimizer step's pace; 0: free
  double update_s_per_param = 0;         // measured (DeviceProfile::update_s_per_param); 0: its bytes at the bandwidth
  /// Per stage, the share of its backward a split backward's W takes
  /// (weight_shares); empty: half each.
  std::vector<double> weight_shares;
};

/// A step's predicted time and where it goes.
struct StepPrediction {
  double pipeline_s = 0;       // the schedule's makespan
  double sync_s = 0;           // the gradient all-reduce past the makespan (what the schedule does not hide)
  double optimizer_s = 0;      // the optimizer step after it (and, where it is sharded, the gathering of the shares)
  double step_s = 0;           // the whole step
  double bubble_fraction = 0;  // idle share of the simulated schedule
};

/// Per stage of `plan` whose backward is split (PlanStage::split), the
/// share of it the weight part W takes: its ops' roofline on `profile`
/// against the input part's (B, which holds a recomputed forward, the
/// attention's gradient and every norm's). 0.5 for a stage not split.
std::vector<double> weight_shares(const Plan& plan, const DeviceProfile& profile);

/// Each stage's forward, backward and transfers per micro-batch on its device
/// (the nodes' times scaled to the stage's compute_s).
std::vector<StageTime> stage_times(const CostGraph& graph, const PartitionResult& result);

/// Simulates `options.schedule` (runtime/schedule.h) on each stage's own
/// costs (stage_action_costs of stage_times), so the bubble is the
/// schedule's on these stages: 1F1B's (p - 1) / (m + p - 1) for equal ones,
/// more where they differ, less for zb1. Each device then all-reduces its
/// stages' gradients over the replicas (ring_all_reduce_s over the replica link),
/// starting at its last backward, and steps its optimizer at its measured
/// rate per parameter (f32 master weights), or else reading and writing
/// weights, gradients and state once at `memory_bandwidth`; the
/// step ends when the last device is done. `graph` is the graph `result`
/// partitions.
StepPrediction predict_step(const CostGraph& graph, const PartitionResult& result, const StepOptions& options);

/// The arithmetic of one micro-batch through `graph`: its nodes' FLOPs.
double graph_flops(const CostGraph& graph);

/// Model FLOP utilisation: `flops` done in `step_s` by `gpus` GPUs of peak
/// `peak_flops` each; 0 when the step takes no time.
double flop_utilisation(double flops, double step_s, int64_t gpus, double peak_flops);

}  // namespace pf
