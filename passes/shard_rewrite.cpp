#include "passes/shard_rewrite.h"

#include <fmt/format.h>

#include "ir/param_piece.h"
#include "ir/verifier.h"

namespace pf {

Op meeting_op(OpKind kind, ValueId in, ValueId out, const Op& like) {
  Op op;
  op.kind = kind;
  op.operands = {in};
  op.results = {out};
  op.loc = like.loc;
  if (const Attr* layer = like.attr("layer")) op.set_attr("layer", *layer);
  return op;
}

Op token_share_op(OpKind kind, ValueId in, ValueId out, const Op& like, int axis, int64_t size, int rank, int ranks) {
  Op op = meeting_op(kind, in, out, like);
  op.set_attr("axis", Attr::of_dim(DimExpr(axis)));
  op.set_attr("size", Attr::of_dim(DimExpr(size)));
  op.set_attr("rank", Attr::of_dim(DimExpr(rank)));
  op.set_attr("ranks", Attr::of_dim(DimExpr(ranks)));
  return op;
}

void cut_parameter(Function& g, Op& param, const ShardLayout& layout, int degree, int rank, FreshNames& fresh_name,
                   std::string_view tag) {
  Value& value = g.values[param.results[0]];
  TensorType type = *value.type;
  const int64_t whole = type.shape.at(static_cast<size_t>(layout.axis));
  const int64_t block = whole / layout.segments;  // several blocks cut evenly; one may not
  const int64_t begin = part_begin(block, degree, rank), end = part_begin(block, degree, rank + 1);
  set_param_piece(param, {value.name, begin, end, whole, layout.axis, layout.segments});
  type.shape[static_cast<size_t>(layout.axis)] = (end - begin) * layout.segments;
  param.declared = {SymType::from(type)};
  value.name = fresh_name(fmt::format("{}.{}{}", value.name, tag, rank));
}

Attr& attr_of(Op& op, std::string_view name) {
  for (NamedAttr& a : op.attrs)
    if (a.name == name) return a.value;
  throw Error(fmt::format("{} has no attribute {}", op_name(op.kind), name), op.loc);
}

bool writes_rank_program(Module& m, const DimBinding& binding, std::string_view pass, int degree, int rank,
                         std::string_view outside) {
  if (degree < 1 || rank < 0 || rank >= degree)
    throw Error(fmt::format("{}: {}", pass, fmt::format(fmt::runtime(outside), rank, degree)));
  if (degree == 1) return false;
  verify_module(m, binding);
  for (const Op& op : m.graph().ops)
    if (op.kind == OpKind::call)
      throw Error(fmt::format("{}: the graph still calls functions; run inline and shape first", pass), op.loc);
  return true;
}

void retype(Module& m, const DimBinding& binding) {
  Function& g = m.graph();
  for (Op& op : g.ops)
    if (!op_info(op.kind).needs_declared_type) op.declared.clear();
  verify_module(m, binding);
  for (Op& op : g.ops) {
    op.declared.clear();
    for (ValueId r : op.results) op.declared.push_back(SymType::from(g.type_of(r)));
  }
}

}  // namespace pf
