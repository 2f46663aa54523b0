// Costs of ops, summed per layer.
#include "passes/cost_summary.h"

#include <algorithm>
#include <map>
#include <utility>

#include "ir/verifier.h"

namespace pf {

namespace {

/// The moe_route that made `route` (a value of `f`), and its function.
std::pair<const Function*, const Op*> route_maker(const Function& f, ValueId route, const Module* module) {
  const int def = f.values[route].def_op;
  if (def >= 0) return {&f, &f.ops[def]};
  if (module == nullptr) return {nullptr, nullptr};
  for (const Function& other : module->functions) {
    const ValueId v = other.find_value(f.values[route].name);
    if (&other != &f && v >= 0 && other.values[v].def_op >= 0) return {&other, &other.ops[other.values[v].def_op]};
  }
  return {nullptr, nullptr};
}

/// The share of the slots of `route` (a value of `f`) that a balanced route fills.
double filled_slots(const Function& f, ValueId route, const DimBinding& binding, const Module* module) {
  const auto [maker_f, maker] = route_maker(f, route, module);
  if (maker == nullptr || maker->kind != OpKind::moe_route) return 1.0;
  const TensorType& logits = maker_f->type_of(maker->operands[0]);
  const int64_t capacity = f.type_of(route).shape[1];
  const int64_t tokens = logits.shape[0], experts = logits.shape[1];
  const int64_t top_k = evaluate_attrs(*maker, binding).get_int("top_k", 1);
  if (capacity <= 0 || experts <= 0) return 1.0;
  const int64_t fair = (tokens * top_k + experts - 1) / experts;
  return static_cast<double>(std::min(fair, capacity)) / static_cast<double>(capacity);
}

}  // namespace

OpCost op_cost(const Function& f, const Op& op, const DimBinding& binding, const Module* module) {
  std::vector<TensorType> in, out;
  for (ValueId v : op.operands) in.push_back(f.type_of(v));
  for (ValueId v : op.results) out.push_back(f.type_of(v));
  OpCost cost = op_info(op.kind).cost(in, out, evaluate_attrs(op, binding));
  auto scale = [](int64_t& x, double share) { x = static_cast<int64_t>(static_cast<double>(x) * share); };
  if (op.kind == OpKind::moe_matmul) {
    scale(cost.flops, filled_slots(f, op.operands[2], binding, module));
  } else if ((op.kind == OpKind::swiglu || op.kind == OpKind::swiglu_grad) &&
             route_operand(op.kind, op.operands.size()) >= 0) {
    // Reads and computes the slots in use only (and zeroes the rest).
    const double share = filled_slots(f, op.operands.back(), binding, module);
    scale(cost.flops, share);
    scale(cost.bytes, share);
  }
  return cost;
}

ModelCost summarize_cost(const Function& graph, const DimBinding& binding) {
  ModelCost cost;
  std::map<std::string, size_t> index;
  cost.total.layer = "total";
  for (const Op& op : graph.ops) {
    std::string name = op.layer().empty() ? "(none)" : op.layer();
    auto [it, fresh] = index.emplace(name, cost.layers.size());
    if (fresh) cost.layers.push_back(LayerCost{name});
    LayerCost& layer = cost.layers[it->second];
    OpCost c = op_cost(graph, op, binding);
    int64_t params = 0, param_bytes = 0, produced = 0;
    for (ValueId r : op.results) {
      const TensorType& t = graph.type_of(r);
      if (op.kind == OpKind::param) {
        params += t.numel();
        param_bytes += t.bytes();
      } else if (op.kind != OpKind::constant) {
        produced += t.bytes();
      }
    }
    for (LayerCost* l : {&layer, &cost.total}) {
      l->ops += 1;
      l->params += params;
      l->param_bytes += param_bytes;
      l->flops += c.flops;
      l->bytes += c.bytes;
      l->activation_bytes += produced;
    }
  }
  if (!graph.args.empty()) {
    const TensorType& first = graph.type_of(graph.args[0]);
    if (!first.shape.empty() && first.shape[0] > 0) cost.batch = first.shape[0];
  }
  return cost;
}

}  // namespace pf
