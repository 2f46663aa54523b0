// What one pipelined step reports: loss, gradient norm, timings, the measured
// bubble, memory per stage and, on request, every action as it ran.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/schedule.h"

namespace pf {

/// One action as it ran, for traces and the measured bubble.
struct TraceEvent {
  int device = 0;
  Action action;
  double start_s = 0, end_s = 0;  // since the step began
};

/// The outcome of one Pipeline::train_step or Pipeline::forward.
struct PipelineStepResult {
  double loss = 0;                      // mean over the micro-batches
  double grad_norm = 0;                 // before clipping; 0 for a forward pass
  /// A forward pass of a classifier (a cross_entropy loss over f32 logits
  /// (..., C) and i32 targets): the targets (other than ignore_index) whose
  /// logits' first largest entry is the target, of how many. Both 0 for a
  /// training step, a model without one, or a stage holding it on a GPU.
  int64_t correct = 0, predicted = 0;
  double lr = 0;                        // of this step's update; 0 for a forward pass
  double seconds = 0;
  double update_seconds = 0;            // after the schedule's actions: collectives, clipping, optimizer
  double bubble = 0;                    // 1 - busy compute / (devices * wall)
  std::vector<int> peak_inflight;       // per stage: micro-batches stashed at once
  std::vector<int64_t> peak_stash_bytes;  // per stage: its stash slots in use at once (until the weight part where split)
  /// Per stage: its weights packed for its products (PackWeights), kept for the next step.
  std::vector<int64_t> packed_weight_bytes;
  std::vector<TraceEvent> trace;        // when PipelineOptions::trace (compute actions always)
};

/// Chrome/Perfetto trace JSON: one track per device, a slice per action.
std::string trace_json(const std::vector<TraceEvent>& events, int devices);

}  // namespace pf
