// Choosing how to lay a model out on a number of GPUs: pipeline stages (P),
// data-parallel replicas (D) and micro-batches (m), for a given tensor
// parallelism (T), by the step time the cost model predicts for each.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "partitioner/cost_graph.h"
#include "partitioner/stage_search.h"
#include "partitioner/step_time.h"

namespace pf {

/// P pipeline devices of T GPUs each, replicated D times; each replica runs
/// m micro-batches of its share of the batch.
struct Layout {
  int pipeline = 1;
  int data = 1;
  int tensor = 1;
  int microbatches = 1;
  int64_t microbatch_size = 1;  // samples per micro-batch: batch / (D m)
  int64_t gpus() const { return int64_t{pipeline} * data * tensor; }
  bool operator==(const Layout&) const = default;
};

/// The layouts to choose among.
struct LayoutSpace {
  int64_t gpus = 1;       // P x D x T
  int tensor = 1;
  int64_t batch = 1;      // the whole batch
  int max_pipeline = 1;   // at most one stage per layer
  int data = 0;           // replicas; 0: every D that divides the GPUs and the batch
  int microbatches = 0;   // 0: the m giving each of `microbatch_sizes`
  std::vector<int64_t> microbatch_sizes = {1, 2, 4, 8};
  int microbatches_per_device = 0;  // the least m / P the schedule runs (0: any)
};

/// Every layout of `space`, by P then m: P x D x T = gpus, P <= max_pipeline,
/// the batch splitting into D replicas of m micro-batches, and m at least
/// microbatches_per_device x P. Empty when none exists (the caller says
/// why).
std::vector<Layout> candidate_layouts(const LayoutSpace& space);

/// A layout and what the cost model predicts for it.
struct LayoutCandidate {
  Layout layout;
  bool fits = false;
  double period_s = 0;        // the cost DP's period per micro-batch (when it fits)
  StepPrediction step;        // when it fits
  double utilisation = 0;     // model FLOP utilisation of the step (when it fits)
  int64_t memory_bytes = 0;   // the most a GPU needs: the DP's split, or equal layers' when nothing fits
  PartitionResult partition;  // the DP's split when it fits
};

/// Prices `layout`: the stage search of `partition` (whose stages, devices
/// and links are the layout's) on `graph` (one micro-batch of the layout's
/// size, priced for one GPU), then its step. A split that fits nowhere is a
/// candidate that does not fit, with the memory of equal layers.
/// `peak_flops` is one GPU's peak, for the utilisation.
LayoutCandidate price_layout(const Layout& layout, const CostGraph& graph, const PartitionOptions& partition,
                             const StepOptions& step, double peak_flops);

/// The candidates and the chosen one: the least step time among those that
/// fit, the first of equals (fewest stages, then fewest micro-batches, in
/// candidate_layouts' order); -1 when none fits.
struct LayoutChoice {
  std::vector<LayoutCandidate> candidates;
  int best = -1;
};
LayoutChoice choose_layout(std::vector<LayoutCandidate> candidates);

/// One row per candidate: P, D, T, m, micro-batch size, period, step time,
/// MFU, memory per GPU and whether it fits, the chosen one marked with '*'.
std::string render_layout_table(const LayoutChoice& choice);

}  // namespace pf
