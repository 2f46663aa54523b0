// Which op chains the CUDA executor fuses into one masked-softmax kernel (host only: runs without a GPU).
#include "backends/cuda/softmax_fusion.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/verified_module.h"

namespace pf::cuda {
namespace {

std::vector<std::string> names(const Function& f, const std::vector<ValueId>& values) {
  std::vector<std::string> out;
  for (ValueId v : values) out.push_back(f.values[v].name);
  return out;
}

// The attention scores of examples/gpt.pf, at small sizes; `tail` finishes the graph.
std::string scores_graph(const std::string& mask_type, const std::string& axis, const std::string& tail,
                         const std::string& results = "f32[2,3,4,4]") {
  return R"(
graph @attn(%s: f32[2,3,4,4], %scale: f32[]) -> )" +
         results + R"( {
  %scaled = mul %s, %scale : f32[2,3,4,4]
  %mask = causal_mask : )" +
         mask_type + R"(
  %minus_inf = constant value=-inf : f32[]
  %masked = where %mask, %scaled, %minus_inf : f32[2,3,4,4]
  %probs = softmax %masked axis=)" +
         axis + R"( : f32[2,3,4,4]
)" + tail + "}\n";
}

TEST(SoftmaxFusion, FindsTheScaledMaskedSoftmax) {
  const Module m = verified_module(scores_graph("bool[4,4]", "-1", "  return %probs\n"));
  const Function& f = m.graph();
  const std::vector<SoftmaxChain> chains = find_softmax_chains(f, m.binding());
  ASSERT_EQ(chains.size(), 1u);
  EXPECT_FALSE(chains[0].gradient);
  EXPECT_EQ(chains[0].ops, (std::vector<int>{0, 3, 4}));
  EXPECT_EQ(names(f, chains[0].operands), (std::vector<std::string>{"s", "scale", "mask", "minus_inf"}));
  EXPECT_EQ(f.values[chains[0].result].name, "probs");
  EXPECT_EQ(names(f, chains[0].intermediates), (std::vector<std::string>{"scaled", "masked"}));
}

TEST(SoftmaxFusion, FindsTheGradientChain) {
  const Module m = verified_module(R"(
graph @attn_grad(%g: f32[2,3,4,4], %y: f32[2,3,4,4], %scale: f32[]) -> f32[2,3,4,4] {
  %d = softmax_grad %g, %y axis=-1 : f32[2,3,4,4]
  %mask = causal_mask : bool[4,4]
  %zero = constant value=0 : f32[]
  %masked = where %mask, %d, %zero : f32[2,3,4,4]
  %dx = mul %scale, %masked : f32[2,3,4,4]
  return %dx
}
)");
  const Function& f = m.graph();
  const std::vector<SoftmaxChain> chains = find_softmax_chains(f, m.binding());
  ASSERT_EQ(chains.size(), 1u);
  EXPECT_TRUE(chains[0].gradient);
  EXPECT_EQ(chains[0].ops, (std::vector<int>{0, 3, 4}));
  EXPECT_EQ(names(f, chains[0].operands), (std::vector<std::string>{"g", "y", "mask", "zero", "scale"}));
  EXPECT_EQ(f.values[chains[0].result].name, "dx");
  EXPECT_EQ(names(f, chains[0].intermediates), (std::vector<std::string>{"d", "masked"}));
}

TEST(SoftmaxFusion, LeavesChainsWhoseValuesAreNeededElsewhere) {
  // An intermediate that is returned (as a stash would be) or read twice must be computed.
  const Module returned = verified_module(
      scores_graph("bool[4,4]", "-1", "  return %probs, %masked\n", "(f32[2,3,4,4], f32[2,3,4,4])"));
  EXPECT_TRUE(find_softmax_chains(returned.graph(), returned.binding()).empty());
  const Module twice = verified_module(
      scores_graph("bool[4,4]", "-1", "  %both = add %probs, %scaled : f32[2,3,4,4]\n  return %both\n"));
  EXPECT_TRUE(find_softmax_chains(twice.graph(), twice.binding()).empty());
}

TEST(SoftmaxFusion, LeavesOtherAxesAndMasks) {
  const Module middle = verified_module(scores_graph("bool[4,4]", "2", "  return %probs\n"));
  EXPECT_TRUE(find_softmax_chains(middle.graph(), middle.binding()).empty());
  // Broadcast along a size-1 axis is not "the trailing dimensions": the kernel indexes the mask by whole rows.
  const Module column = verified_module(R"(
graph @attn(%s: f32[2,3,4,4], %scale: f32[], %mask: bool[4,1]) -> f32[2,3,4,4] {
  %scaled = mul %s, %scale : f32[2,3,4,4]
  %minus_inf = constant value=-inf : f32[]
  %masked = where %mask, %scaled, %minus_inf : f32[2,3,4,4]
  %probs = softmax %masked axis=-1 : f32[2,3,4,4]
  return %probs
}
)");
  EXPECT_TRUE(find_softmax_chains(column.graph(), column.binding()).empty());
}

}  // namespace
}  // namespace pf::cuda
