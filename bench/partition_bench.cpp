// Plans a GPT-2 XL-sized cost graph over 8 and 64 devices and prints one markdown table.
//
//   scripts/build.sh --target partition_bench && build/bench/partition_bench
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "partitioner/stage_search.h"

namespace {

// GPT-2 XL: 48 blocks, width 1600, 25 heads, context 1024, vocabulary 50257.
constexpr int64_t kLayers = 48, kWidth = 1600, kHeads = 25, kContext = 1024, kVocab = 50257;
constexpr int64_t kMicroBatch = 4;  // sequences per micro-batch
constexpr int64_t kTokens = kMicroBatch * kContext;
constexpr int64_t kActivation = 2;  // bf16 activations
constexpr int64_t kParam = 4;       // fp32 master weights
// A roofline of one A100-class device: dense bf16 at about half of peak,
// HBM at about three quarters of peak.
constexpr double kFlops = 150e12, kBandwidth = 1.5e12;

/// Builds the graph op by op; each op reads the tensors named and writes one.
class GraphBuilder {
 public:
  /// Adds an op; `inputs` are tensor ids returned earlier (-1 for the
  /// tokens); returns the id of its output tensor.
  int op(const std::string& name, const std::string& layer, const std::vector<int>& inputs, int64_t out_bytes,
         double flops, int64_t params, int64_t stash, double backward_factor = 2.0) {
    const int node = static_cast<int>(graph_.nodes.size());
    int64_t moved = out_bytes + params / kParam * kActivation;
    for (int t : inputs)
      if (t >= 0) {
        graph_.tensors[t].consumers.push_back(node);
        moved += graph_.tensors[t].bytes;
      }
    const double forward = std::max(flops / kFlops, static_cast<double>(moved) / kBandwidth);
    graph_.nodes.push_back({name, layer, forward, backward_factor * forward, params, stash});
    graph_.tensors.push_back({node, {}, out_bytes, name});
    return static_cast<int>(graph_.tensors.size()) - 1;
  }
  /// Marks the position before the next op as a layer boundary.
  void boundary() { layer_starts_.push_back(static_cast<int>(graph_.nodes.size())); }
  pf::CostGraph build(bool cut_anywhere) {
    pf::CostGraph g = graph_;
    if (!cut_anywhere) g.cut_candidates = layer_starts_;
    return g;
  }

 private:
  pf::CostGraph graph_;
  std::vector<int> layer_starts_;
};

pf::CostGraph gpt2_xl(bool cut_anywhere) {
  const int64_t E = kTokens * kWidth * kActivation;                            // (B, T, C)
  const int64_t S = kMicroBatch * kHeads * kContext * kContext * kActivation;  // (B, H, T, T)
  const int64_t stats = kTokens * 2 * 4;                                       // mean and rstd, f32
  const double mm = 2.0 * kTokens * kWidth;  // FLOPs per output column of a C-wide matmul
  GraphBuilder b;
  int wte = b.op("wte", "embed", {-1}, E, 0, kVocab * kWidth * kParam, 0);
  int wpe = b.op("wpe", "embed", {-1}, E, 0, kContext * kWidth * kParam, 0);
  int x = b.op("embed_add", "embed", {wte, wpe}, E, 0, 0, 0, 1.0);
  for (int l = 0; l < kLayers; ++l) {
    b.boundary();
    const std::string layer = fmt::format("h{}", l);
    auto name = [&](const char* op) { return fmt::format("h{}.{}", l, op); };
    int st1 = b.op(name("ln1_stats"), layer, {x}, stats, 0, 0, 0);
    int ln1 = b.op(name("ln1_norm"), layer, {x, st1}, E, 0, 2 * kWidth * kParam, E + stats);
    int qkv = b.op(name("qkv"), layer, {ln1}, 3 * E, mm * 3 * kWidth, 3 * kWidth * kWidth * kParam, E);
    int qkvb = b.op(name("qkv_bias"), layer, {qkv}, 3 * E, 0, 3 * kWidth * kParam, 0, 1.0);
    int heads = b.op(name("split_heads"), layer, {qkvb}, 3 * E, 0, 0, 0, 1.0);
    int scores = b.op(name("scores"), layer, {heads}, S, 2.0 * kTokens * kContext * kWidth, 0, 2 * E);
    int scaled = b.op(name("scale"), layer, {scores}, S, 0, 0, 0, 1.0);
    int masked = b.op(name("causal_mask"), layer, {scaled}, S, 0, 0, 0, 1.0);
    int row_max = b.op(name("softmax_max"), layer, {masked}, S / kContext, 0, 0, 0, 1.0);
    int expd = b.op(name("softmax_exp"), layer, {masked, row_max}, S, 0, 0, 0, 1.0);
    int row_sum = b.op(name("softmax_sum"), layer, {expd}, S / kContext, 0, 0, 0, 1.0);
    int probs = b.op(name("softmax_div"), layer, {expd, row_sum}, S, 0, 0, S);
    int attn = b.op(name("attn_v"), layer, {probs, heads}, E, 2.0 * kTokens * kContext * kWidth, 0, E);
    int merged = b.op(name("merge_heads"), layer, {attn}, E, 0, 0, 0, 1.0);
    int proj = b.op(name("proj"), layer, {merged}, E, mm * kWidth, kWidth * kWidth * kParam, E);
    int projb = b.op(name("proj_bias"), layer, {proj}, E, 0, kWidth * kParam, 0, 1.0);
    int res1 = b.op(name("residual1"), layer, {x, projb}, E, 0, 0, 0, 1.0);
    int st2 = b.op(name("ln2_stats"), layer, {res1}, stats, 0, 0, 0);
    int ln2 = b.op(name("ln2_norm"), layer, {res1, st2}, E, 0, 2 * kWidth * kParam, E + stats);
    int fc = b.op(name("fc"), layer, {ln2}, 4 * E, mm * 4 * kWidth, 4 * kWidth * kWidth * kParam, E);
    int fcb = b.op(name("fc_bias"), layer, {fc}, 4 * E, 0, 4 * kWidth * kParam, 0, 1.0);
    int gelu = b.op(name("gelu"), layer, {fcb}, 4 * E, 0, 0, 4 * E);
    int fc2 = b.op(name("fc2"), layer, {gelu}, E, mm * kWidth * 4, 4 * kWidth * kWidth * kParam, 4 * E);
    int fc2b = b.op(name("fc2_bias"), layer, {fc2}, E, 0, kWidth * kParam, 0, 1.0);
    x = b.op(name("residual2"), layer, {res1, fc2b}, E, 0, 0, 0, 1.0);
  }
  b.boundary();
  int stf = b.op("ln_f_stats", "head", {x}, stats, 0, 0, 0);
  int lnf = b.op("ln_f_norm", "head", {x, stf}, E, 0, 2 * kWidth * kParam, E + stats);
  const int64_t logits = kTokens * kVocab * kActivation;
  int head = b.op("lm_head", "head", {lnf}, logits, mm * kVocab, kVocab * kWidth * kParam, E);
  b.op("cross_entropy", "head", {head, -1}, 4, 0, 0, logits);
  return b.build(cut_anywhere);
}

pf::PartitionOptions options_for(int devices) {
  pf::PartitionOptions o;
  o.stages = devices;
  o.microbatches = 4 * devices;
  o.rule = pf::MemoryRule::one_f_one_b;
  for (int d = 0; d < devices; ++d) o.devices.push_back({fmt::format("gpu{}", d), 1.0, int64_t{80} << 30});
  // NVLink inside a node of 8; InfiniBand between nodes.
  o.link = devices <= 8 ? pf::LinkSpec{150e9, 5e-6} : pf::LinkSpec{25e9, 10e-6};
  o.optimizer_state_factor = 2.0;  // AdamW
  return o;
}

std::string baseline_period(pf::PartitionResult (*baseline)(const pf::CostGraph&, const pf::PartitionOptions&),
                            const pf::CostGraph& g, const pf::PartitionOptions& o) {
  try {
    const pf::PartitionResult r = baseline(g, o);
    return fmt::format("{:.1f}{}", r.period_s * 1e3, r.fits_memory ? "" : " (over memory)");
  } catch (const pf::Error& e) {
    return fmt::format("n/a: {}", e.what());
  }
}

}  // namespace

int main() {
  struct Case {
    int devices;
    bool cut_anywhere;
  };
  const Case cases[] = {{8, false}, {8, true}, {64, true}};
  constexpr int kRuns = 7;
  fmt::print(
      "| devices | cuts at | nodes | plan time (ms, median of {}) | period (ms) | imbalance | "
      "equal-layers period (ms) | equal-params period (ms) |\n",
      kRuns);
  fmt::print("|---:|---|---:|---:|---:|---:|---:|---:|\n");
  for (const Case& c : cases) {
    const pf::CostGraph g = gpt2_xl(c.cut_anywhere);
    const pf::PartitionOptions o = options_for(c.devices);
    std::vector<double> times;
    pf::PartitionResult r;
    for (int run = 0; run < kRuns; ++run) {
      const auto start = std::chrono::steady_clock::now();
      r = pf::partition(g, o);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    std::sort(times.begin(), times.end());
    fmt::print("| {} | {} | {} | {:.2f} | {:.1f} | {:.2f}% | {} | {} |\n", c.devices,
               c.cut_anywhere ? "any node" : "layer boundaries", g.nodes.size(), times[kRuns / 2] * 1e3,
               r.period_s * 1e3, r.imbalance_pct, baseline_period(pf::equal_layers, g, o),
               baseline_period(pf::equal_params, g, o));
  }
  return 0;
}
