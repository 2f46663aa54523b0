// Costs of ops, summed per layer.
#include "passes/cost_summary.h"

#include <map>

#include "ir/verifier.h"

namespace pf {

OpCost op_cost(const Function& f, const Op& op, const DimBinding& binding) {
  std::vector<TensorType> in, out;
  for (ValueId v : op.operands) in.push_back(f.type_of(v));
  for (ValueId v : op.results) out.push_back(f.type_of(v));
  return op_info(op.kind).cost(in, out, evaluate_attrs(op, binding));
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
