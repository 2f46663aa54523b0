// A step's predicted time and bubble depend on the schedule (simulated), and
// add the all-reduce the schedule leaves exposed and the optimizer step.
#include <gtest/gtest.h>

#include "partitioner/step_time.h"

namespace pf {
namespace {

/// Two stages of one node each: 1 s forward, 2 s backward, 100 bytes of weights.
struct TwoStages {
  CostGraph graph;
  PartitionResult result;
  TwoStages() {
    graph.nodes = {{"a", "a", 1.0, 2.0, 100, 0, 30}, {"b", "b", 1.0, 2.0, 100, 0, 30}};
    for (int s = 0; s < 2; ++s) {
      StagePlan st;
      st.begin = s;
      st.end = s + 1;
      st.device = s;
      st.compute_s = 3.0;
      st.time_s = 3.0;
      st.param_bytes = 100;
      result.stages.push_back(st);
      result.devices.push_back({"d", 3.0, 0, 0, true});
    }
  }
};

TEST(StepTime, BubbleIsTheSchedules) {
  TwoStages t;
  StepOptions o;
  o.microbatches = 8;
  StepPrediction one_f_one_b = predict_step(t.graph, t.result, o);
  EXPECT_NEAR(one_f_one_b.bubble_fraction, 1.0 / 9, 1e-12);  // (p - 1) / (m + p - 1)
  EXPECT_DOUBLE_EQ(one_f_one_b.step_s, 9 * 3.0);
  o.schedule = ScheduleKind::zb_h1;
  StepPrediction zb = predict_step(t.graph, t.result, o);
  EXPECT_NEAR(zb.bubble_fraction, 1.0 / 25, 1e-12);  // (p - 1) / (3m + p - 1): F = B = W
  EXPECT_LT(zb.step_s, one_f_one_b.step_s);
}

// Each stage runs on its own costs: a slower second stage holds the first
// back, and the bubble is that of these stages, above the textbook one.
TEST(StepTime, UnevenStagesWidenTheBubble) {
  TwoStages t;
  t.graph.nodes[1].forward_s = 2.0;
  t.graph.nodes[1].backward_s = 4.0;
  t.result.stages[1].compute_s = 6.0;
  const std::vector<StageTime> times = stage_times(t.graph, t.result);
  ASSERT_EQ(times.size(), 2u);
  EXPECT_DOUBLE_EQ(times[1].forward_s, 2.0);
  EXPECT_DOUBLE_EQ(times[1].backward_s, 4.0);
  StepOptions o;
  o.microbatches = 8;
  StepPrediction p = predict_step(t.graph, t.result, o);
  // The slow stage never waits once the first forward has reached it; the
  // first stage's last backward follows its last: 1 + 8 x 6 + 2.
  EXPECT_DOUBLE_EQ(p.pipeline_s, 51.0);
  EXPECT_NEAR(p.bubble_fraction, 1.0 - (8 * 3.0 + 8 * 6.0) / (2 * 51.0), 1e-12);
  EXPECT_GT(p.bubble_fraction, 1.0 / 9);
}

// A device twice as fast (compute_s half the nodes' time) halves both directions.
TEST(StepTime, StageTimesAreOnTheStagesDevice) {
  TwoStages t;
  t.result.stages[0].compute_s = 1.5;
  const std::vector<StageTime> times = stage_times(t.graph, t.result);
  EXPECT_DOUBLE_EQ(times[0].forward_s, 0.5);
  EXPECT_DOUBLE_EQ(times[0].backward_s, 1.0);
}

TEST(StepTime, AddsTheExposedAllReduceAndTheOptimizer) {
  TwoStages t;
  StepOptions o;
  o.microbatches = 4;
  o.data_parallel = 2;
  o.replica_link = {10, 0};     // 100 bytes all-reduced over 2: 100 / 10 = 10 s
  o.memory_bandwidth = 700;     // AdamW: 7 x 100 bytes: 1 s
  StepPrediction p = predict_step(t.graph, t.result, o);
  EXPECT_DOUBLE_EQ(p.pipeline_s, 5 * 3.0);
  // Device 1 ends 2 s before device 0 (its last backward is earlier), so
  // device 0's all-reduce is the one exposed: 10 s, then 1 s of optimizer.
  EXPECT_DOUBLE_EQ(p.sync_s, 10.0);
  EXPECT_DOUBLE_EQ(p.optimizer_s, 1.0);
  EXPECT_DOUBLE_EQ(p.step_s, 26.0);
  // 2 nodes x 30 FLOPs x 4 micro-batches x 2 replicas in 26 s on 4 GPUs of 1 FLOP/s.
  EXPECT_DOUBLE_EQ(flop_utilisation(graph_flops(t.graph) * 4 * 2, p.step_s, 4, 1.0), 480.0 / (26 * 4));
  // A measured rate per parameter (25 f32 parameters here) replaces the bandwidth's.
  o.update_s_per_param = 0.2;
  EXPECT_DOUBLE_EQ(predict_step(t.graph, t.result, o).optimizer_s, 5.0);
  // The state shared out between the 2 replicas: each updates half (2.5 s),
  // then they gather the halves, half a ring all-reduce: 5 s.
  o.shard_optimizer = true;
  EXPECT_DOUBLE_EQ(predict_step(t.graph, t.result, o).optimizer_s, 2.5 + 5.0);
  // At the bandwidth: half of the weights and gradients read, the weights
  // written, and the state (a replica's share: AdamW's factor 2 / 2 = 1)
  // read and written: (3 x 50 + 2 x 1 x 100) / 700.
  o.update_s_per_param = 0;
  o.optimizer_state_factor = 1.0;
  EXPECT_DOUBLE_EQ(predict_step(t.graph, t.result, o).optimizer_s, 350.0 / 700 + 5.0);
}

}  // namespace
}  // namespace pf
