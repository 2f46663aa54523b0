// Sequence parallelism over a tensor-parallel split: which of the values the
// split leaves whole each rank holds only its part of the tokens of. Parts
// grow forward from the row-parallel products' sums (and from what a stage
// receives in parts) through ops that compute each token from the same
// token of their operands.
#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"
#include "passes/tensor_parallel_layout.h"

namespace pf {

namespace {

/// A softmax's axis, counted from the front (the graph's shapes are in numbers).
int normalized_axis(const Op& op, int rank) {
  const Attr* a = op.attr("axis");
  const int64_t axis = a ? a->dim.constant() : -1;
  return static_cast<int>(axis < 0 ? axis + rank : axis);
}

/// Ops that compute each token from the same token of their operands, and
/// so run on a rank's part of the tokens as they do on the whole.
bool is_token_wise(const Op& op, int rank) {
  switch (op.kind) {
    case OpKind::layernorm:
    case OpKind::rmsnorm:
      return true;
    case OpKind::softmax:
    case OpKind::log_softmax:
      return normalized_axis(op, rank) == rank - 1;
    default:
      return is_elementwise(op.kind);
  }
}

}  // namespace

void split_tokens(const Function& g, TensorParallelLayout& layout, const std::vector<std::string>& in_parts) {
  const int degree = layout.degree;
  const auto users = g.users();
  std::vector<bool>& tokens = layout.tokens;
  tokens.assign(g.values.size(), false);
  auto rank_of = [&](ValueId v) { return g.type_of(v).rank(); };
  auto cuttable = [&](ValueId v) { return cuts_into_token_parts(g.type_of(v), degree); };
  std::vector<bool> sent_in_parts(g.values.size(), false);
  for (const std::string& name : in_parts) {
    const ValueId v = g.find_value(name);
    const bool arg = std::find(g.args.begin(), g.args.end(), v) != g.args.end();
    if (v < 0 || (!arg && std::find(g.returns.begin(), g.returns.end(), v) == g.returns.end()) || !cuttable(v))
      throw Error(fmt::format("%{} is neither an argument nor a result of @{} whose tokens {} ranks can share", name,
                              g.name, degree));
    if (arg) tokens[v] = true;
    sent_in_parts[v] = !arg;
  }
  // Where a part goes on to something other than a gather: a token-wise op,
  // a column product, or the next stage.
  auto worth_cutting = [&](ValueId v) {
    if (sent_in_parts[v]) return true;
    for (int u : users[v]) {
      const Op& user = g.ops[u];
      if (layout.ops[u] == ShardRole::column ||
          (layout.ops[u] == ShardRole::whole && is_token_wise(user, rank_of(user.results[0]))))
        return true;
    }
    return false;
  };
  for (size_t i = 0; i < g.ops.size(); ++i) {
    const Op& op = g.ops[i];
    if (op.results.size() != 1) continue;
    const ValueId y = op.results[0];
    if (layout.ops[i] == ShardRole::row) {
      tokens[y] = cuttable(y) && worth_cutting(y);
      continue;
    }
    if (layout.ops[i] != ShardRole::whole || !cuttable(y) || !is_token_wise(op, rank_of(y))) continue;
    bool any = false, fits = true;
    for (ValueId u : op.operands) {
      any = any || tokens[u];
      // Every operand that spans the tokens is cut alike (a mask would be cut too: it stays whole).
      fits = fits && (tokens[u] || !spans_tokens(g.type_of(u), g.type_of(y)) || is_float(g.type_of(u).dtype));
    }
    if (!any || !fits) continue;
    tokens[y] = true;
    layout.ops[i] = ShardRole::tokens;
  }
}

}  // namespace pf
