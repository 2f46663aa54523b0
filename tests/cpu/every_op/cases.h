// The cases of the forward-kernel tests, per op, built by op family and joined in one list.
#pragma once

#include <vector>

#include "ir/op_table.h"
#include "tests/cpu/every_op/harness.h"

namespace pf::cpu::every_op {

// The cases, per op. Shapes are small but chosen to reach every path of the
// kernels: broadcasting of each kind, transposes, batch dims, keepdims, groups,
// padding, ignore_index, tails longer than a vector register.

struct OpCase {
  OpKind op;
  Case c;
};

// Every case, built once.
const std::vector<OpCase>& cases();

// The routes of one router that the mixture-of-experts cases build, read again by moe_gates_grad's cases.
struct MoeRoutes {
  Tensor router, dropless, dropping, switched;
};

// The families, each appending its cases to `cs`. They draw their inputs from
// one stream `g` in a fixed order (all_cases), so that every case keeps its inputs.
void add_elementwise_cases(std::vector<OpCase>& cs, Gen& g);
MoeRoutes add_attention_and_moe_cases(std::vector<OpCase>& cs, Gen& g);
void add_structured_cases(std::vector<OpCase>& cs, Gen& g);
void add_backward_cases(std::vector<OpCase>& cs, Gen& g, const MoeRoutes& routes);

}  // namespace pf::cpu::every_op
