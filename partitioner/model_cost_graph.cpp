// From a model graph to the partitioner's cost graph.
#include "partitioner/model_cost_graph.h"

#include <algorithm>
#include <vector>

#include "passes/cost_summary.h"

namespace pf {

bool is_replicated_source(const Op& op) { return op.operands.empty() && op.kind != OpKind::call; }

std::vector<int> cut_candidates(const Function& graph, CutPoints cuts) {
  std::vector<int> candidates;
  for (size_t i = 1; i < graph.ops.size(); ++i) {
    const bool layer_starts = graph.ops[i].layer() != graph.ops[i - 1].layer();
    if (cuts == CutPoints::layers ? layer_starts : !is_replicated_source(graph.ops[i - 1]))
      candidates.push_back(static_cast<int>(i));
  }
  return candidates;
}

CostGraph build_cost_graph(const Function& graph, const DimBinding& binding, const OpTimer& timer, CutPoints cuts) {
  CostGraph cg;
  cg.cut_candidates = cut_candidates(graph, cuts);
  auto users = graph.users();
  // The values a backward pass carries a gradient to: parameters and what is
  // computed from one. An op's backward computes only those operands'
  // gradients (a model's first matmul: its weight's, not its input's), so
  // it is charged that share of its float operands' backward time.
  std::vector<bool> carries_grad(graph.values.size(), false);
  // Which values the backward pass reads: conservatively, every activation
  // an op produces (what autodiff stashes is a subset of these).
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Op& op = graph.ops[i];
    OpCost cost = op_cost(graph, op, binding);
    OpTiming t = timer(graph, op, cost);
    CostNode node;
    node.name = graph.values[op.results[0]].name;
    node.layer = op.layer();
    int float_operands = 0, with_grad = 0;
    for (ValueId u : op.operands)
      if (is_float(graph.type_of(u).dtype)) {
        ++float_operands;
        with_grad += carries_grad[u] ? 1 : 0;
      }
    const bool carries = op.kind == OpKind::param || with_grad > 0;
    for (ValueId r : op.results) carries_grad[r] = carries;
    node.forward_s = t.forward_s;
    node.backward_s = float_operands > 0 ? t.backward_s * with_grad / float_operands : t.backward_s;
    for (ValueId r : op.results)
      if (op.kind != OpKind::param && !is_replicated_source(op)) node.stash_bytes += graph.type_of(r).bytes();
    cg.nodes.push_back(std::move(node));
  }
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    const Op& op = graph.ops[i];
    if (op.kind != OpKind::param) continue;
    const ValueId r = op.results[0];
    const std::vector<int>& readers = users[r];
    const size_t holder = readers.empty() ? i : static_cast<size_t>(*std::min_element(readers.begin(), readers.end()));
    cg.nodes[holder].param_bytes += graph.type_of(r).bytes();
  }
  for (size_t v = 0; v < graph.values.size(); ++v) {
    const Value& value = graph.values[v];
    if (value.def_op < 0 || is_replicated_source(graph.ops[value.def_op])) continue;
    CostTensor t;
    t.producer = value.def_op;
    t.name = value.name;
    t.bytes = graph.type_of(static_cast<ValueId>(v)).bytes();
    for (int u : users[v])
      if (t.consumers.empty() || t.consumers.back() != u) t.consumers.push_back(u);
    if (!t.consumers.empty()) cg.tensors.push_back(std::move(t));
  }
  return cg;
}

}  // namespace pf
