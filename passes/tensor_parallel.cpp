// tensor-parallel: one rank's program of a graph split over a group of ranks
// as Megatron-LM splits a transformer (tensor_parallel_layout). The rank
// declares its block of every parameter the split cuts; a column-parallel
// product reads its input through tp_copy (whose gradient sums the ranks'
// partial input gradients), a row-parallel product's partial sum goes
// through tp_reduce, and the reshapes and splits between them are resized
// to the rank's share. Autodiff, run after it, derives the rank's backward.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "ir/param_piece.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/rewrite.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

namespace {

/// A tp_copy or tp_reduce from `in` to `out`, in `like`'s layer.
Op group_op(OpKind kind, ValueId in, ValueId out, const Op& like) {
  Op op;
  op.kind = kind;
  op.operands = {in};
  op.results = {out};
  op.loc = like.loc;
  if (const Attr* layer = like.attr("layer")) op.set_attr("layer", *layer);
  return op;
}

/// The rank's block of a parameter the split cuts: a piece of the whole,
/// named for the rank, initialised and saved as its part of the whole.
void cut_parameter(Function& g, Op& param, const ShardLayout& layout, int degree, int rank, FreshNames& fresh_name) {
  Value& value = g.values[param.results[0]];
  TensorType type = *value.type;
  const int64_t whole = type.shape.at(static_cast<size_t>(layout.axis));
  const int64_t block = whole / layout.segments;  // several blocks cut evenly; one may not
  const int64_t begin = part_begin(block, degree, rank), end = part_begin(block, degree, rank + 1);
  set_param_piece(param, {value.name, begin, end, whole, layout.axis, layout.segments});
  type.shape[static_cast<size_t>(layout.axis)] = (end - begin) * layout.segments;
  param.declared = {SymType::from(type)};
  value.name = fresh_name(fmt::format("{}.tp{}", value.name, rank));
}

Attr& attr_of(Op& op, std::string_view name) {
  for (NamedAttr& a : op.attrs)
    if (a.name == name) return a.value;
  throw Error(fmt::format("{} has no attribute {}", op_name(op.kind), name), op.loc);
}

/// A reshape's target and a split's sizes, for the rank's share.
void resize(const Function& g, Op& op, const TensorParallelLayout& split) {
  const int degree = split.degree;
  if (op.kind == OpKind::reshape) {
    DimExpr& d = attr_of(op, "shape").dims.at(static_cast<size_t>(split.values[op.results[0]].axis));
    if (d.constant() != -1) d = DimExpr(d.constant() / degree);
  }
  if (op.kind == OpKind::split) {
    const ValueId x = op.operands[0];
    const int64_t axis = attr_of(op, "axis").dim.constant();
    if ((axis < 0 ? axis + g.type_of(x).rank() : axis) != split.values[x].axis) return;
    for (DimExpr& d : attr_of(op, "sizes").dims) d = DimExpr(d.constant() / degree);
  }
}

/// A cross-entropy of logits whose classes the ranks share, as Megatron's
/// vocabulary-parallel loss: the group's maximum of each row steadies the
/// exponentials; each rank sums its exponentials and picks the target's
/// logit where it holds the target; the group sums both parts, and the loss
/// is the mean of log(sum) - target logit. No rank ever holds a whole row.
void cross_entropy_over_classes(Function& g, const Op& loss, int degree, int rank, FreshNames& fresh_name,
                                std::vector<Op>& ops) {
  const ValueId logits = loss.operands[0], targets = loss.operands[1];
  const std::string name = g.values[loss.results[0]].name;  // a copy: new values move the names
  const int64_t classes = g.type_of(logits).shape.back();
  auto emit = [&](OpKind kind, std::vector<ValueId> operands, const std::string& result) {
    Op op;
    op.kind = kind;
    op.operands = std::move(operands);
    op.results = {g.add_value(fresh_name(result), loss.loc)};
    op.loc = loss.loc;
    if (const Attr* layer = loss.attr("layer")) op.set_attr("layer", *layer);
    ops.push_back(op);
    return op.results[0];
  };
  const ValueId local = emit(OpKind::reduce_max, {logits}, name + ".max.local");
  ops.back().set_attr("axes", Attr::of_dims({DimExpr(-1)}));
  const ValueId max = emit(OpKind::tp_max, {local}, name + ".max");
  const ValueId partial = emit(OpKind::cross_entropy_parts, {logits, max, targets}, name + ".parts.partial");
  ops.back().set_attr("offset", Attr::of_dim(DimExpr(part_begin(classes, degree, rank))));
  ops.back().set_attr("vocab", Attr::of_dim(DimExpr(classes)));
  if (const Attr* ignore = loss.attr("ignore_index")) ops.back().set_attr("ignore_index", *ignore);
  const ValueId parts = emit(OpKind::tp_reduce, {partial}, name + ".parts");
  Op total = loss;
  total.kind = OpKind::cross_entropy_total;
  total.operands = {parts, targets};
  ops.push_back(std::move(total));
}

void shard(Function& g, const TensorParallelLayout& split, int rank) {
  std::vector<Op> ops;
  std::map<ValueId, ValueId> copies;  // a column product's whole input -> its tp_copy
  FreshNames fresh_name(g);
  for (size_t i = 0; i < g.ops.size(); ++i) {
    Op op = g.ops[i];
    switch (split.ops[i]) {
      case ShardRole::column: {
        const ValueId x = op.operands[0];
        auto [copy, fresh] = copies.try_emplace(x, -1);
        if (fresh) {
          copy->second = g.add_value(fresh_name(g.values[x].name + ".tp"), op.loc);
          ops.push_back(group_op(OpKind::tp_copy, x, copy->second, op));
        }
        op.operands[0] = copy->second;
        break;
      }
      case ShardRole::row: {
        if (op.kind == OpKind::embedding) {
          // The rank's rows of the table: the ids it holds, zeros for the rest.
          const int64_t rows = g.type_of(op.operands[0]).shape[0];
          op.set_attr("offset", Attr::of_dim(DimExpr(part_begin(rows, split.degree, rank))));
          op.set_attr("vocab", Attr::of_dim(DimExpr(rows)));
        }
        // The partial product takes a new name; the sum keeps the product's.
        const ValueId y = op.results[0];
        const ValueId partial = g.add_value(fresh_name(g.values[y].name + ".partial"), op.loc);
        op.results[0] = partial;
        ops.push_back(op);
        ops.push_back(group_op(OpKind::tp_reduce, partial, y, op));
        continue;
      }
      case ShardRole::sharded:
        if (op.kind == OpKind::cross_entropy) {
          cross_entropy_over_classes(g, op, split.degree, rank, fresh_name, ops);
          continue;
        }
        resize(g, op, split);
        break;
      case ShardRole::whole:
        if (op.kind == OpKind::param && split.values[op.results[0]].sharded())
          cut_parameter(g, op, split.values[op.results[0]], split.degree, rank, fresh_name);
        break;
    }
    ops.push_back(std::move(op));
  }
  g.ops = std::move(ops);
  compact_values(g);
}

/// Types every value again and writes the result types in, as the shape
/// pass leaves them. Sources keep what they declare (a piece its new type).
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

class TensorParallelPass final : public Pass {
 public:
  std::string_view name() const override { return "tensor-parallel"; }
  std::string_view summary() const override {
    return "split products over a tensor-parallel group as Megatron-LM does (one rank's program)";
  }

  bool run(Module& m, PassContext& ctx) override {
    const int degree = ctx.tensor_parallel, rank = ctx.tensor_parallel_rank;
    if (degree < 1 || rank < 0 || rank >= degree)
      throw Error(fmt::format("tensor-parallel: rank {} is not one of a group of {}", rank, degree));
    if (degree == 1) return false;
    Function& g = m.graph();
    verify_module(m, ctx.binding);
    for (const Op& op : g.ops)
      if (op.kind == OpKind::call)
        throw Error("tensor-parallel: the graph still calls functions; run inline and shape first", op.loc);
    const TensorParallelLayout split = tensor_parallel_layout(g, degree, -1, ctx.tensor_parallel_whole);
    if (std::all_of(split.ops.begin(), split.ops.end(), [](ShardRole r) { return r == ShardRole::whole; }))
      return false;
    shard(g, split, rank);
    retype(m, ctx.binding);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_tensor_parallel_pass() { return std::make_unique<TensorParallelPass>(); }

}  // namespace pf
