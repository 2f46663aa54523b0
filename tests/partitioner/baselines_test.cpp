// The equal-layers and equal-params baselines.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ir/diagnostic.h"
#include "partitioner/stage_search.h"

namespace pf {
namespace {

constexpr int64_t kGiB = int64_t{1} << 30;

/// An embedding node, `layers` layers of three nodes, a head node.
CostGraph layered(int layers) {
  CostGraph g;
  g.nodes.push_back({"embed", "", 1, 1, 400, 0});
  for (int l = 0; l < layers; ++l)
    for (int k = 0; k < 3; ++k) g.nodes.push_back({fmt::format("h{}.{}", l, k), fmt::format("h{}", l), 1, 2, 100, 10});
  g.nodes.push_back({"head", "", 1, 1, 0, 0});
  for (int i = 0; i + 1 < static_cast<int>(g.nodes.size()); ++i) g.tensors.push_back({i, {i + 1}, 64, ""});
  return g;
}

PartitionOptions devices(int count) {
  PartitionOptions o;
  o.stages = count;
  o.microbatches = 4;
  for (int d = 0; d < count; ++d) o.devices.push_back({fmt::format("gpu{}", d), 1.0, 80 * kGiB});
  o.link = {1e9, 1e-6};
  return o;
}

std::vector<int> layer_counts(const CostGraph& g, const PartitionResult& r) {
  std::vector<int> out;
  for (const StagePlan& s : r.stages) {
    int layers = 0;
    for (int i = s.begin; i < s.end; ++i)
      layers += g.nodes[i].layer.empty() || i + 1 == s.end || g.nodes[i + 1].layer != g.nodes[i].layer;
    out.push_back(layers);
  }
  return out;
}

TEST(Baselines, EqualLayersCountsLayersNotNodes) {
  // embed, h0..h3, head: six layers, two per stage.
  const CostGraph g = layered(4);
  const PartitionResult r = equal_layers(g, devices(3));
  EXPECT_EQ(r.method, "equal-layers");
  EXPECT_EQ(r.cuts, (std::vector<int>{4, 10}));
  EXPECT_EQ(layer_counts(g, r), (std::vector<int>{2, 2, 2}));
  EXPECT_TRUE(r.fits_memory);
}

TEST(Baselines, EqualLayersSpreadsTheRemainder) {
  const CostGraph g = layered(8);  // ten layers over four stages
  EXPECT_EQ(layer_counts(g, equal_layers(g, devices(4))), (std::vector<int>{2, 3, 2, 3}));
}

TEST(Baselines, EqualLayersSnapsToCandidates) {
  CostGraph g = layered(4);
  g.cut_candidates = {1, 7, 13};  // layer boundaries after embed, h1 and h3
  EXPECT_EQ(equal_layers(g, devices(3)).cuts, (std::vector<int>{1, 7}));
}

TEST(Baselines, EqualLayersNeedsEnoughLayers) {
  try {
    equal_layers(layered(4), devices(7));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "cannot cut 6 layers into 7 stages");
  }
}

TEST(Baselines, EqualParamsBalancesParameters) {
  CostGraph g;
  for (int i = 0; i < 8; ++i) g.nodes.push_back({fmt::format("n{}", i), "", 1, 2, i % 2 == 0 ? 100 : 0, 0});
  const PartitionResult r = equal_params(g, devices(2));
  EXPECT_EQ(r.method, "equal-params");
  EXPECT_EQ(r.cuts, (std::vector<int>{3}));
  EXPECT_EQ(r.stages[0].param_bytes, 200);
  EXPECT_EQ(r.stages[1].param_bytes, 200);
}

TEST(Baselines, ReportMemoryInsteadOfFailing) {
  CostGraph g = layered(4);
  PartitionOptions o = devices(3);
  o.devices[1].memory_bytes = 1000;  // h1 and h2 need 600 params * 4 + stash
  const PartitionResult r = equal_layers(g, o);
  EXPECT_FALSE(r.fits_memory);
  EXPECT_TRUE(r.devices[0].fits);
  EXPECT_FALSE(r.devices[1].fits);
  EXPECT_GT(r.devices[1].memory_bytes, r.devices[1].memory_limit);
  // The DP, given the same memory, puts less on device 1 and fits.
  const PartitionResult dp = partition(g, o);
  EXPECT_TRUE(dp.fits_memory);
  EXPECT_GE(r.period_s, dp.period_s);
}

}  // namespace
}  // namespace pf
