// A schedule under run-to-run noise: what a step takes when each action's
// duration wanders around its cost, as on a shared or busy machine.
#pragma once

#include <cstdint>

#include "runtime/schedule.h"

namespace pf {

/// Noise on every compute action's duration: its cost times a lognormal
/// factor of mean 1 whose log has standard deviation `sigma` (0.1: most
/// actions within about 10 % of their cost), drawn afresh for each action
/// of each trial. Transfers keep their costs.
struct Jitter {
  double sigma = 0.1;
  int trials = 200;
  uint64_t seed = 1;
};

/// A schedule's step over `Jitter::trials` noisy runs, beside the step
/// without noise. A schedule with no slack passes each delay on to its
/// neighbours (1F1B on two devices waits on the other device at every
/// action of its steady state), so its mean step grows faster with the
/// noise than one whose devices hold work in reserve.
struct JitteredSimulation {
  Simulation nominal;  ///< simulate() without noise
  double mean_makespan = 0, median_makespan = 0, p90_makespan = 0;
  double mean_bubble = 0;  ///< 1 - busy / (devices * makespan), averaged over the trials
  /// How much longer the mean step is than the steady one (0.03: 3 %).
  double slowdown() const { return mean_makespan / nominal.makespan - 1; }
};

/// Runs `schedule` on `costs` `jitter.trials` times, each compute action's
/// duration drawn anew; the same seed gives the same trials on any
/// platform. Throws Error as simulate() does, and for a sigma outside
/// [0, 1] or fewer than one trial.
JitteredSimulation simulate_jittered(const Schedule& schedule, const ActionCosts& costs, const Jitter& jitter);
/// The same with every stage costing `costs`.
JitteredSimulation simulate_jittered(const Schedule& schedule, const UnitCosts& costs, const Jitter& jitter);

}  // namespace pf
