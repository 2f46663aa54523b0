// Megatron's tensor-parallel split of a graph, and its price on a cost graph.
#include "partitioner/tensor_parallel.h"

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "partitioner/model_cost_graph.h"

namespace pf {

namespace {

bool is_param(const Function& graph, ValueId v) {
  const int def = graph.values[v].def_op;
  return def >= 0 && graph.ops[def].kind == OpKind::param;
}

int64_t divided_bytes(int64_t bytes, int degree) { return (bytes + degree - 1) / degree; }

}  // namespace

TensorParallelSplit tensor_parallel_split(const Function& graph, const std::vector<bool>& sharded_args) {
  TensorParallelSplit split;
  const size_t ops = graph.ops.size();
  split.sharded = sharded_args;
  split.sharded.resize(graph.values.size(), false);
  split.divided.assign(ops, false);
  split.forward_reduced.assign(ops, 0);
  split.backward_reduced.assign(ops, 0);
  const std::vector<bool> carries_grad = gradient_carriers(graph);
  for (size_t i = 0; i < ops; ++i) {
    const Op& op = graph.ops[i];
    if (op.kind == OpKind::param || op.operands.empty()) continue;
    const bool weighted = op.kind == OpKind::matmul && op.operands.size() == 2 && is_param(graph, op.operands[1]) &&
                          graph.type_of(op.operands[1]).rank() == 2;
    if (weighted) {
      const ValueId input = op.operands[0];
      split.sharded[op.operands[1]] = true;
      split.divided[i] = true;
      if (split.sharded[input]) {
        // Row-parallel: partial sums of the whole output, summed after the forward.
        split.forward_reduced[i] = graph.type_of(op.results[0]).numel();
      } else {
        // Column-parallel: a slice of the output; the input's gradient is a
        // partial sum, summed in the backward.
        for (ValueId r : op.results) split.sharded[r] = true;
        if (carries_grad[input]) split.backward_reduced[i] = graph.type_of(input).numel();
      }
      continue;
    }
    if (op.kind == OpKind::embedding && is_param(graph, op.operands[0])) {
      // Vocabulary-parallel: each GPU looks up its rows, the sum completes it.
      split.sharded[op.operands[0]] = true;
      split.divided[i] = true;
      split.forward_reduced[i] = graph.type_of(op.results[0]).numel();
      continue;
    }
    bool sharded = false;
    for (ValueId u : op.operands) sharded = sharded || (!is_param(graph, u) && split.sharded[u]);
    if (!sharded) continue;
    split.divided[i] = true;
    for (ValueId r : op.results) split.sharded[r] = true;
    for (ValueId u : op.operands)
      if (is_param(graph, u)) split.sharded[u] = true;  // a column-parallel layer's bias
  }
  return split;
}

double ring_all_reduce_s(double bytes, int ranks, const LinkSpec& link) {
  return RingAllReduce(ranks, link).seconds(bytes);
}

void apply_tensor_parallel(CostGraph& cg, const Function& graph, const TensorParallel& tp,
                           const std::vector<bool>& sharded_args) {
  const int t = tp.degree;
  if (t == 1) return;
  if (cg.nodes.size() != graph.ops.size())
    throw Error(fmt::format("tensor parallelism: the cost graph has {} nodes for {} ops", cg.nodes.size(),
                            graph.ops.size()));
  const TensorParallelSplit split = tensor_parallel_split(graph, sharded_args);
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
      return split.sharded[r] ? divided_bytes(bytes, t) : bytes;
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
  }
}

Cluster grouped_cluster(const Cluster& cluster, int degree, double bandwidth_scale) {
  Cluster grouped = cluster;
  grouped.devices_per_node = cluster.devices_per_node / degree;
  grouped.intra.bandwidth_bytes_per_s *= bandwidth_scale;
  grouped.inter.bandwidth_bytes_per_s *= bandwidth_scale;
  return grouped;
}

}  // namespace pf
