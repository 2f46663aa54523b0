// The list of every case of the forward-kernel tests: each op family's cases, in a fixed order.
#include "tests/cpu/every_op/cases.h"

namespace pf::cpu::every_op {
namespace {

std::vector<OpCase> all_cases() {
  std::vector<OpCase> cs;
  Gen g(20240607);
  add_elementwise_cases(cs, g);
  const MoeRoutes routes = add_attention_and_moe_cases(cs, g);
  add_structured_cases(cs, g);
  add_backward_cases(cs, g, routes);
  return cs;
}

}  // namespace

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> all = all_cases();
  return all;
}

}  // namespace pf::cpu::every_op
