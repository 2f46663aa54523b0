// tensor-parallel: one rank's program of a graph split over a group of ranks
// as Megatron-LM splits a transformer (tensor_parallel_layout). The rank
// declares its block of every parameter the split cuts; a column-parallel
// product reads its input through tp_copy (whose gradient sums the ranks'
// partial input gradients), a row-parallel product's partial sum goes
// through tp_reduce, and the reshapes and splits between them are resized
// to the rank's share. Under sequence parallelism the sum is reduce-scattered
// over the tokens instead, the ops after it run on the rank's part, and the
// next column product reads it through tp_all_gather. A mixture of experts
// routes each rank's tokens to its block of the experts, whose weights it
// holds, and sums its part of the combine over the group. Autodiff, run
// after it, derives the rank's backward.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <set>

#include "ir/param_piece.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/rewrite.h"
#include "passes/shard_rewrite.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

namespace {

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

/// What the rewrite of one rank's program keeps track of: the ops it has
/// written, and the values it has already copied, gathered or cut, which
/// later readers share.
class RankRewrite {
 public:
  RankRewrite(Function& g, const TensorParallelLayout& split, int rank, const std::vector<std::string>& in_parts)
      : g_(g), split_(split), rank_(rank), fresh_name_(g) {
    for (const std::string& name : in_parts) in_parts_.insert(g.find_value(name));
  }

  void run() {
    for (size_t i = 0; i < g_.ops.size(); ++i) rewrite(g_.ops[i], split_.ops[i]);
    // A result handed on in parts leaves as the rank's part, the rest whole.
    for (size_t k = 0; k < g_.returns.size(); ++k) {
      ValueId& r = g_.returns[k];
      if (in_parts_.count(r)) {
        g_.result_types[k] = SymType::from(token_part_type(g_.type_of(r), split_.degree, rank_));
        if (!split_.tokens[r]) r = sent_part(r);
      } else if (split_.tokens[r]) {
        r = gathered(r, g_.ops.back());
      }
    }
    for (size_t k = 0; k < g_.args.size(); ++k) {
      const ValueId a = g_.args[k];
      if (!in_parts_.count(a)) continue;
      g_.values[a].type = token_part_type(g_.type_of(a), split_.degree, rank_);
      g_.arg_types[k] = SymType::from(*g_.values[a].type);
    }
    g_.ops = std::move(ops_);
    compact_values(g_);
  }

 private:
  void rewrite(Op op, ShardRole role) {
    // An op outside the token regions reads their parts gathered.
    if (role != ShardRole::tokens && role != ShardRole::column)
      for (ValueId& u : op.operands)
        if (split_.tokens[u]) u = gathered(u, op);
    switch (role) {
      case ShardRole::column: {
        if (op.kind == OpKind::moe_gates) op.set_attr("first_expert", Attr::of_dim(DimExpr(first_expert(op))));
        ValueId& x = op.operands[0];
        x = split_.tokens[x] ? once(all_gathers_, x, op, OpKind::tp_all_gather, ".tp")
                             : once(copies_, x, op, OpKind::tp_copy, ".tp");
        break;
      }
      case ShardRole::experts: {
        // The route's rows for the rank's block of the experts.
        const int64_t experts = g_.type_of(op.operands[0]).shape[1];
        const int64_t first = first_expert(op);
        op.set_attr("first_expert", Attr::of_dim(DimExpr(first)));
        op.set_attr("experts", Attr::of_dim(DimExpr(part_begin(experts, split_.degree, rank_ + 1) - first)));
        break;
      }
      case ShardRole::row: {
        if (op.kind == OpKind::embedding) {
          // The rank's rows of the table: the ids it holds, zeros for the rest.
          const int64_t rows = g_.type_of(op.operands[0]).shape[0];
          op.set_attr("offset", Attr::of_dim(DimExpr(part_begin(rows, split_.degree, rank_))));
          op.set_attr("vocab", Attr::of_dim(DimExpr(rows)));
        }
        // The partial product takes a new name; the sum keeps the product's.
        const ValueId y = op.results[0];
        const ValueId partial = g_.add_value(fresh_name_(g_.values[y].name + ".partial"), op.loc);
        op.results[0] = partial;
        ops_.push_back(op);
        ops_.push_back(split_.tokens[y] ? token_op(OpKind::tp_reduce_scatter, partial, y, op, g_.type_of(y))
                                        : meeting_op(OpKind::tp_reduce, partial, y, op));
        return;
      }
      case ShardRole::tokens: {
        const TensorType& y = g_.type_of(op.results[0]);
        for (ValueId& u : op.operands) {
          if (split_.tokens[u]) continue;
          const TensorType& t = g_.type_of(u);
          if (spans_tokens(t, y))
            u = once(parts_, u, op, OpKind::tp_scatter, ".part");  // the rank's tokens of a whole value
          else if (is_float(t.dtype))
            u = once(copies_, u, op, OpKind::tp_copy, ".tp");  // broadcast over the tokens: its gradient summed
        }
        break;
      }
      case ShardRole::sharded:
        if (op.kind == OpKind::attention || op.kind == OpKind::matmul)
          for (size_t k = 1; k < op.operands.size(); ++k)
            if (!split_.values[op.operands[k]].sharded())  // a key or value head every rank's queries share
              op.operands[k] = once(copies_, op.operands[k], op, OpKind::tp_copy, ".tp");
        if (op.kind == OpKind::cross_entropy) {
          cross_entropy_over_classes(g_, op, split_.degree, rank_, fresh_name_, ops_);
          return;
        }
        resize(g_, op, split_);
        break;
      case ShardRole::whole:
        if (op.kind == OpKind::param && split_.values[op.results[0]].sharded())
          cut_parameter(g_, op, split_.values[op.results[0]], split_.degree, rank_, fresh_name_, "tp");
        break;
    }
    ops_.push_back(std::move(op));
  }

  /// The first of the rank's experts, for an op reading the router's logits
  /// [tokens, experts] as operand 0.
  int64_t first_expert(const Op& op) const {
    return part_begin(g_.type_of(op.operands[0]).shape[1], split_.degree, rank_);
  }

  /// An op of `kind` that moves the rank's part of the tokens of `whole`
  /// (the whole operand's or result's type) from `in` to `out`.
  Op token_op(OpKind kind, ValueId in, ValueId out, const Op& like, const TensorType& whole) const {
    const int axis = token_axis(whole.rank());
    return token_share_op(kind, in, out, like, axis, whole.shape[static_cast<size_t>(axis)], rank_, split_.degree);
  }

  /// `x` as `kind` hands it on, made once for all of its readers.
  ValueId once(std::map<ValueId, ValueId>& made, ValueId x, const Op& reader, OpKind kind, const char* suffix) {
    auto [at, fresh] = made.try_emplace(x, -1);
    if (fresh) {
      at->second = g_.add_value(fresh_name_(g_.values[x].name + suffix), reader.loc);
      // x's type is the whole one still: the rank's types come when the rewrite is done.
      ops_.push_back(kind == OpKind::tp_copy ? meeting_op(kind, x, at->second, reader)
                                             : token_op(kind, x, at->second, reader, g_.type_of(x)));
    }
    return at->second;
  }

  /// The rank's part of a whole result the stage sends in parts: the part
  /// takes the result's name, the whole becomes <name>.whole.
  ValueId sent_part(ValueId whole) {
    const std::string name = g_.values[whole].name;
    if (g_.values[whole].def_op < 0)  // stages read the model's inputs themselves and pass on only what they receive
      throw Error(fmt::format("tensor-parallel: %{} arrives whole and would leave in parts", name));
    const ValueId part = once(parts_, whole, g_.ops.back(), OpKind::tp_scatter, ".part");
    g_.values[whole].name = fresh_name_(name + ".whole");
    g_.values[part].name = name;
    return part;
  }

  /// A part of the tokens gathered whole for a reader outside the token
  /// regions: the whole takes the value's name, the part becomes <name>.part,
  /// unless the part is what the stage receives or sends (the whole is
  /// <name>.whole then).
  ValueId gathered(ValueId part, const Op& reader) {
    auto [at, fresh] = gathers_.try_emplace(part, -1);
    if (fresh) {
      std::string name = g_.values[part].name;
      if (in_parts_.count(part)) {
        name = fresh_name_(name + ".whole");
      } else {
        g_.values[part].name = fresh_name_(name + ".part");
      }
      at->second = g_.add_value(std::move(name), reader.loc);
      ops_.push_back(token_op(OpKind::tp_gather, part, at->second, reader, g_.type_of(part)));
    }
    return at->second;
  }

  Function& g_;
  const TensorParallelLayout& split_;
  const int rank_;
  FreshNames fresh_name_;
  std::vector<Op> ops_;
  std::map<ValueId, ValueId> copies_;       // a whole value -> its tp_copy
  std::map<ValueId, ValueId> all_gathers_;  // a part of the tokens -> gathered for column products
  std::map<ValueId, ValueId> gathers_;      // a part of the tokens -> gathered whole for other readers
  std::map<ValueId, ValueId> parts_;        // a whole value -> the rank's part of its tokens
  std::set<ValueId> in_parts_;              // arguments and results handed between stages in parts
};

class TensorParallelPass final : public Pass {
 public:
  std::string_view name() const override { return "tensor-parallel"; }
  std::string_view summary() const override {
    return "split products over a tensor-parallel group as Megatron-LM does (one rank's program)";
  }

  bool run(Module& m, PassContext& ctx) override {
    const int degree = ctx.tensor_parallel, rank = ctx.tensor_parallel_rank;
    if (!writes_rank_program(m, ctx.binding, name(), degree, rank, "rank {} is not one of a group of {}"))
      return false;
    Function& g = m.graph();
    if (!ctx.hand_offs_in_parts.empty() && !ctx.sequence_parallel)
      throw Error("tensor-parallel: stages hand values on in parts only under sequence parallelism");
    const TensorParallelLayout split = tensor_parallel_layout(g, degree, -1, ctx.tensor_parallel_whole,
                                                              ctx.sequence_parallel, ctx.hand_offs_in_parts);
    if (std::all_of(split.ops.begin(), split.ops.end(), [](ShardRole r) { return r == ShardRole::whole; }) &&
        ctx.hand_offs_in_parts.empty())
      return false;
    RankRewrite(g, split, rank, ctx.hand_offs_in_parts).run();
    retype(m, ctx.binding);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_tensor_parallel_pass() { return std::make_unique<TensorParallelPass>(); }

}  // namespace pf
