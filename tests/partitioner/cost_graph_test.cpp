// Cost graph validation and the crossing tensors of every boundary.
#include "partitioner/cost_graph.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "ir/diagnostic.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

CostGraph three_nodes() {
  CostGraph g;
  g.nodes = {{"a", "", 1, 2, 10, 1}, {"b", "", 1, 2, 20, 2}, {"c", "", 1, 2, 30, 3}};
  g.tensors = {{0, {1}, 100, "ab"}, {1, {2}, 200, "bc"}};
  return g;
}

std::string validation_error(const CostGraph& g) { return error_of([&] { validate(g); }); }

TEST(CostGraph, AcceptsAValidGraph) { EXPECT_EQ(validation_error(three_nodes()), "(no error)"); }

TEST(CostGraph, RejectsBadNodes) {
  EXPECT_EQ(validation_error(CostGraph{}), "cost graph has no nodes");
  CostGraph g = three_nodes();
  g.nodes[1].forward_s = -1;
  EXPECT_EQ(validation_error(g), "cost graph: node 1 'b' has forward_s -1, expected a finite time >= 0");
  g = three_nodes();
  g.nodes[2].backward_s = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(validation_error(g), "cost graph: node 2 'c' has backward_s nan, expected a finite time >= 0");
  g = three_nodes();
  g.nodes[0].param_bytes = -5;
  EXPECT_EQ(validation_error(g), "cost graph: node 0 'a' has param_bytes -5, expected >= 0");
}

TEST(CostGraph, RejectsBadTensors) {
  CostGraph g = three_nodes();
  g.tensors.push_back({2, {1}, 8, "back"});
  EXPECT_EQ(validation_error(g),
            "cost graph: tensor 'back' is produced by node 2 'c' but consumed by node 1 'b', which is "
            "not after it");
  g = three_nodes();
  g.tensors.push_back({7, {1}, 8, "x"});
  EXPECT_EQ(validation_error(g), "cost graph: tensor 'x' has producer 7, expected -1 (a graph input) or a node in 0..2");
  g = three_nodes();
  g.tensors.push_back({0, {3}, 8, "x"});
  EXPECT_EQ(validation_error(g), "cost graph: tensor 'x' has consumer 3, expected a node in 0..2");
  g = three_nodes();
  g.tensors[0].bytes = -1;
  EXPECT_EQ(validation_error(g), "cost graph: tensor 'ab' has bytes -1, expected >= 0");
}

TEST(CostGraph, RejectsBadCandidates) {
  CostGraph g = three_nodes();
  g.cut_candidates = {3};
  EXPECT_EQ(validation_error(g), "cost graph: cut candidate 3 is outside 1..2");
  g.cut_candidates = {2, 1};
  EXPECT_EQ(validation_error(g), "cost graph: cut candidates must increase, got 1 after 2");
}

TEST(CostGraph, StageBoundaries) {
  CostGraph g = three_nodes();
  EXPECT_EQ(stage_boundaries(g), (std::vector<int>{0, 1, 2, 3}));
  g.cut_candidates = {2};
  EXPECT_EQ(stage_boundaries(g), (std::vector<int>{0, 2, 3}));
}

TEST(CostGraph, RangeCostsCountEveryCrossing) {
  // 0 -> 1 -> 2 -> 3 -> 4, a skip 0 -> {2, 4}, a graph input read by 3 and an
  // output of 4 that nobody reads: neither of the last two is ever sent.
  CostGraph g;
  for (int i = 0; i < 5; ++i) g.nodes.push_back({fmt::format("n{}", i), "", 0.5, 1.0, 10 * i, i});
  for (int i = 0; i < 4; ++i) g.tensors.push_back({i, {i + 1}, 100, fmt::format("t{}", i)});
  g.tensors.push_back({0, {2, 4}, 1000, "skip"});
  g.tensors.push_back({-1, {3}, 5000, "input"});
  g.tensors.push_back({4, {}, 7000, "loss"});
  validate(g);
  const RangeCosts r(g);
  const int64_t bytes[] = {0, 1100, 1100, 1100, 1100, 0};
  for (int b = 0; b <= 5; ++b) {
    EXPECT_EQ(r.crossing_bytes(b), bytes[b]) << "boundary " << b;
    EXPECT_EQ(r.crossing_tensors(b), b == 0 || b == 5 ? 0 : 2) << "boundary " << b;
  }
  EXPECT_DOUBLE_EQ(r.work_s(1, 4), 4.5);
  EXPECT_EQ(r.param_bytes(1, 4), 60);
  EXPECT_EQ(r.stash_bytes(0, 5), 10);
}

// A parameter read by nodes 1 and 4 (a tied embedding and its head): its
// bytes count once in a stage holding both readers, and again in a stage
// that reads it after another stage's first read.
TEST(CostGraph, EveryStageReadingASharedParameterHoldsACopy) {
  CostGraph g = three_nodes();
  for (int i = 3; i < 6; ++i) g.nodes.push_back({fmt::format("n{}", i), "", 1, 2, 0, 0});
  g.nodes[1].param_bytes += 1000;  // charged to its first reader, as build_cost_graph does
  g.shared_params.push_back({0, 1000, {1, 4}});
  validate(g);
  const RangeCosts r(g);
  EXPECT_EQ(r.param_bytes(0, 6), 1060);       // both readers: one copy
  EXPECT_EQ(r.param_bytes(1, 2), 1020);       // the first reader alone
  EXPECT_EQ(r.param_bytes(2, 6), 30 + 1000);  // a later stage reading it again
  EXPECT_EQ(r.param_bytes(2, 4), 30);         // a stage between the readers
  EXPECT_EQ(r.param_bytes(5, 6), 0);
  g.shared_params[0].readers = {4, 1};
  EXPECT_EQ(validation_error(g), "cost graph: shared parameter of node 0 needs two or more increasing readers in 0..5");
}

}  // namespace
}  // namespace pf
