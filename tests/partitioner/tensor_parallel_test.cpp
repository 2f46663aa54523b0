// Tensor parallelism in the cost model: where Megatron's split shards a GPT
// and all-reduces, and what it does to a cost graph, against hand numbers.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/tensor_parallel.h"
#include "passes/pipeline.h"

namespace pf {
namespace {

/// GPT with one block of B=2, T=4, C=8 (b s h = 64 elements), inlined and typed.
Module tiny_gpt() {
  Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/gpt.pf"));
  DimBinding b = m.binding(parse_binding("B=2,T=4,S=4,C=8,H=2,L=1,V=16"));
  verify_module(m, b, VerifyOptions{true});
  PassContext ctx{b};
  run_pipeline(m, PassPipeline::model, ctx);
  return m;
}

std::map<std::string, int> op_index(const Function& g) {
  std::map<std::string, int> index;
  for (size_t i = 0; i < g.ops.size(); ++i) index[g.values[g.ops[i].results[0]].name] = static_cast<int>(i);
  return index;
}

TEST(TensorParallel, SplitsAGptBlockLikeMegatron) {
  Module m = tiny_gpt();
  const Function& g = m.graph();
  const TensorParallelSplit split = tensor_parallel_split(g, 2);
  auto sharded = [&](const char* name) { return static_cast<bool>(split.sharded[g.find_value(name)]); };
  // Column-parallel projections, attention by heads (one fused op reading
  // the heads in place, its output and lse), the MLP's inner width.
  for (const char* name : {"h.0.attn.c_attn.w", "h.0.attn.c_attn.b", "h.0.qkv", "h.0.q.flat", "h.0.q.heads",
                           "h.0.y.t", "h.0.y.heads.lse", "h.0.y", "h.0.mlp.c_fc.w", "h.0.mlp.c_fc.b", "h.0.act", "h.0.attn.c_proj.w",
                           "h.0.mlp.c_proj.w", "wte", "logits"})
    EXPECT_TRUE(sharded(name)) << name;
  // Whole on every GPU: norms, residual stream, row-parallel biases, the
  // position table (a slice, not a lookup), the lookups and the loss.
  for (const char* name : {"h.0.ln_1.w", "h.0.a", "h.0.attn.mm", "h.0.attn.c_proj.b", "h.0.attn.out", "h.0.x1",
                           "h.0.m", "h.0.mlp.out", "h", "wpe", "tok", "x", "xf", "loss"})
    EXPECT_FALSE(sharded(name)) << name;

  // Megatron's two all-reduces of the (b, s, h) activation each way per
  // block; the token lookups summed over the ranks holding the table's rows;
  // the vocabulary projection's input gradient summed in the backward; the
  // loss's maximum and parts per position (b s = 8 rows: 1 + 2 each).
  const std::map<std::string, int> at = op_index(g);
  std::map<std::string, int64_t> forward, backward;
  for (const auto& [name, i] : at) {
    if (split.forward_reduced[i] > 0) forward[name] = split.forward_reduced[i];
    if (split.backward_reduced[i] > 0) backward[name] = split.backward_reduced[i];
  }
  EXPECT_EQ(forward,
            (std::map<std::string, int64_t>{{"h.0.attn.mm", 64}, {"h.0.mlp.mm", 64}, {"tok", 64}, {"loss", 24}}));
  EXPECT_EQ(backward, (std::map<std::string, int64_t>{{"h.0.qkv.mm", 64}, {"h.0.fc.mm", 64}, {"logits", 64}}));
  EXPECT_TRUE(split.divided[at.at("h.0.y.t")]);
  EXPECT_FALSE(split.divided[at.at("h.0.a")]);  // a layer norm runs whole on each GPU
}

// Sequence parallelism: what the split left whole between the products
// (norms, residual stream, row-parallel sums and biases) is each GPU's part
// of the tokens; the gathers and reduce-scatters priced as all-reduces.
TEST(TensorParallel, SplitsTheTokensOfAGptBlockUnderSequenceParallelism) {
  Module m = tiny_gpt();
  const Function& g = m.graph();
  const TensorParallelSplit split = tensor_parallel_split(g, 2, -1, {}, true);
  auto tokens = [&](const char* name) { return static_cast<bool>(split.tokens[g.find_value(name)]); };
  for (const char* name : {"tok", "x", "h.0.a", "h.0.attn.mm", "h.0.attn.out", "h.0.x1", "h.0.m", "h.0.mlp.mm",
                           "h.0.mlp.out", "h", "xf"})
    EXPECT_TRUE(tokens(name)) << name;
  for (const char* name : {"wpe", "pos", "h.0.ln_1.w", "h.0.attn.c_proj.b", "h.0.qkv", "logits", "loss"})
    EXPECT_FALSE(tokens(name)) << name;
  // All-gathered or reduce-scattered (a ring's half of an all-reduce each):
  // forward, each row product's sum over the tokens and each column
  // product's input (64 elements each); backward, each column product's
  // input again and its gradient (2 x 64), each reduce-scatter's gradient
  // (64) and the position table's (4 x 8). All-reduced: the loss's parts as
  // before, and the norms' weights and biases (16 per norm, 8 per bias).
  const std::map<std::string, int> at = op_index(g);
  auto nonzero = [&](const std::vector<int64_t>& per_op) {
    std::map<std::string, int64_t> out;
    for (const auto& [name, i] : at)
      if (per_op[i] > 0) out[name] = per_op[i];
    return out;
  };
  EXPECT_EQ(nonzero(split.forward_gathered), (std::map<std::string, int64_t>{{"h.0.attn.mm", 64},
                                                                             {"h.0.mlp.mm", 64},
                                                                             {"tok", 64},
                                                                             {"h.0.qkv.mm", 64},
                                                                             {"h.0.fc.mm", 64},
                                                                             {"logits", 64}}));
  EXPECT_EQ(nonzero(split.backward_gathered), (std::map<std::string, int64_t>{{"h.0.qkv.mm", 128},
                                                                              {"h.0.fc.mm", 128},
                                                                              {"logits", 128},
                                                                              {"h.0.attn.mm", 64},
                                                                              {"h.0.mlp.mm", 64},
                                                                              {"tok", 64},
                                                                              {"x", 32}}));
  EXPECT_EQ(nonzero(split.forward_reduced), (std::map<std::string, int64_t>{{"loss", 24}}));
  EXPECT_EQ(nonzero(split.backward_reduced), (std::map<std::string, int64_t>{
                                                 {"h.0.a", 16}, {"h.0.attn.out", 8}, {"h.0.m", 16}, {"h.0.mlp.out", 8},
                                                 {"xf", 16}}));
  EXPECT_TRUE(split.divided[at.at("h.0.a")]);  // the layer norm on each GPU's tokens
  // Stashed parts are half the size; the cuts between stages are as before
  // (stages hand whole values on).
  auto timer = [](const Function&, const Op&, const OpCost&) { return OpTiming{1.0, 2.0}; };
  const DimBinding b = m.binding(parse_binding("B=2,T=4,S=4,C=8,H=2,L=1,V=16"));
  CostGraph plain = build_cost_graph(g, b, timer), sequence = plain;
  apply_tensor_parallel(plain, g, TensorParallel{2, {1e9, 0}, 2});
  apply_tensor_parallel(sequence, g, TensorParallel{2, {1e9, 0}, 2, true});
  EXPECT_EQ(sequence.nodes[at.at("h.0.attn.mm")].stash_bytes * 2, plain.nodes[at.at("h.0.attn.mm")].stash_bytes);
  EXPECT_EQ(cuts_between_shares(g, split, {}), cuts_between_shares(g, tensor_parallel_split(g, 2), {}));
}

// Each stage's program is split alone, so a stage may not begin between a
// column-parallel product and the row-parallel one that reads its shares.
TEST(TensorParallel, NoShareCrossesACut) {
  Module m = tiny_gpt();
  const Function& g = m.graph();
  const std::map<std::string, int> at = op_index(g);
  const std::vector<int> cuts = cuts_between_shares(g, tensor_parallel_split(g, 2), {});
  auto allowed = [&](const char* first_op) { return std::count(cuts.begin(), cuts.end(), at.at(first_op)) == 1; };
  EXPECT_TRUE(allowed("h.0.ln_1.w"));      // the block's start
  EXPECT_TRUE(allowed("h.0.attn.out"));    // after attention's all-reduce
  EXPECT_TRUE(allowed("h.0.ln_2.w"));      // between attention and the MLP
  EXPECT_FALSE(allowed("h.0.q.heads"));    // inside attention
  EXPECT_FALSE(allowed("h.0.act"));        // between the MLP's products
  EXPECT_FALSE(allowed("h.0.mlp.mm"));
  // A split that shares nothing leaves every cut.
  EXPECT_EQ(cuts_between_shares(g, tensor_parallel_split(g, 1), {}).size(), g.ops.size() - 1);
}

TEST(TensorParallel, RingAllReduce) {
  // 2 (T - 1) / T of the bytes at the link's bandwidth, 2 (T - 1) latencies.
  EXPECT_DOUBLE_EQ(ring_all_reduce_s(128, 2, {1e9, 1e-6}), 128e-9 + 2e-6);
  // GPT-3's (b, s, h) = (1, 2048, 12288) in bf16 over 8 GPUs of NVLink:
  // 14/8 * 50,331,648 B / 300 GB/s + 14 * 5 us = 0.29360 ms + 0.07 ms.
  EXPECT_NEAR(ring_all_reduce_s(2.0 * 2048 * 12288, 8, {300e9, 5e-6}), 0.36360e-3, 1e-8);
  EXPECT_EQ(ring_all_reduce_s(1e9, 1, {1e9, 1e-6}), 0.0);
  EXPECT_EQ(ring_all_reduce_s(0, 8, {1e9, 1e-6}), 0.0);
}

TEST(TensorParallel, PricesOneGpuOfTheGroup) {
  Module m = tiny_gpt();
  const Function& g = m.graph();
  const DimBinding b = m.binding(parse_binding("B=2,T=4,S=4,C=8,H=2,L=1,V=16"));
  auto timer = [](const Function&, const Op&, const OpCost&) { return OpTiming{1.0, 2.0}; };
  const CostGraph whole = build_cost_graph(g, b, timer);
  CostGraph cg = whole;
  apply_tensor_parallel(cg, g, TensorParallel{2, {1e9, 0}, 2});
  const std::map<std::string, int> at = op_index(g);
  const CostNode& qkv = cg.nodes[at.at("h.0.qkv.mm")];
  // Column-parallel: half the work, and the input gradient's all-reduce
  // (64 elements of 2 bytes: 2 (2 - 1) / 2 * 128 B / 1 GB/s).
  EXPECT_DOUBLE_EQ(qkv.forward_s, 0.5);
  EXPECT_DOUBLE_EQ(qkv.backward_s, 1.0 + 128e-9);
  EXPECT_EQ(qkv.stash_bytes, 2 * 4 * 24 * 4 / 2);
  // Row-parallel: the output's all-reduce in the forward.
  const CostNode& proj = cg.nodes[at.at("h.0.attn.mm")];
  EXPECT_DOUBLE_EQ(proj.forward_s, 0.5 + 128e-9);
  EXPECT_DOUBLE_EQ(proj.backward_s, 1.0);
  EXPECT_EQ(proj.stash_bytes, 2 * 4 * 8 * 4);  // whole after the all-reduce
  // Parameters are charged to their reader: the column-parallel weight's
  // half, and the layer norm's scale and shift whole.
  EXPECT_EQ(cg.nodes[at.at("h.0.qkv.mm")].param_bytes, 8 * 24 * 4 / 2);
  EXPECT_EQ(cg.nodes[at.at("h.0.a")].param_bytes, 2 * 8 * 4);
  // A layer norm is done whole on each GPU; FLOPs stay the model's.
  EXPECT_EQ(cg.nodes[at.at("h.0.a")].forward_s, 1.0);
  for (size_t i = 0; i < cg.nodes.size(); ++i) EXPECT_EQ(cg.nodes[i].flops, whole.nodes[i].flops);
  // Degree 1 changes nothing.
  CostGraph same = whole;
  apply_tensor_parallel(same, g, TensorParallel{1, {1e9, 0}, 2});
  for (size_t i = 0; i < same.nodes.size(); ++i) EXPECT_EQ(same.nodes[i].forward_s, whole.nodes[i].forward_s);
}

TEST(TensorParallel, GroupedCluster) {
  const Cluster c{8, {300e9, 5e-6}, {25e9, 10e-6}, 128};
  const Cluster g = grouped_cluster(c, 4, 4);
  EXPECT_EQ(g.devices_per_node, 2);
  EXPECT_EQ(g.intra.bandwidth_bytes_per_s, 1200e9);
  EXPECT_EQ(g.inter.bandwidth_bytes_per_s, 100e9);
  EXPECT_EQ(g.inter.latency_s, 10e-6);
  EXPECT_EQ(g.nodes, 128);
}

}  // namespace
}  // namespace pf
