// From a model graph to the partitioner's cost graph.
#include "partitioner/model_cost_graph.h"

#include <algorithm>
#include <string>
#include <vector>

#include "ir/op_table.h"
#include "passes/autodiff.h"
#include "passes/cost_summary.h"

namespace pf {

bool is_replicated_source(const Op& op) { return op.operands.empty() && op.kind != OpKind::call; }

std::vector<bool> gradient_carriers(const Function& graph, const std::vector<std::string>& grad_args) {
  std::vector<bool> carries(graph.values.size(), false);
  for (const std::string& name : grad_args)
    if (const ValueId v = graph.find_value(name); v >= 0) carries[static_cast<size_t>(v)] = true;
  for (const Op& op : graph.ops) {
    bool any = op.kind == OpKind::param;
    for (ValueId u : op.operands) any = any || (carries[u] && is_float(graph.type_of(u).dtype));
    for (ValueId r : op.results) carries[r] = any;
  }
  return carries;
}

size_t parameter_holder(const std::vector<std::vector<int>>& users, const Op& param, int index) {
  const std::vector<int>& readers = users[param.results[0]];
  return static_cast<size_t>(readers.empty() ? index : *std::min_element(readers.begin(), readers.end()));
}

std::vector<int> cut_candidates(const Function& graph, CutPoints cuts) {
  std::vector<int> candidates;
  for (size_t i = 1; i < graph.ops.size(); ++i) {
    const bool layer_starts = graph.ops[i].layer() != graph.ops[i - 1].layer();
    if (cuts == CutPoints::layers ? layer_starts : !is_replicated_source(graph.ops[i - 1]))
      candidates.push_back(static_cast<int>(i));
  }
  return candidates;
}

std::vector<bool> values_named(const Function& graph, const std::vector<std::string>& names) {
  std::vector<bool> out(graph.values.size(), false);
  for (const std::string& name : names)
    if (const ValueId v = graph.find_value(name); v >= 0) out[static_cast<size_t>(v)] = true;
  return out;
}

BackwardReads backward_reads(const Module& model, const DimBinding& binding, Recompute recompute) {
  Module copy = model;
  AutodiffOptions options;
  options.recompute = recompute;
  const GradientProgram gp = differentiate(copy, binding, options);
  return {values_named(model.graph(), gp.stash), values_named(model.graph(), gp.recomputed)};
}

CostGraph build_cost_graph(const Function& graph, const DimBinding& binding, const OpTimer& timer,
                           const CostGraphOptions& options) {
  CostGraph cg;
  cg.cut_candidates = cut_candidates(graph, options.cuts);
  // What an activation takes as stored and sent (the few results a half
  // type keeps in f32 at their own size).
  auto activation_bytes = [&](ValueId v, bool keeps_f32 = false) {
    const TensorType& type = graph.type_of(v);
    if (options.float_activation_bytes > 0 && is_float(type.dtype) && !keeps_f32)
      return type.numel() * options.float_activation_bytes;
    return type.bytes();
  };
  const auto users = graph.users();
  // An op's backward computes only the gradients of the operands a gradient
  // reaches (a model's first matmul: its weight's, not its input's), so it
  // is charged that share of its float operands' backward time.
  const std::vector<bool> carries_grad = gradient_carriers(graph, options.grad_args);
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
    node.forward_s = t.forward_s;
    node.backward_s = float_operands > 0 ? t.backward_s * with_grad / float_operands : t.backward_s;
    // A backward does about twice its forward's arithmetic (as the timer
    // assumes), for the share of operands that get a gradient.
    const double backward_share = float_operands > 0 ? static_cast<double>(with_grad) / float_operands : 1.0;
    node.flops = static_cast<double>(cost.flops) * (1.0 + 2.0 * backward_share);
    // A forward the backward computes again (Recompute) takes its
    // time too; `flops` stays the model's (MFU does not count the repeat).
    if (!options.recomputed.empty() &&
        std::any_of(op.results.begin(), op.results.end(),
                    [&](ValueId r) { return options.recomputed[static_cast<size_t>(r)]; }))
      node.backward_s += node.forward_s;
    // What the backward reads of the op's results (all of them when unknown).
    for (size_t k = 0; k < op.results.size(); ++k) {
      const ValueId r = op.results[k];
      if (!is_replicated_source(op) && (options.stashed.empty() || options.stashed[static_cast<size_t>(r)]))
        node.stash_bytes += activation_bytes(r, keeps_f32_result(op.kind, k));
    }
    // The weight part of a split backward reads the output gradient of each
    // op whose weight it differentiates; the other ops' parameter gradients
    // (biases, norms) read one of those or are no larger than their weights.
    const bool weighted = std::any_of(op.operands.begin(), op.operands.end(), [&](ValueId u) {
      const int def = graph.values[static_cast<size_t>(u)].def_op;
      return def >= 0 && graph.ops[static_cast<size_t>(def)].kind == OpKind::param;
    });
    if (options.split_backward && weighted &&
        (op.kind == OpKind::matmul || op.kind == OpKind::conv2d || op.kind == OpKind::embedding))
      node.deferred_bytes = activation_bytes(op.results[0]);
    cg.nodes.push_back(std::move(node));
  }
  // A parameter's bytes go to its first reader: the stage holding it,
  // wherever the model declares it.
  for (size_t i = 0; i < graph.ops.size(); ++i)
    if (graph.ops[i].kind == OpKind::param) {
      const int64_t bytes = graph.type_of(graph.ops[i].results[0]).bytes();
      cg.nodes[parameter_holder(users, graph.ops[i], static_cast<int>(i))].param_bytes += bytes;
      std::vector<int> readers = users[graph.ops[i].results[0]];
      std::sort(readers.begin(), readers.end());
      readers.erase(std::unique(readers.begin(), readers.end()), readers.end());
      if (readers.size() > 1) cg.shared_params.push_back({static_cast<int>(i), bytes, std::move(readers)});
    }
  for (size_t v = 0; v < graph.values.size(); ++v) {
    const Value& value = graph.values[v];
    if (value.def_op < 0 || is_replicated_source(graph.ops[value.def_op])) continue;
    CostTensor t;
    t.producer = value.def_op;
    t.name = value.name;
    t.bytes = activation_bytes(static_cast<ValueId>(v));
    for (int u : users[v])
      if (t.consumers.empty() || t.consumers.back() != u) t.consumers.push_back(u);
    if (!t.consumers.empty()) cg.tensors.push_back(std::move(t));
  }
  return cg;
}

}  // namespace pf
