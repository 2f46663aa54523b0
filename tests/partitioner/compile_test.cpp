// Compiling real models: GPT-2 small balances over 4 devices, and every
// stage program of a plan verifies and agrees with its tables.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>

#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/product_split.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

Module example(const char* name) {
  return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/" + name));
}

// An example compiled for two CPU devices with its dimensions overridden.
CompileResult on_two_cpus(const char* file, const DimBinding& overrides, const std::string& cuts) {
  Module m = example(file);
  DimBinding b = m.binding(overrides);
  CompileOptions o;
  o.devices = "cpu:2";
  o.cuts = cuts;
  return compile_plan(std::move(m), b, file, o);
}

// With the attention fused, a block's forward is 129 GFLOP per batch of 8
// and the tied head's 636: the head alone is more than a quarter of the
// work, so no cut into 4 stages comes within 5% of perfect balance. The DP
// gives the head a stage of its own and the twelve blocks three of four;
// priced at its kernel's rate, attention makes a block stage (not the head)
// the slowest, by under 2%.
TEST(Compile, Gpt2SmallOnFourDevicesGivesTheHeadAStageOfItsOwn) {
  Module m = example("gpt.pf");
  DimBinding b = m.binding();
  CompileOptions o;
  o.devices = "cpu:4";
  o.microbatches = 8;
  CompileResult r = compile_plan(std::move(m), b, "gpt.pf", o);
  ASSERT_EQ(r.plan.stages.size(), 4u);
  EXPECT_LT(r.chosen.imbalance_pct, 12.0);
  EXPECT_EQ(r.plan.stages.back().layers, std::vector<std::string>{"head"});
  double slowest = 0;
  for (const StagePlan& s : r.chosen.stages) slowest = std::max(slowest, s.time_s);
  EXPECT_DOUBLE_EQ(r.chosen.period_s, slowest);
  EXPECT_LT(r.chosen.stages.back().time_s, slowest);
  EXPECT_GT(r.chosen.stages.back().time_s, 0.98 * slowest);
  // The DP never loses to a baseline that fits.
  for (const PartitionResult* base : {&r.equal_layers, &r.equal_params})
    if (base->fits_memory) {
      EXPECT_LE(r.chosen.period_s, base->period_s * (1 + 1e-12));
    }
  // The tied embedding lives on the first and the last stage.
  const PlanParam& first = r.plan.stages.front().params.front();
  EXPECT_EQ(first.name, "wte");
  EXPECT_EQ(first.shared_with, std::vector<int>{3});
  // What compile writes, the runtime's loader accepts.
  Plan again = plan_from_json(plan_to_json(r.plan), "gpt_plan.json");
  EXPECT_EQ(again, r.plan);
}

TEST(CostGraph, ChargesOnlyTheGradientsABackwardComputes) {
  // Every op's full backward costs 6 s here. %scaled depends on no parameter
  // (no gradient at all); the first matmul computes its weight's gradient,
  // not its input's (half); the second both.
  Module m = parse_module_text("t.pf", R"(
graph @g(%x: f32[4,3], %t: i32[4]) -> f32[] {
  %two = constant value=2 : f32[]
  %scaled = mul %x, %two : f32[4,3]
  %w1 = param init=xavier : f32[3,5]
  %h = matmul %scaled, %w1 : f32[4,5]
  %w2 = param init=xavier : f32[5,2]
  %logits = matmul %h, %w2 : f32[4,2]
  %loss = cross_entropy %logits, %t : f32[]
  return %loss
}
)");
  verify_module(m, m.binding());
  CostGraph cg = build_cost_graph(m.graph(), m.binding(),
                                  [](const Function&, const Op&, const OpCost&) { return OpTiming{1.0, 6.0}; });
  std::map<std::string, double> backward;
  for (const CostNode& n : cg.nodes) backward[n.name] = n.backward_s;
  EXPECT_EQ(backward.at("scaled"), 0.0);
  EXPECT_EQ(backward.at("h"), 3.0);
  EXPECT_EQ(backward.at("logits"), 6.0);
  EXPECT_EQ(backward.at("loss"), 6.0);  // the targets are integers: no share of their own
}

TEST(CostGraph, CutsInsideLayersNeverRightAfterASourceAndParametersAreChargedToTheirReader) {
  // Parameters declared up front (as an imported model has them): their
  // bytes belong to the op that reads them, and no cut falls right after
  // one (it would separate nothing).
  Module m = parse_module_text("t.pf", R"(
graph @g(%x: f32[4,3], %t: i32[4]) -> f32[] {
  %w1 = param init=xavier layer="a" : f32[3,5]
  %w2 = param init=xavier layer="b" : f32[5,2]
  %h = matmul %x, %w1 layer="a" : f32[4,5]
  %r = relu %h layer="a" : f32[4,5]
  %logits = matmul %r, %w2 layer="b" : f32[4,2]
  %loss = cross_entropy %logits, %t layer="b" : f32[]
  return %loss
}
)");
  verify_module(m, m.binding());
  const Function& g = m.graph();
  EXPECT_EQ(cut_candidates(g, CutPoints::layers), (std::vector<int>{1, 2, 4}));
  EXPECT_EQ(cut_candidates(g, CutPoints::any), (std::vector<int>{3, 4, 5}));
  CostGraphOptions any;
  any.cuts = CutPoints::any;
  CostGraph cg =
      build_cost_graph(g, m.binding(), [](const Function&, const Op&, const OpCost&) { return OpTiming{}; }, any);
  EXPECT_EQ(cg.cut_candidates, (std::vector<int>{3, 4, 5}));
  std::map<std::string, int64_t> params;
  for (const CostNode& n : cg.nodes) params[n.name] = n.param_bytes;
  EXPECT_EQ(params.at("w1"), 0);
  EXPECT_EQ(params.at("w2"), 0);
  EXPECT_EQ(params.at("h"), 3 * 5 * 4);
  EXPECT_EQ(params.at("logits"), 5 * 2 * 4);
}

TEST(CostGraph, StashesWhatTheBackwardReadsInTheDtypeTheStagesStore) {
  Module m = parse_module_text("t.pf", R"(
graph @g(%x: f32[4,3], %t: i32[4]) -> f32[] {
  %w1 = param init=xavier : f32[3,5]
  %h = matmul %x, %w1 : f32[4,5]
  %r = relu %h : f32[4,5]
  %w2 = param init=xavier : f32[5,2]
  %logits = matmul %r, %w2 : f32[4,2]
  %loss = cross_entropy %logits, %t : f32[]
  return %loss
}
)");
  verify_module(m, m.binding());
  auto none = [](const Function&, const Op&, const OpCost&) { return OpTiming{}; };
  auto stash_of = [&](const CostGraphOptions& o) {
    std::map<std::string, int64_t> stash;
    for (const CostNode& n : build_cost_graph(m.graph(), m.binding(), none, o).nodes) stash[n.name] = n.stash_bytes;
    return stash;
  };
  // Unknown: every activation.
  EXPECT_EQ(stash_of({}), (std::map<std::string, int64_t>{
                              {"w1", 0}, {"h", 80}, {"r", 80}, {"w2", 0}, {"logits", 32}, {"loss", 4}}));
  // Autodiff keeps what the rules read: relu's output (its own mask and the
  // second product's input) and the logits; not %h, not the loss.
  CostGraphOptions known;
  known.stashed = backward_reads(m, m.binding()).stashed;
  EXPECT_EQ(stash_of(known), (std::map<std::string, int64_t>{
                                 {"w1", 0}, {"h", 0}, {"r", 80}, {"w2", 0}, {"logits", 32}, {"loss", 0}}));
  known.float_activation_bytes = 2;  // stored in bf16
  EXPECT_EQ(stash_of(known).at("r"), 40);
}

TEST(CostGraph, AttentionsLseIsStashedInF32UnderBf16) {
  Module m = parse_module_text("t.pf", R"(
graph @g(%q: f32[2,4,8]) -> f32[2,4,8] {
  %o, %lse = attention %q, %q, %q causal=true : f32[2,4,8], f32[2,4]
  return %o
}
)");
  verify_module(m, m.binding());
  CostGraphOptions bf16;
  bf16.float_activation_bytes = 2;
  const CostGraph cg = build_cost_graph(
      m.graph(), m.binding(), [](const Function&, const Op&, const OpCost&) { return OpTiming{}; }, bf16);
  ASSERT_EQ(cg.nodes.size(), 1u);
  EXPECT_EQ(cg.nodes[0].stash_bytes, 2 * 4 * 8 * 2 + 2 * 4 * 4);  // o in bf16, lse in f32
}

TEST(Compile, CutsInsideALayerWhenThatBalancesTheStages) {
  // The 4-block GPT's best split at layer boundaries leaves the halves 17 %
  // apart; inside a block the compiler finds a split within 5 %, keeps
  // every stage's program valid, and says which it chose.
  auto compile = [](const std::string& cuts) {
    return on_two_cpus("gpt.pf", {{"B", 8}, {"L", 4}, {"C", 512}, {"H", 8}, {"T", 128}, {"S", 128}, {"V", 8192}}, cuts);
  };
  CompileResult layers = compile("layers"), any = compile("auto");
  EXPECT_EQ(layers.cuts, "layers");
  EXPECT_GT(layers.chosen.imbalance_pct, 15.0);
  EXPECT_EQ(any.cuts, "any");
  EXPECT_LT(any.chosen.imbalance_pct, 5.0);
  EXPECT_LT(any.chosen.period_s, (1 - kSubLayerGain) * layers.chosen.period_s);
  // The cut layer is the last of stage 0 and the first of stage 1.
  EXPECT_EQ(any.plan.stages[0].layers.back(), any.plan.stages[1].layers.front());
  Plan again = plan_from_json(plan_to_json(any.plan), "gpt_plan.json");
  EXPECT_EQ(again, any.plan);
  EXPECT_EQ(any.layer_cuts_period_s, layers.chosen.period_s);
  // Splitting the block's first MLP product between the stages evens them
  // further, by less than auto asks of a product split.
  CompileResult products = compile("products");
  EXPECT_EQ(products.cuts, "products");
  EXPECT_LT(products.chosen.imbalance_pct, 1.0);
  EXPECT_GT(products.chosen.period_s, (1 - kProductGain) * any.chosen.period_s);
}

TEST(Compile, SplitsAProductBetweenStagesWhenWholeOpsLeaveThemUneven) {
  // 784 -> 4096 -> 4096 -> 4096 -> 10 on two stages: between ops the best
  // split leaves the halves 9 % apart (a 4096 x 4096 product is 30 % of the
  // work); giving stage 1 the last rows of fc.0's weight evens them.
  CompileResult any = on_two_cpus("mlp.pf", {{"B", 256}}, "any");
  CompileResult products = on_two_cpus("mlp.pf", {{"B", 256}}, "auto");
  EXPECT_EQ(any.cuts, "any");
  EXPECT_GT(any.chosen.imbalance_pct, 4.0);
  EXPECT_EQ(products.cuts, "products");
  EXPECT_LT(products.chosen.imbalance_pct, 1.0);
  EXPECT_LT(products.chosen.period_s, (1 - kProductGain) * any.chosen.period_s);
  // Rows [0, k) on stage 0 and [k, 4096) on stage 1, k a multiple of 32.
  std::vector<std::pair<int, ParamPiece>> pieces;
  for (const PlanStage& s : products.plan.stages)
    for (const PlanParam& p : s.params)
      if (p.piece) pieces.emplace_back(s.index, *p.piece);
  ASSERT_EQ(pieces.size(), 2u);
  EXPECT_EQ(pieces[0].first, 0);
  EXPECT_EQ(pieces[1].first, 1);
  EXPECT_EQ(pieces[0].second.whole, "fc.0.w");
  EXPECT_EQ(pieces[0].second.begin, 0);
  EXPECT_EQ(pieces[0].second.end, pieces[1].second.begin);
  EXPECT_EQ(pieces[1].second.end, 4096);
  EXPECT_EQ(pieces[0].second.end % 32, 0);
  Plan again = plan_from_json(plan_to_json(products.plan), "mlp_plan.json");
  EXPECT_EQ(again, products.plan);
}

TEST(ProductSplit, RewritesOnlyAProductByAWeightOfItsOwn) {
  Module m = parse_module_text("t.pf", R"(
graph @g(%x: f32[4,6]) -> f32[] {
  %w = param init=xavier : f32[6,6]
  %t = param init=xavier : f32[6,6]
  %a = matmul %x, %w : f32[4,6]
  %b = matmul %a, %t : f32[4,6]
  %c = matmul %b, %t transpose_b=true : f32[4,6]
  %loss = reduce_sum %c axes=[0,1] : f32[]
  return %loss
}
)");
  const DimBinding b = m.binding();
  verify_module(m, b, VerifyOptions{true});
  Function& g = m.graph();
  const Function before = g;
  EXPECT_FALSE(split_product_rows(g, 3, 2));  // %t is read twice (a tied weight)
  EXPECT_FALSE(split_product_rows(g, 2, 0));  // no rows in the first piece
  EXPECT_FALSE(split_product_rows(g, 2, 6));  // all of them
  EXPECT_EQ(g.ops.size(), before.ops.size());
  ASSERT_TRUE(split_product_rows(g, 2, 2));
  verify_module(m, b, VerifyOptions{true});
  EXPECT_EQ(print_function(g), R"(graph @g(%x: f32[4,6]) -> f32[] {
  %t = param init=xavier : f32[6,6]
  %a.in_a, %a.in_b = split %x axis=1 sizes=[2,4] : f32[4,2], f32[4,4]
  %w_rows0_2 = param init=xavier piece_of="w" rows=[0,2] whole_rows=6 : f32[2,6]
  %a.part_a = matmul %a.in_a, %w_rows0_2 : f32[4,6]
  %w_rows2_6 = param init=xavier piece_of="w" rows=[2,6] whole_rows=6 : f32[4,6]
  %a.part_b = matmul %a.in_b, %w_rows2_6 : f32[4,6]
  %a = add %a.part_a, %a.part_b : f32[4,6]
  %b = matmul %a, %t : f32[4,6]
  %c = matmul %b, %t transpose_b=true : f32[4,6]
  %loss = reduce_sum %c axes=[0,1] : f32[]
  return %loss
}
)");
}

// Recomputing layers: each stage stashes less per micro-batch and its
// backward is priced with the forward it computes again; the plan's gradient
// tables say what is recomputed. An unknown choice is refused by name.
TEST(Compile, RecomputingLayersTradesStashForBackwardTime) {
  const DimBinding dims = {{"B", 8}, {"L", 4}, {"C", 64}, {"H", 4}, {"T", 32}, {"S", 32}, {"V", 128}};
  auto compiled = [&](const std::string& recompute) {
    Module m = example("gpt.pf");
    DimBinding b = m.binding(dims);
    CompileOptions o;
    o.devices = "cpu:2";
    o.cuts = "layers";
    o.split_layers = {3};  // embed, h.0, h.1 | h.2, h.3, head: the same stages either way
    o.recompute = recompute;
    return compile_plan(std::move(m), b, "gpt.pf", o).plan;
  };
  const Plan kept = compiled("none"), recomputed = compiled("layers");
  ASSERT_EQ(kept.stages.size(), 2u);
  ASSERT_EQ(recomputed.stages.size(), 2u);
  for (size_t s = 0; s < 2; ++s) {
    const PlanStage& k = kept.stages[s];
    const PlanStage& r = recomputed.stages[s];
    EXPECT_EQ(r.layers, k.layers);
    EXPECT_LT(r.predicted.stash_bytes, k.predicted.stash_bytes / 2) << "stage " << s;
    EXPECT_LT(r.gradients->stash.size(), k.gradients->stash.size()) << "stage " << s;
    EXPECT_TRUE(k.gradients->recomputed.empty());
    EXPECT_FALSE(r.gradients->recomputed.empty()) << "stage " << s;
    EXPECT_DOUBLE_EQ(r.predicted.forward_s, k.predicted.forward_s);
    // Every recomputed op's forward once more, at most the stage's whole forward.
    EXPECT_GT(r.predicted.backward_s, k.predicted.backward_s) << "stage " << s;
    EXPECT_LE(r.predicted.backward_s, k.predicted.backward_s + k.predicted.forward_s * (1 + 1e-9)) << "stage " << s;
  }
  // Selective: between the two, stash and backward alike.
  const Plan selective = compiled("selective");
  EXPECT_EQ(selective.recompute, "selective");
  EXPECT_EQ(recomputed.recompute, "layers");
  EXPECT_EQ(kept.recompute, "none");
  for (size_t s = 0; s < 2; ++s) {
    const PlanStage& k = kept.stages[s];
    const PlanStage& m = selective.stages[s];
    const PlanStage& r = recomputed.stages[s];
    EXPECT_LT(m.predicted.stash_bytes, k.predicted.stash_bytes) << "stage " << s;
    EXPECT_GT(m.predicted.stash_bytes, r.predicted.stash_bytes) << "stage " << s;
    EXPECT_GT(m.predicted.backward_s, k.predicted.backward_s) << "stage " << s;
    EXPECT_LT(m.predicted.backward_s, r.predicted.backward_s) << "stage " << s;
  }
  // MFU counts the model's FLOPs, not the repeat: the same FLOPs over a longer step.
  EXPECT_GT(recomputed.predicted.step_s, kept.predicted.step_s);
  EXPECT_NEAR(recomputed.predicted.mfu * recomputed.predicted.step_s, kept.predicted.mfu * kept.predicted.step_s,
              1e-9 * kept.predicted.mfu * kept.predicted.step_s);
  EXPECT_EQ(plan_from_json(plan_to_json(recomputed), "p.json"), recomputed);
  EXPECT_EQ(error_of([&] { compiled("all"); }), "unknown --recompute 'all'; use none, selective, layers or auto");
}

// The README tour's 4-block GPT on two CPU devices, 8 micro-batches.
CompileResult small_gpt_on_two_cpus(const std::string& schedule, const std::string& recompute, int64_t memory_limit) {
  Module m = example("gpt.pf");
  DimBinding b = m.binding({{"B", 16}, {"L", 4}, {"C", 128}, {"H", 4}, {"T", 64}, {"S", 64}, {"V", 256}});
  CompileOptions o;
  o.devices = "cpu:2";
  o.microbatches = 8;
  o.schedule = schedule;
  o.recompute = recompute;
  o.memory_limit = memory_limit;
  return compile_plan(std::move(m), b, "gpt.pf", o);
}

// auto stashes everything where that fits, and recomputes layers where
// only that fits; none says so in its error.
TEST(Compile, AutoRecomputesOnlyWhereNothingElseFits) {
  auto compiled = [](const std::string& recompute, int64_t memory_limit) {
    return small_gpt_on_two_cpus("1f1b", recompute, memory_limit);
  };
  const CompileResult roomy = compiled("auto", 0);
  EXPECT_EQ(roomy.recompute_reason, "");
  EXPECT_TRUE(roomy.plan.stages[0].gradients->recomputed.empty());
  const CompileResult tight = compiled("auto", int64_t{8} << 20);
  EXPECT_EQ(tight.recompute_reason, "the model needs at least 5 devices of 8.0 MiB, or 11.1 MiB per device with 2 "
                                    "devices");
  for (const PlanStage& s : tight.plan.stages) {
    EXPECT_FALSE(s.gradients->recomputed.empty()) << "stage " << s.index;
    EXPECT_LE(s.predicted.memory_bytes, int64_t{8} << 20) << "stage " << s.index;
  }
  EXPECT_EQ(error_of([&] { compiled("none", int64_t{8} << 20); }),
            "the model needs at least 5 devices of 8.0 MiB, or 11.1 MiB per device with 2 devices\nit fits with "
            "--recompute layers (each stage computes its layers' activations again in the backward instead of keeping "
            "them)");
}

// --schedule auto compiles 1f1b, zb1, zbv and dualpipev and keeps the
// shortest predicted step among those that fit (the first on a tie): the
// zero-bubble ones while memory allows their extra slots, 1f1b when only it
// fits; a schedule that cannot run the layout is listed with its reason.
TEST(Compile, AutoScheduleKeepsTheShortestPredictedStepThatFits) {
  auto compiled = [](const std::string& schedule, int64_t memory_limit) {
    return small_gpt_on_two_cpus(schedule, "none", memory_limit);
  };
  const CompileResult roomy = compiled("auto", 0);
  ASSERT_EQ(roomy.schedules.size(), 4u);
  const CompileResult::ScheduleCandidate* fastest = nullptr;
  for (const CompileResult::ScheduleCandidate& c : roomy.schedules) {
    SCOPED_TRACE(c.schedule);
    EXPECT_EQ(c.error, "");
    const CompileResult alone = compiled(c.schedule, 0);
    EXPECT_EQ(c.step_s, alone.plan.predicted.step_s);
    EXPECT_EQ(c.bubble, alone.plan.predicted.bubble_fraction);
    if (!fastest || c.step_s < fastest->step_s) fastest = &c;
  }
  EXPECT_EQ(roomy.schedules[0].schedule, "1f1b");
  EXPECT_EQ(roomy.plan.schedule, fastest->schedule);
  EXPECT_NE(roomy.plan.schedule, "1f1b");  // a zero-bubble schedule wins with room to spare
  // Exactly what 1F1B needs: the zero-bubble schedules hold more.
  const int64_t tight_limit = roomy.schedules[0].device_memory_bytes;
  const CompileResult tight = compiled("auto", tight_limit);
  EXPECT_EQ(tight.plan.schedule, "1f1b");
  for (size_t k = 1; k < tight.schedules.size(); ++k)
    EXPECT_TRUE(tight.schedules[k].error.starts_with("the model needs")) << tight.schedules[k].error;
  EXPECT_EQ(error_of([&] { compiled("auto", int64_t{1} << 20); }), error_of([&] { compiled("1f1b", int64_t{1} << 20); }));
  Module m = example("gpt.pf");
  const DimBinding b = m.binding({{"B", 16}, {"L", 4}, {"C", 128}, {"H", 4}, {"T", 64}, {"S", 64}, {"V", 256}});
  CompileOptions few;
  few.devices = "cpu:2";
  few.microbatches = 2;
  few.schedule = "auto";
  const CompileResult two = compile_plan(std::move(m), b, "gpt.pf", few);
  ASSERT_EQ(two.schedules.size(), 4u);
  EXPECT_EQ(two.schedules[3].schedule, "dualpipev");
  EXPECT_EQ(two.schedules[3].error, "dualpipev needs at least 2 micro-batches per device (4 on 2 devices), got 2");
  EXPECT_NE(two.plan.schedule, "dualpipev");
}

// With --extra-warmup, auto also tries 1f1b and zb1 with the forwards ahead,
// each right after its schedule, and keeps the shortest as before.
TEST(Compile, AutoScheduleTriesForwardsAheadWhenAsked) {
  Module m = example("gpt.pf");
  const DimBinding b = m.binding({{"B", 16}, {"L", 4}, {"C", 128}, {"H", 4}, {"T", 64}, {"S", 64}, {"V", 256}});
  auto compiled = [&](const std::string& schedule, int extra) {
    CompileOptions o;
    o.devices = "cpu:2";
    o.schedule = schedule;
    o.extra_warmup = extra;
    return compile_plan(m, b, "gpt.pf", o);
  };
  const CompileResult r = compiled("auto", 1);
  std::vector<std::string> names;
  for (const CompileResult::ScheduleCandidate& c : r.schedules) names.push_back(c.schedule);
  EXPECT_EQ(names, (std::vector<std::string>{"1f1b", "1f1b +1", "zb1", "zb1 +1", "zbv", "dualpipev"}));
  EXPECT_EQ(r.schedules[1].step_s, compiled("1f1b", 1).plan.predicted.step_s);
  EXPECT_EQ(r.schedules[3].step_s, compiled("zb1", 1).plan.predicted.step_s);
  // One more activation in flight on device 0.
  EXPECT_GT(r.schedules[1].device_memory_bytes, r.schedules[0].device_memory_bytes);
  for (const CompileResult::ScheduleCandidate& c : r.schedules)
    EXPECT_LE(r.schedules[r.chosen_schedule].step_s, c.step_s) << c.schedule;
  EXPECT_EQ(r.plan.predicted.step_s, r.schedules[r.chosen_schedule].step_s);
  EXPECT_EQ(error_of([&] { compiled("zbv", 1); }),
            "--extra-warmup runs forwards ahead in 1f1b or zb1, and the schedule is zbv: give --schedule 1f1b, zb1 or "
            "auto, or drop the flag");
}

TEST(Compile, ManualSplitIsOnlyPlaced) {
  Module m = example("mlp.pf");
  DimBinding b = m.binding({{"I", 32}, {"H", 64}, {"L", 4}, {"K", 10}, {"B", 16}});
  CompileOptions o;
  o.devices = "cpu:3";
  o.microbatches = 4;
  o.split_layers = {1, 5};  // fc_in | fc.0 .. fc.3 | fc_out
  CompileResult r = compile_plan(std::move(m), b, "mlp.pf", o);
  ASSERT_EQ(r.plan.stages.size(), 3u);
  EXPECT_EQ(r.plan.stages[0].layers, std::vector<std::string>{"fc_in"});
  EXPECT_EQ(r.plan.stages[2].layers, std::vector<std::string>{"fc_out"});
  EXPECT_EQ(r.chosen.method, "fixed");
}

// A schedule file's lists price each stage's memory by what they keep in
// flight: device 0 running three forwards before its first backward stashes
// one micro-batch more than under 1F1B (three against two), the cut and the
// last stage as they were.
TEST(Compile, AScheduleFilePricesTheMicroBatchesItsListsHold) {
  auto compiled = [](const std::string& schedule, const std::string& actions) {
    Module m = example("mlp.pf");
    DimBinding b = m.binding({{"I", 32}, {"H", 64}, {"L", 4}, {"K", 10}, {"B", 16}});
    CompileOptions o;
    o.devices = "cpu:2";
    o.microbatches = 4;
    o.split_layers = {3};
    o.schedule = schedule;
    o.schedule_actions = actions;
    return compile_plan(std::move(m), b, "mlp.pf", o).plan;
  };
  const Plan one_f_one_b = compiled("1f1b", "");
  const Plan eager = compiled("custom", "dev 0: F0 F1 F2 B0 F3 B1 B2 B3\ndev 1: F0 B0 F1 B1 F2 B2 F3 B3\n");
  const PlanStage::Prediction &base = one_f_one_b.stages[0].predicted, &more = eager.stages[0].predicted;
  ASSERT_GT(base.stash_bytes, 0);
  EXPECT_EQ(more.stash_bytes, base.stash_bytes);
  EXPECT_EQ(more.memory_bytes - base.memory_bytes, base.stash_bytes);
  EXPECT_EQ(eager.stages[1].predicted.memory_bytes, one_f_one_b.stages[1].predicted.memory_bytes);
  EXPECT_EQ(eager.stages[0].layers, one_f_one_b.stages[0].layers);
}

}  // namespace
}  // namespace pf
