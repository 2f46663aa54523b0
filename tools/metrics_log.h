// `pipeforge run --log F.jsonl`: one JSON object per line, a line per training
// step and one per evaluation, flushed as it is written so that a killed run
// keeps its log up to its last step; and the estimated time a run has left.
#pragma once

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "runtime/step_result.h"

namespace pf::tools {

/// One training step as the log records it.
struct StepMetrics {
  int64_t step = 0;
  double loss = 0;
  double lr = 0;
  double grad_norm = 0;       // before clipping
  double seconds = 0;         // the step's wall time
  double samples_per_s = 0;
  double tokens_per_s = 0;    // 0 for a model that reads no tokens (then left out)
  double bubble = 0;          // the measured fraction of idle device time
  std::vector<int64_t> activation_bytes;  // per stage: the most activations it stashed at once
  std::vector<int64_t> packed_weight_bytes;  // per stage: its weights kept packed (left out where none is)
  bool skipped = false;       // the gradient was not finite and the update was skipped
};

/// Step `step`'s record from what the pipeline measured; `samples` and
/// `tokens` are a batch's (tokens 0 for a model that reads none).
StepMetrics step_metrics(int64_t step, const PipelineStepResult& r, int64_t samples, int64_t tokens);

/// The log of a run. Every record is one line of compact JSON:
///   {"step":1,"loss":2.302,"lr":0.001,"grad_norm":1.2,"seconds":0.05,"samples_per_s":5120,
///    "bubble":0.25,"activation_bytes":[1024,512]}
///   {"step":10,"val_loss":2.1}
/// A loss that is not finite is written as null. Between processes only
/// rank 0 writes: the others hold a log with no path, whose calls do nothing.
class MetricsLog {
 public:
  /// Writes nothing when `path` is empty. Otherwise opens `path`, afresh or,
  /// for a run resumed from a checkpoint, appending (the records then hold
  /// the steps of both runs; a step written twice counts once, its last
  /// record, see read_loss_curves). Throws pf::Error if it cannot.
  MetricsLog(const std::string& path, bool append);

  bool enabled() const { return !path_.empty(); }
  const std::string& path() const { return path_; }

  /// Appends a training step's record.
  void step(const StepMetrics& m);
  /// Appends a validation loss measured after step `step`, and a
  /// classifier's accuracy (a fraction) where there is one:
  /// {"step":N,"val_loss":x} or {"step":N,"val_loss":x,"val_accuracy":a}.
  void eval(int64_t step, double val_loss, std::optional<double> accuracy = std::nullopt);

 private:
  void write_line(const std::string& line);

  std::string path_;
  std::ofstream file_;
};

/// The loss curves of one log file, by step (a step logged twice keeps its
/// last value; a null loss is left out).
struct LossCurves {
  std::vector<std::pair<int64_t, double>> train;
  std::vector<std::pair<int64_t, double>> validation;
};

/// Reads a log written by MetricsLog. A line that is not a JSON object with
/// an integer "step" throws pf::Error naming the file and the line.
LossCurves read_loss_curves(const std::string& path);

/// The time a run has left, from the steps done so far, for the step lines:
/// "eta 3m12s". Shown from the third step on, and only for runs worth waiting
/// on: more than 20 steps, or more than 30 seconds by the estimate (shorter
/// runs' lines stay as they were).
class EtaEstimate {
 public:
  /// `steps`: how many steps this run trains.
  explicit EtaEstimate(int64_t steps) : steps_(steps) {}

  /// After each step, with the seconds since the run's first step began:
  /// "eta 3m12s", or "" when nothing is to be shown. The first step (which
  /// warms up caches and allocators) is left out of the rate.
  std::string after_step(double elapsed_s);

 private:
  int64_t steps_;
  int64_t done_ = 0;
  double first_s_ = 0;
};

/// 192.4 -> "3m12s", 7.2 -> "7s", 3725 -> "1h02m".
std::string format_duration(double seconds);

}  // namespace pf::tools
