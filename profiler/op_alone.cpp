// One op of a model as a graph of its own, for timing it alone.
#include "profiler/op_alone.h"

#include <utility>
#include <vector>

namespace pf {

Module op_alone_module(const Function& g, const Op& op) {
  Module m;
  Function& f = m.functions.emplace_back();
  f.is_graph = true;
  f.name = "op";
  std::vector<ValueId> map(g.values.size(), -1);
  for (ValueId v : op.operands) {
    if (map[v] >= 0) continue;
    ValueId id = f.add_value(g.values[v].name);
    f.values[id].type = g.values[v].type;
    map[v] = id;
    const int def = g.values[v].def_op;
    if (def >= 0 && g.ops[def].kind == OpKind::param) {
      Op param;
      param.kind = OpKind::param;
      param.set_attr("init", *g.ops[def].attr("init"));
      param.declared = g.ops[def].declared;
      param.results = {id};
      f.values[id].def_op = static_cast<int>(f.ops.size());
      f.ops.push_back(std::move(param));
      continue;
    }
    f.args.push_back(id);
    f.arg_types.push_back(SymType::from(g.type_of(v)));
  }
  Op copy = op;
  copy.erase_attr("layer");
  for (ValueId& v : copy.operands) v = map[v];
  for (ValueId& r : copy.results) {
    ValueId id = f.add_value(g.values[r].name);
    f.values[id].type = g.values[r].type;
    f.values[id].def_op = static_cast<int>(f.ops.size());
    r = id;
  }
  f.ops.push_back(copy);
  const TensorType& out = g.type_of(op.results[0]);
  ValueId result = f.ops.back().results[0];
  if (is_float(out.dtype) && out.rank() > 0) {
    Op sum;
    sum.kind = OpKind::reduce_sum;
    std::vector<DimExpr> axes;
    for (int64_t a = 0; a < out.rank(); ++a) axes.emplace_back(a);
    sum.set_attr("axes", Attr::of_dims(axes));
    sum.operands = {result};
    ValueId loss = f.add_value("profile.loss");
    f.values[loss].type = TensorType{out.dtype, {}};
    f.values[loss].def_op = static_cast<int>(f.ops.size());
    sum.results = {loss};
    f.ops.push_back(sum);
    result = loss;
  }
  f.returns = {result};
  f.result_types = {SymType::from(*f.values[result].type)};
  return m;
}

}  // namespace pf
