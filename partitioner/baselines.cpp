// The equal-layers and equal-params baselines, priced by the search's cost model.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "ir/diagnostic.h"
#include "partitioner/stage_cost.h"
#include "partitioner/stage_search.h"

namespace pf {

namespace {

/// Cut k (1..S-1) goes to the boundary whose cumulative weight is closest to
/// k/S of the total (the earlier one on a tie, and the first of a run of equal
/// weights, i.e. where that weight is first reached), keeping at least one
/// boundary step for every stage still to come. `cumulative` is indexed like
/// `bounds` and never decreases.
std::vector<int> cuts_by_weight(const std::vector<int>& bounds, const std::vector<double>& cumulative, int stages) {
  const int K = static_cast<int>(bounds.size()) - 1;
  const double total = cumulative[K];
  std::vector<int> cuts;
  int previous = 0;
  for (int k = 1; k < stages; ++k) {
    const double target = total * k / stages;
    const int lo = previous + 1;
    const int hi = K - (stages - k);
    int b = static_cast<int>(std::lower_bound(cumulative.begin() + lo, cumulative.begin() + hi + 1, target) -
                             cumulative.begin());
    if (b > hi)
      b = hi;
    else if (b > lo && target - cumulative[b - 1] <= cumulative[b] - target)
      b = b - 1;
    while (b > lo && cumulative[b - 1] == cumulative[b]) --b;
    cuts.push_back(bounds[b]);
    previous = b;
  }
  return cuts;
}

PartitionResult run_baseline(const CostGraph& graph, const PartitionOptions& options, const std::vector<int>& cuts,
                             const char* method, std::chrono::steady_clock::time_point start) {
  PartitionResult result = evaluate(graph, options, cuts);
  result.method = method;
  result.search_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

PartitionResult equal_layers(const CostGraph& graph, const PartitionOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  validate(graph);
  stage_slots(graph, options);  // checks the options before anything is cut
  const int n = static_cast<int>(graph.nodes.size());
  // completed[c]: layers that end at or before position c. Counting completed
  // layers (not started ones) makes the first position reaching a count a
  // layer boundary, so cuts land between layers.
  std::vector<double> completed(n + 1, 0.0);
  int layers = 0;
  for (int i = 0; i < n; ++i) {
    const std::string& layer = graph.nodes[i].layer;
    const bool ends_here = layer.empty() || i + 1 == n || graph.nodes[i + 1].layer != layer;
    if (ends_here) ++layers;
    completed[i + 1] = layers;
  }
  if (layers < options.stages) throw Error(fmt::format("cannot cut {} layers into {} stages", layers, options.stages));
  const std::vector<int> bounds = stage_boundaries(graph);
  std::vector<double> cumulative;
  for (int b : bounds) cumulative.push_back(completed[b]);
  return run_baseline(graph, options, cuts_by_weight(bounds, cumulative, options.stages), "equal-layers", start);
}

PartitionResult equal_params(const CostGraph& graph, const PartitionOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  validate(graph);
  stage_slots(graph, options);
  const RangeCosts ranges(graph);
  const std::vector<int> bounds = stage_boundaries(graph);
  std::vector<double> cumulative;
  for (int b : bounds) cumulative.push_back(static_cast<double>(ranges.param_bytes(0, b)));
  return run_baseline(graph, options, cuts_by_weight(bounds, cumulative, options.stages), "equal-params", start);
}

}  // namespace pf
