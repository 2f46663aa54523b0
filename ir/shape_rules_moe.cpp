// Shape rules of the mixture-of-experts ops. Tokens are rows: the router's
// logits are [N, E] (N tokens, E experts), an expert's slots hold up to
// `capacity` of them, and the route [E, capacity] names the token in each
// slot.
#include <fmt/format.h>

#include <cmath>

#include "ir/shape_rule_helpers.h"

namespace pf::rules {

namespace {

void require_logits(const TensorType& logits) {
  require_float(logits, "the router's logits");
  if (logits.rank() != 2)
    fail(fmt::format("the router's logits must be [tokens, experts], got {}: flatten the tokens first (reshape)",
                     logits.str()));
  if (logits.shape[1] < 1) fail(fmt::format("the router's logits {} name no expert", logits.str()));
}

int64_t require_top_k(const ShapeContext& ctx, int64_t experts) {
  const int64_t k = ctx.attrs.get_int("top_k", 1);
  if (k < 1 || k > experts)
    fail(fmt::format("top_k must be between 1 and the {} experts, got {}", experts, k));
  return k;
}

// A route whose rows are the slots of the experts from first_expert on (a
// rank's block under tensor parallelism; all of them by default) of the
// logits' `experts`.
void require_held_experts(const ShapeContext& ctx, const TensorType& route, int64_t experts) {
  const int64_t held = route.shape[0];
  if (!ctx.attrs.has("first_expert")) {
    if (held != experts)
      fail(fmt::format("the route {} is for {} experts, the logits for {}{}", route.str(), held, experts,
                       ctx.attrs.has("experts") ? ": name the first of them (first_expert)" : ""));
    return;
  }
  const int64_t first = ctx.attrs.get_int("first_expert", 0);
  if (first < 0 || first + held > experts)
    fail(fmt::format("experts {} to {} are not among the logits' {} (first_expert={}, {} experts held)", first,
                     first + held - 1, experts, first, held));
}

void require_gate_softmax(const ShapeContext& ctx, int64_t top_k) {
  if (top_k == 1 && moe_renormalize(ctx.attrs))
    fail("with top_k=1 a softmax over the chosen logit is 1 for every token, and the router would learn nothing: "
         "write renormalize=false (the softmax over every expert, as the Switch Transformer)");
}

}  // namespace

// moe_route: logits [N, E] -> i32 [E, capacity].
Types shape_moe_route(const ShapeContext& ctx) {
  const TensorType& logits = ctx.operands[0];
  require_logits(logits);
  require_top_k(ctx, logits.shape[1]);
  if (ctx.attrs.has("capacity_factor")) {
    const double factor = ctx.attrs.get_real("capacity_factor", 1.0);
    if (!(factor > 0) || !std::isfinite(factor))
      fail(fmt::format("capacity_factor must be a positive number, got {}", factor));
  }
  if (const std::string_view drop = ctx.attrs.get_string("drop", "position"); drop != "position" && drop != "probs")
    fail(fmt::format("drop must be \"position\" (the first choices first, in token order) or \"probs\" (the "
                     "highest router probabilities), got \"{}\"",
                     drop));
  const int64_t tokens = logits.shape[0], experts = logits.shape[1];
  const int64_t held = ctx.attrs.has("experts") ? ctx.attrs.get_int("experts", experts) : experts;
  if (held < 1) fail(fmt::format("experts must be at least 1, got {}", held));
  const TensorType route{DType::i32, {held, moe_capacity(ctx.attrs, tokens, experts)}};
  require_held_experts(ctx, route, experts);
  // A written capacity that disagrees is most likely a misread factor: say how the slots are counted.
  if (ctx.declared.size() == 1 && ctx.declared[0] != route) {
    if (!ctx.attrs.has("capacity_factor"))
      fail(fmt::format("the route is {}, not the {} written: without capacity_factor every expert has a slot for "
                       "each of the {} tokens",
                       route.str(), ctx.declared[0].str(), tokens));
    fail(fmt::format("the route is {}, not the {} written: {} slots per expert, capacity_factor x {} tokens x {} "
                     "choices / {} experts rounded up (at least 1, at most the tokens)",
                     route.str(), ctx.declared[0].str(), route.shape[1], tokens, ctx.attrs.get_int("top_k", 1),
                     experts));
  }
  return {route};
}

// moe_gates: logits [N, E], route [E, capacity] -> [E, capacity].
Types shape_moe_gates(const ShapeContext& ctx) {
  const TensorType &logits = ctx.operands[0], &route = ctx.operands[1];
  require_logits(logits);
  require_gate_softmax(ctx, require_top_k(ctx, logits.shape[1]));
  require_route(route, -1);
  require_held_experts(ctx, route, logits.shape[1]);
  return one(logits.dtype, route.shape);
}

// moe_dispatch: x [N, C], route [E, capacity] -> [E, capacity, C].
Types shape_moe_dispatch(const ShapeContext& ctx) {
  const TensorType &x = ctx.operands[0], &route = ctx.operands[1];
  require_float(x, "the tokens");
  if (x.rank() != 2) fail(fmt::format("the tokens must be [tokens, features], got {}", x.str()));
  require_route(route, -1);
  return one(x.dtype, bounded_shape({route.shape[0], route.shape[1], x.shape[1]}, "the result"));
}

// moe_combine: y [E, capacity, C], route [E, capacity] (, gates [E,
// capacity]) -> [tokens, C].
Types shape_moe_combine(const ShapeContext& ctx) {
  const TensorType &y = ctx.operands[0], &route = ctx.operands[1];
  require_float(y, "the experts' outputs");
  require_route(route, -1);
  if (y.rank() != 3 || y.shape[0] != route.shape[0] || y.shape[1] != route.shape[1])
    fail(fmt::format("the experts' outputs must be [{}, {}, features] as the route {}, got {}", route.shape[0],
                     route.shape[1], route.str(), y.str()));
  if (ctx.operands.size() == 3 && ctx.operands[2] != TensorType{y.dtype, route.shape})
    fail(fmt::format("the gates must be {} (one per slot), got {}", TensorType{y.dtype, route.shape}.str(),
                     ctx.operands[2].str()));
  const int64_t tokens = ctx.attrs.get_int("tokens", 0);
  if (tokens < 0) fail(fmt::format("tokens must not be negative, got {}", tokens));
  return one(y.dtype, bounded_shape({tokens, y.shape[2]}, "the result"));
}

// moe_load: logits [N, E] -> [E], the share of the tokens choosing each expert.
Types shape_moe_load(const ShapeContext& ctx) {
  const TensorType& logits = ctx.operands[0];
  require_logits(logits);
  require_top_k(ctx, logits.shape[1]);
  return one(logits.dtype, {logits.shape[1]});
}

// moe_matmul: a [E, capacity, K] x b [E, K, N] (or [E, N, K] under
// transpose_b) -> [E, capacity, N]; or, under transpose_a, a [E, capacity,
// M] and b [E, capacity, N] contracted over the slots -> [E, M, N] (a
// weight's gradient).
Types shape_moe_matmul(const ShapeContext& ctx) {
  const TensorType &a = ctx.operands[0], &b = ctx.operands[1], &route = ctx.operands[2];
  require_float(a, "a");
  require_same_dtype(a, b);
  require_route(route, -1);
  const int64_t experts = route.shape[0], capacity = route.shape[1];
  if (a.rank() != 3 || a.shape[0] != experts || a.shape[1] != capacity)
    fail(fmt::format("a must be [{}, {}, features] (an expert's slots, as the route {}), got {}", experts, capacity,
                     route.str(), a.str()));
  if (b.rank() != 3 || b.shape[0] != experts)
    fail(fmt::format("b must be [{}, ., .] (a matrix per expert, as the route {}), got {}", experts, route.str(),
                     b.str()));
  const bool ta = ctx.attrs.get_bool("transpose_a", false), tb = ctx.attrs.get_bool("transpose_b", false);
  if (ta) {
    if (tb || b.shape[1] != capacity)
      fail(fmt::format("under transpose_a the slots are summed over: b must be [{}, {}, features] without "
                       "transpose_b, got {}",
                       experts, capacity, b.str()));
    return one(a.dtype, bounded_shape({experts, a.shape[2], b.shape[2]}, "the result"));
  }
  const int64_t k = b.shape[tb ? 2 : 1], n = b.shape[tb ? 1 : 2];
  if (k != a.shape[2])
    fail(fmt::format("a {} and b {}{} do not multiply: {} features against {}", a.str(), b.str(),
                     tb ? " (transposed)" : "", a.shape[2], k));
  return one(a.dtype, bounded_shape({experts, capacity, n}, "the result"));
}

// moe_gates_grad: g [E, capacity], logits [N, E], route -> [N, E].
Types shape_moe_gates_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &logits = ctx.operands[1], &route = ctx.operands[2];
  require_logits(logits);
  require_gate_softmax(ctx, require_top_k(ctx, logits.shape[1]));
  require_route(route, -1);
  require_held_experts(ctx, route, logits.shape[1]);
  require_gradient_of(g, TensorType{logits.dtype, route.shape}, "the gates");
  return {logits};
}

}  // namespace pf::rules
