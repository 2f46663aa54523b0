// The mixture-of-experts kernels on routes no moe_route of the same top_k writes: each stops with a message
// naming the token, the slot or the expert, instead of reading out of bounds or weighing the wrong experts.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"

namespace pf::cpu {
namespace {

// The attributes {name: v}, one dim.
OpAttrs dim(std::string_view name, int64_t v) {
  OpAttrs attrs;
  OpAttrs::Entry e;
  e.name = name;
  e.kind = AttrKind::dim;
  e.ints = {v};
  attrs.add(e);
  return attrs;
}

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

}  // namespace
}  // namespace pf::cpu
