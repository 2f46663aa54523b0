// Pipelined training on CPU devices in one process: one worker thread per
// device walks its schedule's action list; activations and gradients are
// handed between stages without copying, by micro-batch.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ir/plan.h"
#include "partitioner/stage_split.h"
#include "runtime/lr_schedule.h"
#include "runtime/optimizer.h"
#include "runtime/parameters.h"
#include "runtime/schedule.h"
#include "runtime/trainer.h"

namespace pf {

struct PipelineOptions {
  ScheduleKind schedule = ScheduleKind::one_f_one_b;
  int microbatches = 1;
  int virtual_stages = 1;
  TrainerOptions train;
  /// A worker that waits longer than this for a peer stops the step with an
  /// error naming both stages (a watchdog against hangs).
  double timeout_s = 60;
  /// Record every action's start and end for a Perfetto trace.
  bool trace = false;
};

/// One action as it ran, for traces and the measured bubble.
struct TraceEvent {
  int device = 0;
  Action action;
  double start_s = 0, end_s = 0;  // since the step began
};

struct PipelineStepResult {
  double loss = 0;
  double grad_norm = 0;
  double lr = 0;
  double seconds = 0;
  double bubble = 0;                    // 1 - busy compute / (devices * wall)
  std::vector<int> peak_inflight;       // per stage: micro-batches stashed at once
  std::vector<int64_t> peak_stash_bytes;  // per stage
  std::vector<TraceEvent> trace;        // when PipelineOptions::trace
};

class Pipeline {
 public:
  /// `stages` come from split_into_stages under `micro_binding`: the model's
  /// binding with the batch dimension divided by the micro-batch count.
  /// Stage s runs on device s % devices (devices = stages / virtual_stages).
  Pipeline(std::vector<StageModule> stages, const DimBinding& micro_binding, const PipelineOptions& options);
  ~Pipeline();

  /// The pipeline a plan describes (its schedule, micro-batches and virtual
  /// stages override those of `options`). Each stage's backward program is
  /// derived again and must equal the plan's.
  static std::unique_ptr<Pipeline> from_plan(const Plan& plan, PipelineOptions options);

  int stages() const;
  /// Stage `stage`'s differentiated program as text (a plan's `backward`).
  std::string backward_text(int stage) const;
  int devices() const;
  const Schedule& schedule() const;
  /// Every parameter of every stage (a tied one once per stage holding it).
  std::vector<ParameterSet*> parameter_sets();
  void initialize(uint64_t seed);
  /// Loads each stage's parameters from one file holding the whole model's.
  void load(const SafeTensors& file, const std::string& what);
  /// The gradients of the last step, one per parameter (tied ones summed).
  void save_grads(SafeTensors& file) const;
  void save_values(SafeTensors& file) const;
  void start();

  /// One step on a full batch: `inputs` are the model's inputs by name, each
  /// holding `microbatches` micro-batches back to back along its first axis.
  /// Forward and backward of every micro-batch in schedule order, then the
  /// tied gradients are summed, clipped together, and every stage steps.
  PipelineStepResult train_step(const std::vector<std::pair<std::string, const void*>>& inputs,
                                bool step_optimizer = true);

 private:
  struct Stage;
  void run_device(int device, const std::vector<std::pair<std::string, const void*>>& inputs,
                  PipelineStepResult& result, double t0);
  void sum_tied_grads();

  PipelineOptions options_;
  Schedule schedule_;
  std::vector<std::unique_ptr<Stage>> stages_;
  std::optional<LrSchedule> lr_;
  struct Shared;
  std::unique_ptr<Shared> shared_;
};

/// Chrome/Perfetto trace JSON: one track per device, a slice per action.
std::string trace_json(const std::vector<TraceEvent>& events, int devices);

}  // namespace pf
