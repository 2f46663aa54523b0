// Choosing P x D x T and m: the layouts enumerated, and a small model whose
// best layout is worked out by hand.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "partitioner/layout_search.h"

namespace pf {
namespace {

TEST(LayoutSearch, EnumeratesFactorisationsAndMicroBatchSizes) {
  LayoutSpace space;
  space.gpus = 16;
  space.tensor = 2;
  space.batch = 8;
  space.max_pipeline = 4;
  space.microbatch_sizes = {1, 2, 4, 8};
  std::vector<Layout> got = candidate_layouts(space);
  // P in 1, 2, 4 (P x D = 8); each replica's 8 / D samples as m micro-batches.
  std::vector<Layout> want = {
      {1, 8, 2, 1, 1},                                    // one sample per replica
      {2, 4, 2, 1, 2}, {2, 4, 2, 2, 1},                   // two
      {4, 2, 2, 1, 4}, {4, 2, 2, 2, 2}, {4, 2, 2, 4, 1},  // four
  };
  EXPECT_EQ(got, want);
  space.data = 2;
  space.microbatches = 2;
  EXPECT_EQ(candidate_layouts(space), (std::vector<Layout>{{4, 2, 2, 2, 2}}));
  space.tensor = 3;  // 16 GPUs are no groups of 3
  EXPECT_TRUE(candidate_layouts(space).empty());
}

// A schedule that needs 2 micro-batches per pipeline device (dualpipev)
// sees only the layouts with m >= 2P.
TEST(LayoutSearch, KeepsTheMicroBatchesTheScheduleNeeds) {
  LayoutSpace space;
  space.gpus = 8;
  space.batch = 16;
  space.max_pipeline = 8;
  space.microbatch_sizes = {1, 2, 4, 8};
  space.microbatches_per_device = 2;
  std::vector<Layout> got = candidate_layouts(space);
  // Each replica's 16 / D samples one per micro-batch: only then m >= 2P.
  std::vector<Layout> want = {{1, 8, 1, 2, 1}, {2, 4, 1, 4, 1}, {4, 2, 1, 8, 1}, {8, 1, 1, 16, 1}};
  EXPECT_EQ(got, want);
  for (const Layout& l : got) EXPECT_GE(l.microbatches, 2 * l.pipeline);
}

/// Four equal layers; one sample costs 1 s forward and 2 s backward per
/// layer. Each layer has 100 bytes of weights (400 with gradients and AdamW's
/// state) and stashes 10 bytes per sample; a device has 1000 bytes.
CostGraph four_layers(int64_t samples) {
  CostGraph g;
  for (int i = 0; i < 4; ++i) {
    g.nodes.push_back({fmt::format("l{}", i), fmt::format("l{}", i), 1.0 * samples, 2.0 * samples, 100,
                       10 * samples, 0});
    if (i > 0) g.cut_candidates.push_back(i);
  }
  return g;
}

LayoutCandidate price(const Layout& l) {
  PartitionOptions po;
  po.stages = l.pipeline;
  po.microbatches = l.microbatches;
  for (int i = 0; i < l.pipeline; ++i) po.devices.push_back({fmt::format("d{}", i), 1.0, 1000});
  po.link = {1e18, 0};  // nothing crosses a cut anyway
  po.data_parallel = l.data;
  po.replica_link = {100, 0};  // 100 bytes/s between replicas
  StepOptions so;
  so.microbatches = l.microbatches;
  so.data_parallel = l.data;
  so.replica_link = po.replica_link;
  return price_layout(l, four_layers(l.microbatch_size), po, so, 1.0);
}

TEST(LayoutSearch, ChoosesTheLayoutWorkedOutByHand) {
  LayoutSpace space;
  space.gpus = 8;
  space.batch = 8;
  space.max_pipeline = 4;
  std::vector<LayoutCandidate> candidates;
  for (const Layout& l : candidate_layouts(space)) candidates.push_back(price(l));
  const LayoutChoice choice = choose_layout(candidates);
  ASSERT_EQ(choice.candidates.size(), 6u);
  // P=1 holds 1600 bytes of weights: it fits nowhere.
  EXPECT_FALSE(choice.candidates[0].fits);
  EXPECT_EQ(choice.candidates[0].memory_bytes, 1600 + 40);
  // 1F1B takes (m + P - 1) (F + B); then device 0's all-reduce of its
  // weights over D replicas, 2 (D - 1) / D of them at 100 bytes/s:
  //   P=2, D=4, m=2 (1 sample): 3 x 6 + 1.5 x 200 / 100 = 21  <- best
  //   P=2, D=4, m=1 (2 samples): 2 x 12 + 3 = 27
  //   P=4, D=2, m=4 (1 sample): 7 x 3 + 1 x 100 / 100 = 22
  //   P=4, D=2, m=2 (2 samples): 5 x 6 + 1 = 31
  //   P=4, D=2, m=1 (4 samples): 4 x 12 + 1 = 49
  std::vector<std::pair<Layout, double>> want = {{{2, 4, 1, 1, 2}, 27}, {{2, 4, 1, 2, 1}, 21},
                                                 {{4, 2, 1, 1, 4}, 49}, {{4, 2, 1, 2, 2}, 31},
                                                 {{4, 2, 1, 4, 1}, 22}};
  for (size_t i = 0; i < want.size(); ++i) {
    const LayoutCandidate& c = choice.candidates[i + 1];
    EXPECT_EQ(c.layout, want[i].first) << i;
    ASSERT_TRUE(c.fits) << i;
    EXPECT_DOUBLE_EQ(c.step.step_s, want[i].second) << i;
  }
  ASSERT_EQ(choice.best, 2);
  EXPECT_EQ(choice.candidates[2].layout, (Layout{2, 4, 1, 2, 1}));
  const std::string table = render_layout_table(choice);
  EXPECT_NE(table.find("*    2    4  1     2   1"), std::string::npos) << table;
  EXPECT_NE(table.find("     1    8  1     1   1           -            -      -     1.6 KiB  no"), std::string::npos)
      << table;
}

TEST(LayoutSearch, NothingFits) {
  LayoutCandidate c;
  c.layout = {1, 1, 1, 1, 1};
  EXPECT_EQ(choose_layout({c}).best, -1);
}

}  // namespace
}  // namespace pf
