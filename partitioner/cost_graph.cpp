// Validation of cost graphs and the prefix sums that make range costs O(1).
#include "partitioner/cost_graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "ir/diagnostic.h"

namespace pf {

namespace {

std::string node_label(const CostGraph& graph, int index) {
  return fmt::format("node {} '{}'", index, graph.nodes[index].name);
}

void check_time(const CostGraph& graph, int index, const char* field, double value) {
  if (!std::isfinite(value) || value < 0)
    throw Error(
        fmt::format("cost graph: {} has {} {}, expected a finite time >= 0", node_label(graph, index), field, value));
}

void check_bytes(const std::string& what, const char* field, int64_t value) {
  if (value < 0) throw Error(fmt::format("cost graph: {} has {} {}, expected >= 0", what, field, value));
}

}  // namespace

void validate(const CostGraph& graph) {
  const int n = static_cast<int>(graph.nodes.size());
  if (n == 0) throw Error("cost graph has no nodes");
  for (int i = 0; i < n; ++i) {
    const CostNode& node = graph.nodes[i];
    check_time(graph, i, "forward_s", node.forward_s);
    check_time(graph, i, "backward_s", node.backward_s);
    check_bytes(node_label(graph, i), "param_bytes", node.param_bytes);
    check_bytes(node_label(graph, i), "stash_bytes", node.stash_bytes);
    check_bytes(node_label(graph, i), "deferred_bytes", node.deferred_bytes);
  }
  for (const SharedParam& p : graph.shared_params) {
    check_bytes(fmt::format("shared parameter of node {}", p.param), "bytes", p.bytes);
    if (p.readers.size() < 2 || !std::is_sorted(p.readers.begin(), p.readers.end()) || p.readers.front() < 0 ||
        p.readers.back() >= n || std::adjacent_find(p.readers.begin(), p.readers.end()) != p.readers.end())
      throw Error(fmt::format("cost graph: shared parameter of node {} needs two or more increasing readers in 0..{}",
                              p.param, n - 1));
  }
  for (const CostTensor& t : graph.tensors) {
    std::string what = fmt::format("tensor '{}'", t.name);
    check_bytes(what, "bytes", t.bytes);
    if (t.producer < -1 || t.producer >= n)
      throw Error(fmt::format("cost graph: {} has producer {}, expected -1 (a graph input) or a node in 0..{}", what,
                              t.producer, n - 1));
    for (int c : t.consumers) {
      if (c < 0 || c >= n)
        throw Error(fmt::format("cost graph: {} has consumer {}, expected a node in 0..{}", what, c, n - 1));
      // A consumer at or before its producer would make the order not
      // topological, and every crossing computed from it meaningless.
      if (c <= t.producer)
        throw Error(fmt::format("cost graph: {} is produced by {} but consumed by {}, which is not after it", what,
                                node_label(graph, t.producer), node_label(graph, c)));
    }
  }
  int previous = 0;
  for (int c : graph.cut_candidates) {
    if (c < 1 || c > n - 1) throw Error(fmt::format("cost graph: cut candidate {} is outside 1..{}", c, n - 1));
    if (c <= previous)
      throw Error(fmt::format("cost graph: cut candidates must increase, got {} after {}", c, previous));
    previous = c;
  }
}

std::vector<int> stage_boundaries(const CostGraph& graph) {
  const int n = static_cast<int>(graph.nodes.size());
  std::vector<int> bounds;
  bounds.push_back(0);
  if (graph.cut_candidates.empty()) {
    for (int i = 1; i < n; ++i) bounds.push_back(i);
  } else {
    bounds.insert(bounds.end(), graph.cut_candidates.begin(), graph.cut_candidates.end());
  }
  bounds.push_back(n);
  return bounds;
}

RangeCosts::RangeCosts(const CostGraph& graph) : shared_params_(graph.shared_params) {
  const int n = static_cast<int>(graph.nodes.size());
  work_.assign(n + 1, 0.0);
  params_.assign(n + 1, 0);
  own_params_.assign(n + 1, 0);
  stash_.assign(n + 1, 0);
  deferred_.assign(n + 1, 0);
  for (int i = 0; i < n; ++i) {
    const CostNode& node = graph.nodes[i];
    work_[i + 1] = work_[i] + node.forward_s + node.backward_s;
    params_[i + 1] = params_[i] + node.param_bytes;
    own_params_[i + 1] = own_params_[i] + node.own_param_bytes;
    stash_[i + 1] = stash_[i] + node.stash_bytes;
    deferred_[i + 1] = deferred_[i] + node.deferred_bytes;
  }
  // A tensor produced by p and last consumed by L crosses boundaries p+1..L:
  // mark the interval with a difference array, then integrate.
  std::vector<int64_t> delta_bytes(n + 2, 0);
  std::vector<int> delta_count(n + 2, 0);
  for (const CostTensor& t : graph.tensors) {
    if (t.producer < 0 || t.consumers.empty()) continue;
    int last = *std::max_element(t.consumers.begin(), t.consumers.end());
    delta_bytes[t.producer + 1] += t.bytes;
    delta_bytes[last + 1] -= t.bytes;
    delta_count[t.producer + 1] += 1;
    delta_count[last + 1] -= 1;
  }
  crossing_bytes_.assign(n + 1, 0);
  crossing_tensors_.assign(n + 1, 0);
  int64_t bytes = 0;
  int count = 0;
  for (int b = 0; b <= n; ++b) {
    bytes += delta_bytes[b];
    count += delta_count[b];
    crossing_bytes_[b] = bytes;
    crossing_tensors_[b] = count;
  }
}

}  // namespace pf
