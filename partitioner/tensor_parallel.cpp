// Megatron's tensor-parallel split of a graph, and its price on a cost graph.
#include "partitioner/tensor_parallel.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"
#include "partitioner/model_cost_graph.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

namespace {

int64_t divided_bytes(int64_t bytes, int degree) { return (bytes + degree - 1) / degree; }

}  // namespace

TensorParallelSplit tensor_parallel_split(const Function& graph, int degree, int whole_results,
                                          const std::vector<std::string>& whole_params, bool sequence,
                                          const std::vector<std::string>& hand_offs_in_parts) {
  const TensorParallelLayout layout =
      tensor_parallel_layout(graph, degree, whole_results, whole_params, sequence, hand_offs_in_parts);
  TensorParallelSplit split;
  const size_t ops = graph.ops.size();
  split.sharded.resize(graph.values.size());
  for (size_t v = 0; v < graph.values.size(); ++v) split.sharded[v] = layout.values[v].sharded();
  split.tokens = layout.tokens;
  split.divided.assign(ops, false);
  split.forward_reduced.assign(ops, 0);
  split.backward_reduced.assign(ops, 0);
  split.forward_gathered.assign(ops, 0);
  split.backward_gathered.assign(ops, 0);
  const std::vector<bool> carries_grad = gradient_carriers(graph);
  auto numel = [&](ValueId v) { return graph.type_of(v).numel(); };
  for (size_t i = 0; i < ops; ++i) {
    const Op& op = graph.ops[i];
    const ShardRole role = layout.ops[i];
    split.divided[i] = role != ShardRole::whole && role != ShardRole::experts;  // a route chooses for every token
    if (role == ShardRole::row) {
      const ValueId y = op.results[0];
      if (!layout.tokens[y]) {
        split.forward_reduced[i] = numel(y);
      } else {
        // Reduce-scattered over the tokens; its gradient, the parts gathered.
        split.forward_gathered[i] = numel(y);
        if (carries_grad[y]) split.backward_gathered[i] = numel(y);
      }
    }
    // A loss over the ranks' classes meets them twice per row: its maximum, then its two parts.
    if (role == ShardRole::sharded && op.kind == OpKind::cross_entropy)
      split.forward_reduced[i] = 3 * numel(op.operands[1]);
    if (role == ShardRole::column) {
      const ValueId x = op.operands[0];
      if (!layout.tokens[x]) {
        if (carries_grad[x]) split.backward_reduced[i] = numel(x);
      } else {
        // Gathered for the product, gathered again for the weight's gradient
        // (autodiff keeps the part), its gradient reduce-scattered.
        split.forward_gathered[i] = numel(x);
        split.backward_gathered[i] = (carries_grad[x] ? 2 : 1) * numel(x);
      }
    }
    // A part gathered whole for an op outside the token regions; a whole
    // value read along the tokens by one inside, its gradient gathered from
    // the parts; a weight broadcast over the tokens, its gradient summed.
    for (ValueId u : op.operands) {
      if (layout.tokens[u] && role != ShardRole::tokens && role != ShardRole::column)
        split.forward_gathered[i] += numel(u);
      if (layout.tokens[u] || role != ShardRole::tokens || !carries_grad[u]) continue;
      const bool spans = spans_tokens(graph.type_of(u), graph.type_of(op.results[0]));
      (spans ? split.backward_gathered : split.backward_reduced)[i] += numel(u);
    }
  }
  // Results leave whole (gathered) unless they are handed on in parts.
  for (ValueId r : graph.returns)
    if (layout.tokens[r] && !graph.ops.empty() &&
        std::find(hand_offs_in_parts.begin(), hand_offs_in_parts.end(), graph.values[r].name) ==
            hand_offs_in_parts.end())
      split.forward_gathered.back() += numel(r);
  return split;
}

std::vector<int> cuts_between_shares(const Function& graph, const TensorParallelSplit& split,
                                     std::vector<int> candidates) {
  const int n = static_cast<int>(graph.ops.size());
  if (candidates.empty())
    for (int i = 1; i < n; ++i) candidates.push_back(i);
  // A share defined by op d and last read by op u crosses the cuts d+1..u.
  std::vector<bool> crossed(static_cast<size_t>(n) + 1, false);
  const auto users = graph.users();
  for (size_t v = 0; v < graph.values.size(); ++v) {
    const int def = graph.values[v].def_op;
    if (!split.sharded[v] || def < 0 || graph.ops[def].kind == OpKind::param || users[v].empty()) continue;
    for (int cut = def + 1; cut <= users[v].back(); ++cut) crossed[static_cast<size_t>(cut)] = true;
  }
  std::erase_if(candidates, [&](int cut) { return crossed[static_cast<size_t>(cut)]; });
  if (candidates.empty() && n > 1)
    throw Error("tensor parallelism leaves no cut between stages: every cut of the graph falls between a "
                "column-parallel product and its row-parallel one");
  return candidates;
}

double ring_all_reduce_s(double bytes, int ranks, const LinkSpec& link) {
  return RingAllReduce(ranks, link).seconds(bytes);
}

TensorParallelSplit apply_tensor_parallel(CostGraph& cg, const Function& graph, const TensorParallel& tp,
                                          int whole_results, const std::vector<std::string>& whole_params) {
  const int t = tp.degree;
  if (t == 1) return {};
  if (cg.nodes.size() != graph.ops.size())
    throw Error(fmt::format("tensor parallelism: the cost graph has {} nodes for {} ops", cg.nodes.size(),
                            graph.ops.size()));
  const TensorParallelSplit split =
      tensor_parallel_split(graph, t, whole_results, whole_params, tp.sequence, tp.hand_offs_in_parts);
  const auto users = graph.users();
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Op& op = graph.ops[i];
    CostNode& node = cg.nodes[i];
    if (split.divided[i]) {
      node.forward_s /= t;
      node.backward_s /= t;
    }
    auto share = [&](ValueId r) {
      const int64_t bytes = graph.type_of(r).bytes();
      return split.sharded[r] || split.tokens[r] ? divided_bytes(bytes, t) : bytes;
    };
    if (op.kind == OpKind::param) {
      // Charged to its first reader (build_cost_graph): only a 1/T share stays.
      const ValueId r = op.results[0];
      cg.nodes[parameter_holder(users, op, static_cast<int>(i))].param_bytes -= graph.type_of(r).bytes() - share(r);
      for (SharedParam& p : cg.shared_params)
        if (p.param == static_cast<int>(i)) p.bytes = share(r);
    } else if (node.stash_bytes > 0) {
      // The share of what the node stashes (as the cost graph sized it).
      int64_t whole = 0, kept = 0;
      for (ValueId r : op.results) {
        whole += graph.type_of(r).bytes();
        kept += share(r);
      }
      node.stash_bytes = static_cast<int64_t>(static_cast<double>(node.stash_bytes) * static_cast<double>(kept) /
                                              static_cast<double>(whole));
    }
    const double element = static_cast<double>(tp.element_bytes);
    node.forward_s += ring_all_reduce_s(static_cast<double>(split.forward_reduced[i]) * element, t, tp.link);
    node.backward_s += ring_all_reduce_s(static_cast<double>(split.backward_reduced[i]) * element, t, tp.link);
    // A ring all-gather or reduce-scatter is half a ring all-reduce: one pass around instead of two.
    node.forward_s += ring_all_reduce_s(static_cast<double>(split.forward_gathered[i]) * element, t, tp.link) / 2;
    node.backward_s += ring_all_reduce_s(static_cast<double>(split.backward_gathered[i]) * element, t, tp.link) / 2;
  }
  return split;
}

Cluster grouped_cluster(const Cluster& cluster, int degree, double bandwidth_scale) {
  Cluster grouped = cluster;
  grouped.devices_per_node = cluster.devices_per_node / degree;
  grouped.intra.bandwidth_bytes_per_s *= bandwidth_scale;
  grouped.inter.bandwidth_bytes_per_s *= bandwidth_scale;
  return grouped;
}

}  // namespace pf
