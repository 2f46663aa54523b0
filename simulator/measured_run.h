// A real run's trace read back (`pipeforge run --trace`): what each stage's actions took, the step, the bubble and
// how much the actions wandered, for setting beside the simulator's prediction of the same plan.
#pragma once

#include <map>
#include <string>
#include <utility>

#include "runtime/schedule.h"

namespace pf {

/// What a traced run measured, over its steps after the first (the first
/// warms caches and buffers up; a one-step trace gives that step).
struct MeasuredRun {
  int steps = 0;       ///< in the trace
  int measured = 0;    ///< of them, the ones the medians below are taken over
  int devices = 0;     ///< tracks that ran actions
  /// The median duration of each stage's compute actions of each kind, in
  /// seconds, by (model stage, kind).
  std::map<std::pair<int, ActionKind>, double> action_s;
  /// The median of each device's optimizer slice (its clipping and update,
  /// and the collectives it waits in first), by the trace's track.
  std::map<int, double> optimizer_s;
  double step_s = 0;   ///< median step: from the previous step's last optimizer end to its own
  double walk_s = 0;   ///< median: from the step's start to its last compute action's end
  double bubble = 0;   ///< median of 1 - busy compute / (devices * walk), as the run prints it
  /// The spread of the actions around their medians: the standard
  /// deviation of log(duration / the median of its stage and kind) over
  /// every compute action measured, each weighed by that median (a few
  /// microseconds' action wandering by half delays nothing): Jitter::sigma's
  /// sense.
  double log_spread = 0;
};

/// Reads a Perfetto trace `pipeforge run --trace` wrote (`text`, from
/// `path` for messages): its compute actions by device, stage and
/// micro-batch, and each device's optimizer slice closing its steps.
/// Throws Error for text that is not such a trace, or one with no step.
MeasuredRun measure_trace(const std::string& text, const std::string& path);

}  // namespace pf
