// The pass manager and passes through the API.
#include <gtest/gtest.h>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/cost_summary.h"
#include "passes/pass.h"
#include "passes/pipeline.h"

namespace pf {
namespace {

constexpr const char* kModel = R"(dim B = 2
dim C = 4

func @layer(%x: f32[B,C]) -> f32[B,C] {
  %w = param init=xavier : f32[C,C]
  %y = matmul %x, %w : f32[B,C]
  %z = relu %y : f32[B,C]
  return %z
}

graph @g(%x: f32[B,C]) -> f32[B,C] {
  %h = call @layer(%x) scope="blk" repeat=3 : f32[B,C]
  return %h
}
)";

struct Loaded {
  Module m;
  PassContext ctx;
};

Loaded load(const char* text) {
  Loaded l{parse_module_text("m.pf", text), {}};
  l.ctx.binding = l.m.binding();
  verify_module(l.m, l.ctx.binding);
  return l;
}

TEST(PassManager, ReportsWhichPassesChangedTheModule) {
  Loaded l = load(kModel);
  auto changed = run_passes(l.m, {"inline", "dce", "cse", "inline"}, l.ctx);
  EXPECT_EQ(changed, std::vector<std::string>{"inline"});
}

TEST(PassManager, TellsAfterEachPassWhetherItChangedTheModule) {
  // The same pass twice: only the callback tells its two runs apart.
  Loaded l = load(kModel);
  std::vector<std::string> seen;
  PassRunOptions options;
  options.after_each = [&](std::string_view pass, bool changed) {
    seen.push_back(std::string(pass) + (changed ? ": changed" : ": no change"));
  };
  run_passes(l.m, {"inline", "inline", "shape"}, l.ctx, options);
  EXPECT_EQ(seen, (std::vector<std::string>{"inline: changed", "inline: no change", "shape: changed"}));
}

TEST(PassManager, UnknownPassIsAnErrorBeforeAnyPassRuns) {
  Loaded l = load(kModel);
  std::string before = print_module(l.m);
  try {
    run_passes(l.m, {"inline", "fold"}, l.ctx);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "unknown pass 'fold'; known passes: autodiff, cost, cse, dce, decode-step, expert-parallel, fuse-attention, fuse-swiglu, inline, shape, split-backward, tensor-parallel");
  }
  EXPECT_EQ(print_module(l.m), before);
}

TEST(Pipeline, AStageDifferentiatesTheResultsItNames) {
  // kModel's graph returns an activation, as a pipeline's first stage does:
  // no loss, so only as a stage that names the result it sends.
  Loaded l = load(kModel);
  EXPECT_EQ(run_pipeline(l.m, PassPipeline::model, l.ctx), (std::vector<std::string>{"inline", "shape"}));
  Module model = l.m;
  try {
    run_pipeline(model, PassPipeline::stage, l.ctx);
    FAIL();
  } catch (const Error& e) {
    EXPECT_TRUE(e.message().starts_with("@g has no scalar loss")) << e.message();
  }
  l.ctx.outputs = {0};
  EXPECT_EQ(run_pipeline(l.m, PassPipeline::zero_bubble_stage, l.ctx),
            (std::vector<std::string>{"autodiff", "split-backward"}));
  ASSERT_TRUE(l.ctx.gradients && l.ctx.split);
  EXPECT_EQ(l.ctx.gradients->seeds, std::vector<std::string>{"h.grad"});
  EXPECT_EQ(l.ctx.gradients->params, (std::vector<std::string>{"blk.0.w", "blk.1.w", "blk.2.w"}));
  EXPECT_EQ(l.ctx.split->weight, "g.backward_weight");
  // Again on its own output: nothing changes, and the results are the same.
  const std::vector<std::string> stash = l.ctx.gradients->stash;
  l.ctx.gradients.reset();
  EXPECT_EQ(run_pipeline(l.m, PassPipeline::zero_bubble_stage, l.ctx), std::vector<std::string>{});
  ASSERT_TRUE(l.ctx.gradients);
  EXPECT_EQ(l.ctx.gradients->stash, stash);
}

TEST(Inline, RepeatedCallsGetScopedNamesAndLayers) {
  Loaded l = load(kModel);
  run_passes(l.m, {"inline"}, l.ctx);
  ASSERT_EQ(l.m.functions.size(), 1u);
  const Function& g = l.m.graph();
  ASSERT_EQ(g.ops.size(), 9u);
  EXPECT_EQ(g.values[g.ops[0].results[0]].name, "blk.0.w");
  EXPECT_EQ(g.ops[0].layer(), "blk.0");
  EXPECT_EQ(g.values[g.ops[2].results[0]].name, "blk.0");  // the chained value takes the scope's name
  EXPECT_EQ(g.values[g.ops[6].results[0]].name, "blk.2.w");
  EXPECT_EQ(g.values[g.ops[8].results[0]].name, "h");      // the call's own result keeps its name
  EXPECT_EQ(g.ops[8].layer(), "blk.2");
}

TEST(Cost, SumsPerLayer) {
  Loaded l = load(kModel);
  run_passes(l.m, {"inline"}, l.ctx);
  ModelCost cost = summarize_cost(l.m.graph(), l.ctx.binding);
  ASSERT_EQ(cost.layers.size(), 3u);
  EXPECT_EQ(cost.layers[1].layer, "blk.1");
  EXPECT_EQ(cost.layers[1].params, 16);
  EXPECT_EQ(cost.layers[1].flops, 2 * 2 * 4 * 4 + 2 * 4);  // matmul + relu
  EXPECT_EQ(cost.total.params, 48);
  EXPECT_EQ(cost.batch, 2);
}

TEST(Dce, RemovesUnusedChainsButNotReturnedValues) {
  Loaded l = load("graph @g(%x: f32[2]) -> f32[2] {\n  %a = exp %x : f32[2]\n  %b = log %a : f32[2]\n"
                  "  %w = param init=ones : f32[2]\n  %c = relu %x : f32[2]\n  return %c\n}\n");
  EXPECT_EQ(run_passes(l.m, {"dce"}, l.ctx), std::vector<std::string>{"dce"});
  EXPECT_EQ(print_module(l.m), "graph @g(%x: f32[2]) -> f32[2] {\n  %c = relu %x : f32[2]\n  return %c\n}\n");
}

TEST(Cse, MergesPureOpsButNeverParameters) {
  Loaded l = load("graph @g(%x: f32[2]) -> (f32[2], f32[2], f32[2], f32[2]) {\n  %a = exp %x : f32[2]\n"
                  "  %b = exp %x : f32[2]\n  %p = param init=ones : f32[2]\n  %q = param init=ones : f32[2]\n"
                  "  return %a, %b, %p, %q\n}\n");
  run_passes(l.m, {"cse"}, l.ctx);
  EXPECT_EQ(print_module(l.m),
            "graph @g(%x: f32[2]) -> (f32[2], f32[2], f32[2], f32[2]) {\n  %a = exp %x : f32[2]\n"
            "  %p = param init=ones : f32[2]\n  %q = param init=ones : f32[2]\n  return %a, %a, %p, %q\n}\n");
}

}  // namespace
}  // namespace pf
