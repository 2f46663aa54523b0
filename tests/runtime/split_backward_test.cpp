// The backward of a pipeline stage split into an input-gradient part and a
// weight-gradient part: every op of the backward runs in exactly one of them,
// the input part computes no parameter gradient, and the weight part none of
// what the previous stage waits for.
#include <gtest/gtest.h>

#include <map>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/stage_split.h"
#include "passes/pass.h"
#include "passes/split_backward.h"

namespace pf {
namespace {

struct Differentiated {
  Module module;
  GradientProgram gradients;
  BackwardSplit split;
};

// The tiny GPT in three stages, stage `s` differentiated as the pipeline does.
Differentiated stage_of_gpt(int s) {
  Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/gpt.pf"));
  DimBinding b = m.binding({{"B", 2}, {"T", 4}, {"S", 4}, {"C", 8}, {"H", 2}, {"L", 3}, {"V", 13}});
  PassContext ctx{b};
  verify_module(m, b, VerifyOptions{true});
  run_passes(m, {"inline", "shape"}, ctx);
  CostGraph cg = build_cost_graph(m.graph(), b, [](const Function&, const Op&, const OpCost&) { return OpTiming{}; });
  const auto& c = cg.cut_candidates;
  std::vector<StageModule> stages = split_into_stages(m, {c[c.size() / 3], c[2 * c.size() / 3]}, {});
  StageModule& st = stages.at(static_cast<size_t>(s));
  const AutodiffOptions ad = stage_autodiff_options(st);
  Differentiated d{std::move(st.module), {}, {}};
  d.gradients = differentiate(d.module, b, ad);
  d.split = split_backward(d.module, d.gradients, b);
  return d;
}

// Op kinds and how often they occur, without the declarations that both parts
// may repeat.
std::map<OpKind, int> op_counts(const Function& f) {
  std::map<OpKind, int> counts;
  for (const Op& op : f.ops)
    if (op.kind != OpKind::param && op.kind != OpKind::constant) counts[op.kind] += 1;
  return counts;
}

TEST(SplitBackward, EveryOpRunsInExactlyOnePart) {
  for (int s : {0, 1, 2}) {
    SCOPED_TRACE(testing::Message() << "stage " << s);
    Differentiated d = stage_of_gpt(s);
    const Function& whole = *d.module.find_function(d.gradients.backward);
    const Function& input = *d.module.find_function(d.split.input);
    const Function& weight = *d.module.find_function(d.split.weight);
    std::map<OpKind, int> both = op_counts(input);
    for (const auto& [kind, n] : op_counts(weight)) both[kind] += n;
    EXPECT_EQ(both, op_counts(whole));
    EXPECT_EQ(input.returns.size(), d.gradients.input_grads.size() + d.split.deferred.size());
    EXPECT_EQ(weight.returns.size(), d.gradients.params.size());
    EXPECT_EQ(weight.args.size(), whole.args.size() + d.split.deferred.size());
  }
}

TEST(SplitBackward, TheWeightPartComputesEveryParameterGradient) {
  Differentiated d = stage_of_gpt(1);
  ASSERT_FALSE(d.gradients.input_grads.empty());
  const Function& whole = *d.module.find_function(d.gradients.backward);
  const Function& input = *d.module.find_function(d.split.input);
  const Function& weight = *d.module.find_function(d.split.weight);
  // Each parameter gradient is made by an op of the weight part, except
  // those that an op of the input part makes along with what the input part
  // needs (layernorm_grad returns the input's gradient and the gain's and
  // bias's together): they are handed over finished.
  int handed_over = 0;
  for (size_t i = 0; i < weight.returns.size(); ++i) {
    const std::string& name = weight.values[weight.returns[i]].name;
    ValueId in_whole = whole.returns[d.gradients.input_grads.size() + i];
    EXPECT_EQ(name, whole.values[in_whole].name);
    if (weight.values[weight.returns[i]].def_op >= 0) {
      EXPECT_EQ(input.find_value(name), -1) << name;
    } else {
      handed_over += 1;
      EXPECT_EQ(whole.ops[static_cast<size_t>(whole.values[in_whole].def_op)].kind, OpKind::layernorm_grad) << name;
    }
  }
  EXPECT_LT(handed_over, static_cast<int>(weight.returns.size()) / 2);
  // The weight part's GEMMs: one per weight matrix (the tied embedding's
  // output projection too); the rest of the backward's stay in the input part.
  auto matmuls = [](const Function& f) {
    int n = 0;
    for (const Op& op : f.ops) n += op.kind == OpKind::matmul;
    return n;
  };
  EXPECT_GT(matmuls(weight), 0);
  EXPECT_GT(matmuls(input), 0);
  EXPECT_FALSE(d.split.deferred.empty());
}

TEST(SplitBackward, TheFirstStageSendsNothingBackSoItsInputPartIsEmpty) {
  Differentiated d = stage_of_gpt(0);
  EXPECT_TRUE(d.gradients.input_grads.empty());
  const Function& input = *d.module.find_function(d.split.input);
  EXPECT_TRUE(input.ops.empty());
  EXPECT_TRUE(input.returns.empty());
  EXPECT_TRUE(d.split.deferred.empty());
}

TEST(SplitBackward, ErrorsNameTheMissingFunction) {
  Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/mlp.pf"));
  GradientProgram g;
  g.backward = "mlp.backward";
  try {
    split_backward(m, g, m.binding());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "split-backward: the module has no backward function @mlp.backward");
  }
}

}  // namespace
}  // namespace pf
