#include "partitioner/expert_parallel.h"

#include <fmt/format.h>

#include <set>

#include "ir/diagnostic.h"
#include "partitioner/model_cost_graph.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

TensorParallelSplit apply_expert_parallel(CostGraph& cg, const Function& graph, const ExpertParallel& ep,
                                          int whole_results) {
  const int x = ep.replicas;
  if (x <= 1) return {};
  if (cg.nodes.size() != graph.ops.size())
    throw Error(fmt::format("expert parallelism: the cost graph has {} nodes for {} ops", cg.nodes.size(),
                            graph.ops.size()));
  const TensorParallelLayout layout = expert_parallel_layout(graph, x, whole_results);
  TensorParallelSplit split;
  split.sharded.resize(graph.values.size());
  for (size_t v = 0; v < graph.values.size(); ++v) split.sharded[v] = layout.values[v].sharded();
  const auto users = graph.users();
  const std::vector<bool> carries_grad = gradient_carriers(graph);
  // A ring all-gather or reduce-scatter of a whole of `elements` (every
  // replica's rows): half a ring all-reduce.
  auto ring_half = [&](int64_t elements) {
    return ring_all_reduce_s(static_cast<double>(elements) * static_cast<double>(ep.element_bytes), x, ep.link) / 2;
  };
  std::set<ValueId> gathered;  // the route and the gates read the same gathered logits
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Op& op = graph.ops[i];
    CostNode& node = cg.nodes[i];
    const ShardRole role = layout.ops[i];
    if (op.kind == OpKind::param && layout.values[op.results[0]].sharded()) {
      // Charged to its first reader (build_cost_graph): only the block stays, the replica's own.
      const int64_t bytes = graph.type_of(op.results[0]).bytes(), block = (bytes + x - 1) / x;
      CostNode& holder = cg.nodes[parameter_holder(users, op, static_cast<int>(i))];
      holder.param_bytes -= bytes - block;
      holder.own_param_bytes += block;
    }
    if (role == ShardRole::experts || role == ShardRole::column) {
      const ValueId in = op.operands[0];
      if (!gathered.insert(in).second) continue;
      const int64_t whole = graph.type_of(in).numel() * x;
      node.forward_s += ring_half(whole);
      if (carries_grad[in]) node.backward_s += ring_half(whole);
    }
    if (role == ShardRole::row) {  // the combine
      const int64_t whole = graph.type_of(op.results[0]).numel() * x;
      node.forward_s += ring_half(whole);
      node.backward_s += ring_half(whole);
    }
  }
  return split;
}

}  // namespace pf
