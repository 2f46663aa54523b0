// The mixture-of-experts kernels on routes no moe_route of the same top_k writes: each stops with a message
// naming the token, the slot or the expert, instead of reading out of bounds or weighing the wrong experts. And
// a block of the experts (a rank's, under tensor parallelism) routed and weighed alone: their part of the whole.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"

namespace pf::cpu {
namespace {

// `attrs` with {name: v}, one dim.
OpAttrs with_dim(OpAttrs attrs, std::string_view name, int64_t v) {
  OpAttrs::Entry e;
  e.name = name;
  e.kind = AttrKind::dim;
  e.ints = {v};
  attrs.add(e);
  return attrs;
}

OpAttrs dim(std::string_view name, int64_t v) { return with_dim({}, name, v); }

OpAttrs top_k(int64_t k) { return dim("top_k", k); }
OpAttrs tokens(int64_t n) { return dim("tokens", n); }

// Runs `op` on f32 `logits` [3, 4] (token n prefers experts 0, 1, 2, 3 in
// that order) and `route` [4, 2], returning the error's message ("" when
// it ran).
std::string error_of(OpKind op, std::vector<int32_t> route, const OpAttrs& attrs) {
  const std::vector<float> logits = {4, 3, 2, 1, 4, 3, 2, 1, 4, 3, 2, 1};
  const std::vector<float> rows(3 * 4 * 2, 1.0f);
  std::vector<float> out(4 * 2 * 4);
  std::vector<TensorType> in_types = {{DType::f32, {3, 4}}, {DType::i32, {4, 2}}};
  std::vector<const void*> in = {logits.data(), route.data()};
  if (op == OpKind::moe_gates_grad) {
    in_types.insert(in_types.begin(), TensorType{DType::f32, {4, 2}});
    in.insert(in.begin(), rows.data());
  }
  if (op == OpKind::moe_combine) {
    in_types[0] = {DType::f32, {4, 2, 3}};
    in[0] = rows.data();
  }
  const std::vector<TensorType> out_types = {op_info(op).shape(ShapeContext{op_name(op), in_types, attrs, {}})};
  const std::vector<void*> out_ptrs = {out.data()};
  try {
    forward_kernel(op, DType::f32)(KernelArgs{in_types, in, out_types, out_ptrs, attrs});
  } catch (const Error& e) {
    return e.message();
  }
  return "";
}

TEST(MoeKernels, GatesOfARouteFromAnotherTopKStop) {
  // Token 0's third choice (expert 2) in a top-2 gate.
  const std::vector<int32_t> route = {0, -1, 1, -1, 0, -1, -1, -1};
  EXPECT_EQ(error_of(OpKind::moe_gates, route, top_k(2)),
            "moe_gates: token 0 is routed to expert 2, which is not among its top 2: give moe_gates the top_k of the "
            "moe_route that made the route");
  EXPECT_EQ(error_of(OpKind::moe_gates_grad, route, top_k(2)),
            "moe_gates_grad: token 0 is routed to expert 2, which is not among its top 2: give moe_gates_grad the "
            "top_k of the moe_route that made the route");
  EXPECT_EQ(error_of(OpKind::moe_gates, route, top_k(3)), "");
}

TEST(MoeKernels, RoutesNamingNoTokenStop) {
  EXPECT_EQ(error_of(OpKind::moe_gates, {0, 3, -1, -1, -1, -1, -1, -1}, top_k(2)),
            "moe_gates: slot 1 of the route holds token 3, outside [-1, 3)");
  EXPECT_EQ(error_of(OpKind::moe_combine, {0, -2, -1, -1, -1, -1, -1, -1}, tokens(3)),
            "moe_combine: slot 1 of the route holds token -2, outside [-1, 3)");
  EXPECT_EQ(error_of(OpKind::moe_combine, {1, 1, -1, -1, -1, -1, -1, -1}, tokens(3)),
            "moe_combine: token 1 is in two slots of expert 0 (0 and 1)");
}

// Runs `op` in float64 (the route i32) and returns its result's elements as T.
template <class T>
std::vector<T> run(OpKind op, const std::vector<TensorType>& in_types, const std::vector<const void*>& in,
                   const OpAttrs& attrs) {
  const std::vector<TensorType> out_types = {op_info(op).shape(ShapeContext{op_name(op), in_types, attrs, {}})};
  std::vector<T> out(static_cast<size_t>(out_types[0].numel()));
  const std::vector<void*> out_ptrs = {out.data()};
  forward_kernel(op, DType::f64)(KernelArgs{in_types, in, out_types, out_ptrs, attrs});
  return out;
}

// How a route drops: never (every token has a slot), or with 0.7 of the
// fair share of slots, the first choices first or the likeliest.
enum class Drops { none, by_position, by_probability };

// The attributes of a route of the top `k` experts per token.
OpAttrs routing(int64_t k, Drops drops, double factor = 0.7) {
  OpAttrs attrs = top_k(k);
  if (drops == Drops::none) return attrs;
  OpAttrs::Entry capacity;
  capacity.name = "capacity_factor";
  capacity.kind = AttrKind::real;
  capacity.real = factor;
  attrs.add(capacity);
  if (drops == Drops::by_probability) {
    OpAttrs::Entry drop;
    drop.name = "drop";
    drop.kind = AttrKind::string;
    drop.string = "probs";
    attrs.add(drop);
  }
  return attrs;
}

// The same for experts [first, first + held) only.
OpAttrs block(int64_t first, int64_t held, Drops drops) {
  return with_dim(with_dim(routing(2, drops), "first_expert", first), "experts", held);
}

// One slot per expert, and two tokens choosing expert 0 first: by position
// the first token keeps it, by probability the one that chose it with 0.88
// (logits 2 and 0) against 0.55 (0.2 and 0).
TEST(MoeKernels, ByProbabilityAnExpertKeepsItsLikeliestTokens) {
  const std::vector<double> logits = {0.2, 0, 2, 0, -1, 1};
  const TensorType logits_type{DType::f64, {3, 2}};
  // ceil(0.66 x 3 tokens x 1 choice / 2 experts) = 1 slot each.
  EXPECT_EQ(run<int32_t>(OpKind::moe_route, {logits_type}, {logits.data()}, routing(1, Drops::by_position, 0.66)),
            (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(run<int32_t>(OpKind::moe_route, {logits_type}, {logits.data()}, routing(1, Drops::by_probability, 0.66)),
            (std::vector<int32_t>{1, 2}));
}

// A rank's route is its experts' rows of the whole route (the slots each
// expert fills depend on its own choices alone, drops included), its gates
// the whole gates' rows, and the gates' gradients of the blocks, each from
// its rows of the gradient, sum to the whole one.
TEST(MoeKernels, ABlockOfTheExpertsIsTheirPartOfTheWhole) {
  constexpr int64_t kTokens = 9, kExperts = 5;
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> logits(kTokens * kExperts);
  for (double& x : logits) x = normal(rng);
  const TensorType logits_type{DType::f64, {kTokens, kExperts}};
  for (const Drops drops : {Drops::none, Drops::by_position, Drops::by_probability}) {
    SCOPED_TRACE(drops == Drops::none ? "dropless" : drops == Drops::by_position ? "by position" : "by probability");
    const bool capacity = drops != Drops::none;
    const OpAttrs all = routing(2, drops);
    const std::vector<int32_t> route = run<int32_t>(OpKind::moe_route, {logits_type}, {logits.data()}, all);
    const int64_t slots = static_cast<int64_t>(route.size()) / kExperts;
    EXPECT_EQ(slots, capacity ? 3 : kTokens);  // ceil(0.7 x 9 x 2 / 5) = 3
    const TensorType route_type{DType::i32, {kExperts, slots}}, gates_type{DType::f64, {kExperts, slots}};
    const std::vector<double> gates =
        run<double>(OpKind::moe_gates, {logits_type, route_type}, {logits.data(), route.data()}, all);
    std::vector<double> g(gates.size());
    for (double& x : g) x = normal(rng);
    const std::vector<double> dlogits = run<double>(
        OpKind::moe_gates_grad, {gates_type, logits_type, route_type}, {g.data(), logits.data(), route.data()}, all);
    std::vector<double> summed(dlogits.size(), 0.0);
    for (const auto& [first, held] : {std::pair<int64_t, int64_t>{0, 2}, {2, 3}}) {
      const OpAttrs part = block(first, held, drops);
      const std::vector<int32_t> rows = run<int32_t>(OpKind::moe_route, {logits_type}, {logits.data()}, part);
      EXPECT_EQ(rows, std::vector<int32_t>(route.begin() + first * slots, route.begin() + (first + held) * slots));
      const TensorType rows_type{DType::i32, {held, slots}}, part_gates_type{DType::f64, {held, slots}};
      const std::vector<double> part_gates =
          run<double>(OpKind::moe_gates, {logits_type, rows_type}, {logits.data(), rows.data()}, part);
      EXPECT_EQ(part_gates,
                std::vector<double>(gates.begin() + first * slots, gates.begin() + (first + held) * slots));
      const std::vector<double> part_dlogits =
          run<double>(OpKind::moe_gates_grad, {part_gates_type, logits_type, rows_type},
                      {g.data() + first * slots, logits.data(), rows.data()}, part);
      for (size_t i = 0; i < summed.size(); ++i) summed[i] += part_dlogits[i];
    }
    for (size_t i = 0; i < summed.size(); ++i) EXPECT_NEAR(summed[i], dlogits[i], 1e-15) << i;
  }
}

}  // namespace
}  // namespace pf::cpu
