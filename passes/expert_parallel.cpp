// expert-parallel: one replica's program of a graph whose experts the
// data-parallel replicas of its stage share out (expert parallelism as
// Megatron-LM and DeepSpeed-MoE run it over data-parallel ranks, with the
// all-gather dispatcher). Each replica holds a block of every layer's
// experts and routes every replica's tokens to them: its router's logits and
// its tokens go to all replicas through ep_all_gather, its route fills the
// slots of its own experts only (their rows of the route of all the
// replicas' tokens), and its combine, a partial sum of every token's output,
// goes through ep_reduce_scatter, which sums the replicas' parts and keeps
// the replica's own tokens. Everything else (attention, the router, the
// load-balancing loss) runs on the replica's own tokens, as data
// parallelism does. The capacity of a route that drops counts the tokens of
// every replica. The replicas here are one group of them: where there are
// more, each group shares the experts out alike. Autodiff, run after it,
// derives the replica's backward.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "ir/param_piece.h"
#include "ir/verifier.h"
#include "passes/pass.h"
#include "passes/rewrite.h"
#include "passes/shard_rewrite.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

namespace {

class ReplicaRewrite {
 public:
  ReplicaRewrite(Function& g, const TensorParallelLayout& split, int rank)
      : g_(g), split_(split), rank_(rank), fresh_name_(g) {}

  void run() {
    for (size_t i = 0; i < g_.ops.size(); ++i) rewrite(g_.ops[i], split_.ops[i]);
    g_.ops = std::move(ops_);
    compact_values(g_);
  }

 private:
  void rewrite(Op op, ShardRole role) {
    switch (role) {
      case ShardRole::experts: {
        // The route of every replica's tokens, its rows for the replica's experts.
        const int64_t experts = g_.type_of(op.operands[0]).shape[1];
        op.operands[0] = gathered(op.operands[0], op);
        const int64_t first = part_begin(experts, split_.degree, rank_);
        op.set_attr("first_expert", Attr::of_dim(DimExpr(first)));
        op.set_attr("experts", Attr::of_dim(DimExpr(part_begin(experts, split_.degree, rank_ + 1) - first)));
        break;
      }
      case ShardRole::column:  // moe_gates and moe_dispatch, over every replica's logits and tokens
        if (op.kind == OpKind::moe_gates) {
          const int64_t experts = g_.type_of(op.operands[0]).shape[1];
          op.set_attr("first_expert", Attr::of_dim(DimExpr(part_begin(experts, split_.degree, rank_))));
        }
        op.operands[0] = gathered(op.operands[0], op);
        break;
      case ShardRole::row: {  // moe_combine: the replica's part of every token's sum
        const ValueId y = op.results[0];
        const int64_t tokens = g_.type_of(y).shape[0] * split_.degree;
        attr_of(op, "tokens") = Attr::of_dim(DimExpr(tokens));
        const ValueId partial = g_.add_value(fresh_name_(g_.values[y].name + ".partial"), op.loc);
        op.results[0] = partial;
        ops_.push_back(op);
        ops_.push_back(token_share_op(OpKind::ep_reduce_scatter, partial, y, op, 0, tokens, rank_, split_.degree));
        return;
      }
      case ShardRole::whole:
        if (op.kind == OpKind::param && split_.values[op.results[0]].sharded())
          cut_parameter(g_, op, split_.values[op.results[0]], split_.degree, rank_, fresh_name_, "ep");
        break;
      case ShardRole::sharded:  // over the slots of the replica's experts: retyped below
        break;
      case ShardRole::tokens:
        throw Error("expert-parallel: sequence parallelism is not expert parallelism's", op.loc);
    }
    ops_.push_back(std::move(op));
  }

  /// Every replica's rows of `x` ([tokens, ...], the replica's own), one
  /// replica after the other, made once for all of its readers.
  ValueId gathered(ValueId x, const Op& reader) {
    auto [at, fresh] = gathers_.try_emplace(x, -1);
    if (fresh) {
      const TensorType own = g_.type_of(x);  // adding a value below moves the types
      if (own.rank() != 2)
        throw Error(fmt::format("expert-parallel: %{} = {} reads %{} as {}; the replicas hand tokens on as "
                                "[tokens, features]",
                                g_.values[reader.results[0]].name, op_name(reader.kind), g_.values[x].name,
                                own.str()),
                    reader.loc);
      at->second = g_.add_value(fresh_name_(g_.values[x].name + ".all"), reader.loc);
      ops_.push_back(token_share_op(OpKind::ep_all_gather, x, at->second, reader, 0, own.shape[0] * split_.degree,
                                    rank_, split_.degree));
    }
    return at->second;
  }

  Function& g_;
  const TensorParallelLayout& split_;
  const int rank_;
  FreshNames fresh_name_;
  std::vector<Op> ops_;
  std::map<ValueId, ValueId> gathers_;  // a replica's value -> every replica's
};

class ExpertParallelPass final : public Pass {
 public:
  std::string_view name() const override { return "expert-parallel"; }
  std::string_view summary() const override {
    return "share a mixture of experts out over data-parallel replicas (one replica's program)";
  }

  bool run(Module& m, PassContext& ctx) override {
    const int degree = ctx.expert_parallel, rank = ctx.expert_parallel_rank;
    if (!writes_rank_program(m, ctx.binding, name(), degree, rank, "replica {} is not one of {}")) return false;
    Function& g = m.graph();
    const TensorParallelLayout split = expert_parallel_layout(g, degree);
    if (std::none_of(split.ops.begin(), split.ops.end(), [](ShardRole r) { return r == ShardRole::experts; }))
      return false;
    ReplicaRewrite(g, split, rank).run();
    retype(m, ctx.binding);
    return true;
  }
};

}  // namespace

std::unique_ptr<Pass> make_expert_parallel_pass() { return std::make_unique<ExpertParallelPass>(); }

}  // namespace pf
