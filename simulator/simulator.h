// The cost-model simulator: a plan's step on a device profile and a cluster,
// in simulated time, without running anything.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ir/module.h"
#include "partitioner/device_profile.h"
#include "plan/plan.h"
#include "runtime/schedule.h"
#include "runtime/step_result.h"
#include "simulator/stage_price.h"

namespace pf {

struct SimulateOptions {
  /// "adamw" or "sgd" (with momentum): the optimizer state in memory (2 or 1
  /// copies of the parameters, as the compiler's memory model) and the bytes
  /// of its pass over the parameters.
  std::string optimizer = "adamw";
};

/// One stage of the plan in the simulated step.
struct SimulatedStage {
  int device = 0;            // index into Plan::devices
  StagePrice price;          // per micro-batch on the reference profile
  double forward_s = 0;      // per micro-batch on its device
  double backward_s = 0;     // per micro-batch on its device: B + W where the backward is split
  double busy_s = 0;         // computing in the step
  double all_reduce_start_s = 0;  // its gradients' sum across replicas: after its last weight gradient
  double all_reduce_s = 0;        // 0 with one replica
  double optimizer_s = 0;    // its optimizer's pass over its parameters (a 1/D share, and the gathering of the
                             // shares, where the plan shards the optimizer state)
  int64_t peak_memory_bytes = 0;
  int64_t memory_limit_bytes = 0;  // its device's memory over the stages the device holds
};

/// One device of replica 0 (every replica runs the same).
struct SimulatedDevice {
  double busy_s = 0;
  double optimizer_s = 0;  // its stages' optimizer passes, which start when the step's last collective ends
  int64_t peak_memory_bytes = 0;
  int64_t memory_limit_bytes = 0;
};

/// A plan's predicted step.
struct PlanSimulation {
  Schedule schedule;                    // what the runtime walks: plan_schedule(plan)
  Simulation timeline;                  // each device's actions placed in time (replica 0)
  ActionCosts costs;                    // what each stage's actions took in it (simulate_jittered runs them again)
  std::vector<SimulatedStage> stages;
  std::vector<SimulatedDevice> devices;  // replica 0's: one per action list
  int replicas = 1;
  double walk_s = 0;       // until every device's last action
  double update_start_s = 0;  // when the last all-reduce is done and the optimizers start
  double step_s = 0;       // + the all-reduces still running, then the optimizer step
  double bubble = 0;       // 1 - busy compute / (devices * walk_s), as a run measures it
  std::optional<double> theory_bubble;  // the schedule's textbook bubble (theoretical_bubble)
  int64_t samples = 0;     // per step, every replica
  double flops = 0;        // model FLOPs of a step: every forward and backward op executed, every replica,
                           // but the forward ops a recomputing backward runs again
  double peak_flops = 0;   // FLOP/s of every device of every replica together
  double samples_per_s() const { return step_s > 0 ? static_cast<double>(samples) / step_s : 0; }
  double mfu() const { return step_s > 0 && peak_flops > 0 ? flops / (step_s * peak_flops) : 0; }
};

/// Simulates one training step of `plan` (its stage programs parsed in
/// `programs`, as load_plan gives them) on `profile` and `cluster`:
///  - every stage priced once from its program (price_stage), divided by
///    its device's speed (plan_device_entries);
///  - the runtime's own action lists (plan_schedule) run in simulated time:
///    a send does not block, its receive is ready latency + bytes /
///    bandwidth later over the link between the two stages' devices;
///  - with replicas, one replica is simulated (they are identical) and each
///    stage's gradients are summed by a ring all-reduce over
///    replica_link, started after the stage's last weight-gradient action;
///    the step ends when the last device and all-reduce are done, plus the
///    slowest device's optimizer pass (a roofline of its bytes);
///  - memory per stage: parameters x (weights, gradients, optimizer state)
///    plus one stash slot per micro-batch in flight (memory_peaks).
/// `programs` as load_plan keeps them (a tensor-parallel plan's parts after
/// the stages' programs are not read). Throws pf::Error for an inference
/// plan or programs that do not match.
PlanSimulation simulate_plan(const Plan& plan, const std::vector<Module>& programs, const DeviceProfile& profile,
                             const Cluster& cluster, const SimulateOptions& options = {});

/// The predicted step as a run's trace: every action of every device of
/// replica 0 (sends at an instant, receives over their wait), for the same
/// trace_json a run's --trace writes.
std::vector<TraceEvent> simulation_trace(const PlanSimulation& sim);

}  // namespace pf
