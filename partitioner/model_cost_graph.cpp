// From a model graph to the partitioner's cost graph.
#include "partitioner/model_cost_graph.h"

#include <string>
#include <vector>

#include "passes/cost_summary.h"

namespace pf {

bool is_replicated_source(const Op& op) { return op.operands.empty() && op.kind != OpKind::call; }

CostGraph build_cost_graph(const Function& graph, const DimBinding& binding, const OpTimer& timer,
                           const std::vector<std::string>& grad_args) {
  CostGraph cg;
  // The values a backward pass carries a gradient to: parameters and what is
  // computed from one. An op's backward computes only those operands'
  // gradients (a model's first matmul: its weight's, not its input's), so
  // it is charged that share of its float operands' backward time.
  std::vector<bool> carries_grad(graph.values.size(), false);
  for (const std::string& name : grad_args)
    if (const ValueId v = graph.find_value(name); v >= 0) carries_grad[v] = true;
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
    for (ValueId r : op.results) {
      const TensorType& type = graph.type_of(r);
      if (op.kind == OpKind::param) node.param_bytes += type.bytes();
      else if (!is_replicated_source(op)) node.stash_bytes += type.bytes();
    }
    cg.nodes.push_back(std::move(node));
    if (i > 0 && op.layer() != graph.ops[i - 1].layer()) cg.cut_candidates.push_back(static_cast<int>(i));
  }
  auto users = graph.users();
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
