// One op as a graph of its own, as the profiler times it.
#include "profiler/op_alone.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "ir/printer.h"
#include "ir/verifier.h"
#include "tests/verified_module.h"

namespace pf {
namespace {

const char* kLayer = R"(
dim B = 4
dim I = 3
dim H = 5
graph @g(%x: f32[B,I], %y: f32[B,H]) -> f32[] {
  %w = param init=kaiming layer="fc" : f32[I,H]
  %mm = matmul %x, %w layer="fc" : f32[B,H]
  %z = mul %mm, %y : f32[B,H]
  %loss = reduce_sum %z axes=[0,1] : f32[]
  return %loss
}
)";

// The graph op_alone_module makes of the op of kLayer that makes %result, verified and printed.
std::string alone(const std::string& result) {
  const Module m = verified_module(kLayer);
  const Function& g = m.graph();
  for (const Op& op : g.ops)
    if (g.values[op.results[0]].name == result) {
      Module module = op_alone_module(g, op);
      verify_module(module, m.binding());
      return print_function(module.graph());
    }
  throw std::runtime_error("no op makes %" + result);
}

// A weight stays a parameter: the product reads it as a pipeline stage's
// does, which keeps it packed through a step.
TEST(OpAlone, KeepsAWeightAParameter) {
  EXPECT_EQ(alone("mm"),
            "graph @op(%x: f32[4,3]) -> f32[] {\n"
            "  %w = param init=kaiming : f32[I,H]\n"
            "  %mm = matmul %x, %w : f32[B,H]\n"
            "  %profile.loss = reduce_sum %mm axes=[0,1] : f32[]\n"
            "  return %profile.loss\n"
            "}\n");
}

// Activations, whoever made them, become arguments.
TEST(OpAlone, TakesActivationsAsArguments) {
  EXPECT_EQ(alone("z"),
            "graph @op(%mm: f32[4,5], %y: f32[4,5]) -> f32[] {\n"
            "  %z = mul %mm, %y : f32[B,H]\n"
            "  %profile.loss = reduce_sum %z axes=[0,1] : f32[]\n"
            "  return %profile.loss\n"
            "}\n");
}

}  // namespace
}  // namespace pf
