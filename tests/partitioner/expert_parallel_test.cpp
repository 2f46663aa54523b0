// Expert parallelism in the cost model: a layer of 4 experts shared out
// over 2 replicas, against hand numbers.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/expert_parallel.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/stage_cost.h"

namespace pf {
namespace {

// 6 tokens of 4 features a replica, each to 2 of 4 experts of width 8.
constexpr const char* kLayer = R"(
graph @moe_layer(%in: f32[6,4]) -> f32[] {
  %scale = param init=ones : f32[4]
  %x = mul %in, %scale : f32[6,4]
  %router.w = param init=xavier : f32[4,4]
  %router = matmul %x, %router.w : f32[6,4]
  %route = moe_route %router top_k=2 : i32[4,6]
  %gates = moe_gates %router, %route top_k=2 : f32[4,6]
  %slots = moe_dispatch %x, %route : f32[4,6,4]
  %w1 = param init=xavier : f32[4,4,8]
  %h = moe_matmul %slots, %w1, %route : f32[4,6,8]
  %a = gelu %h : f32[4,6,8]
  %w2 = param init=xavier : f32[4,8,4]
  %y = moe_matmul %a, %w2, %route : f32[4,6,4]
  %moe = moe_combine %y, %route, %gates tokens=6 : f32[6,4]
  %out = add %x, %moe : f32[6,4]
  %loss = reduce_mean %out axes=[0,1] : f32[]
  return %loss
}
)";

TEST(ExpertParallel, PricesOneReplicaOfTheExperts) {
  Module m = parse_module_text("layer", kLayer);
  const DimBinding b;
  verify_module(m, b);
  const Function& g = m.graph();
  std::map<std::string, int> at;
  for (size_t i = 0; i < g.ops.size(); ++i) at[g.values[g.ops[i].results[0]].name] = static_cast<int>(i);
  auto timer = [](const Function&, const Op&, const OpCost&) { return OpTiming{1.0, 2.0}; };
  const CostGraph whole = build_cost_graph(g, b, timer);
  CostGraph cg = whole;
  const TensorParallelSplit split = apply_expert_parallel(cg, g, ExpertParallel{2, {1e9, 0}, 4});
  // Each expert weight holds its 2 of 4 experts, its replica's own; the
  // router's weight is every replica's, all-reduced.
  const CostNode& h = cg.nodes[at.at("h")];
  EXPECT_EQ(h.param_bytes, 4 * 4 * 8 * 4 / 2);
  EXPECT_EQ(h.own_param_bytes, 4 * 4 * 8 * 4 / 2);
  EXPECT_EQ(cg.nodes[at.at("y")].own_param_bytes, 4 * 8 * 4 * 4 / 2);
  EXPECT_EQ(cg.nodes[at.at("router")].param_bytes, 4 * 4 * 4);
  EXPECT_EQ(cg.nodes[at.at("router")].own_param_bytes, 0);
  // A ring all-gather over 2 replicas moves half of the whole once: the 12
  // rows of 4 floats (192 B) at 1 GB/s, 96 ns. The route gathers the
  // logits (the gates read the same) and their gradient is reduce-scattered;
  // the dispatch gathers the tokens, the combine reduce-scatters its sums,
  // each again in the backward.
  for (const char* name : {"route", "slots", "moe"}) {
    EXPECT_DOUBLE_EQ(cg.nodes[at.at(name)].forward_s, 1.0 + 96e-9) << name;
    EXPECT_DOUBLE_EQ(cg.nodes[at.at(name)].backward_s, 2.0 + 96e-9) << name;
  }
  for (const char* name : {"gates", "h", "a", "y", "out"}) {
    EXPECT_EQ(cg.nodes[at.at(name)].forward_s, 1.0) << name;
    EXPECT_EQ(cg.nodes[at.at(name)].backward_s, 2.0) << name;
  }
  // The all-reduce of the gradients leaves the experts out: with one group
  // no other replica holds the same block.
  PartitionOptions po;
  po.data_parallel = 2;
  po.expert_parallel = 2;
  po.microbatches = 1;
  po.replica_link = {1e9, 0};
  const StageCosts costs(cg, po);
  const int n = static_cast<int>(g.ops.size());
  EXPECT_DOUBLE_EQ(costs.sync_s(0, n), ring_all_reduce_s(4 * 4 + 4 * 4 * 4, 2, {1e9, 0}));
  // Four replicas in two groups: the rest over all four, each block over the two holding it.
  po.data_parallel = 4;
  po.expert_parallel = 2;
  const StageCosts groups(cg, po);
  EXPECT_DOUBLE_EQ(groups.sync_s(0, n), ring_all_reduce_s(4 * 4 + 4 * 4 * 4, 4, {1e9, 0}) +
                                            ring_all_reduce_s((4 * 4 * 8 + 4 * 8 * 4) * 4 / 2, 2, {1e9, 0}));
  // AdamW's state sharded over the four replicas: a quarter of the rest's
  // two copies, half of each block's (the two replicas holding it share it).
  // The rest: the scale (16 B) and the router (64 B); the blocks 2 x 256 B.
  po.optimizer_state_factor = 2.0 / 4;
  po.own_optimizer_state_factor = 2.0 / 2;
  const StageCosts sharded(cg, po);
  StageSlot weights_only;
  weights_only.inflight = 0;
  EXPECT_EQ(sharded.own_memory(weights_only, 0, n), 2 * (80 + 512) + 80 * 2 / 4 + 512 * 2 / 2);
  // The experts' region stays within a stage: no cut from the route to the combine.
  const std::vector<int> cuts = cuts_between_shares(g, split, {});
  for (const char* inside : {"gates", "slots", "h", "a", "y", "moe"})
    EXPECT_EQ(std::count(cuts.begin(), cuts.end(), at.at(inside)), 0) << inside;
  EXPECT_EQ(std::count(cuts.begin(), cuts.end(), at.at("out")), 1);
  // One replica changes nothing.
  CostGraph same = whole;
  apply_expert_parallel(same, g, ExpertParallel{1, {1e9, 0}, 4});
  for (size_t i = 0; i < same.nodes.size(); ++i) EXPECT_EQ(same.nodes[i].param_bytes, whole.nodes[i].param_bytes);
}

}  // namespace
}  // namespace pf
