// The simulator on plans whose step time, hand-offs, all-reduce and memory
// can be worked out by hand.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>

#include "simulator/simulator.h"
#include "tests/simulator/chain_plan.h"

namespace pf {
namespace {

using test::chain_plan;
using test::instant_cluster;
using test::matmul_profile;

constexpr double F = 1e-3, B = 2e-3;  // a matmul's measured forward and backward

struct Simulated {
  Plan plan;
  std::vector<Module> programs;
  PlanSimulation sim;
};

Simulated run(const Plan& compiled, const Cluster& cluster = instant_cluster(), const std::string& optimizer = "adamw") {
  Simulated out{compiled, {}, {}};
  check_plan(out.plan, "chain plan", &out.programs);
  const DeviceProfile profile = matmul_profile(out.plan, out.programs, F, B);
  out.sim = simulate_plan(out.plan, out.programs, profile, cluster, SimulateOptions{optimizer});
  return out;
}

TEST(Simulator, PricesEachStageFromItsProgram) {
  const Simulated s = run(chain_plan(4, "1f1b", 8));
  ASSERT_EQ(s.sim.stages.size(), 4u);
  for (const SimulatedStage& st : s.sim.stages) {
    EXPECT_DOUBLE_EQ(st.forward_s, F);
    EXPECT_DOUBLE_EQ(st.backward_s, B);
    EXPECT_EQ(st.price.param_bytes, 16 * 16 * 4 + (&st == &s.sim.stages[0] ? 16 * 4 : 0));
  }
  // A middle stage is one matmul of (2, 16) by (16, 16): 2 * 2 * 16 * 16
  // FLOPs forward; its backward two such products.
  EXPECT_EQ(s.sim.stages[1].price.forward_flops, 2 * 2 * 16 * 16);
  EXPECT_EQ(s.sim.stages[1].price.backward_flops, 2 * 2 * 2 * 16 * 16);
}

TEST(Simulator, OneFOneBOnBalancedStagesIsTheClosedForm) {
  for (int m : {1, 2, 4, 8, 16}) {
    const Simulated s = run(chain_plan(4, "1f1b", m));
    const int p = 4;
    EXPECT_NEAR(s.sim.walk_s, (m + p - 1) * (F + B), 1e-12) << "m=" << m;
    EXPECT_NEAR(s.sim.bubble, double(p - 1) / (m + p - 1), 1e-12) << "m=" << m;
    ASSERT_TRUE(s.sim.theory_bubble);
    EXPECT_NEAR(*s.sim.theory_bubble, double(p - 1) / (m + p - 1), 1e-12);
  }
}

TEST(Simulator, GpipeOnBalancedStagesIsTheClosedForm) {
  const Simulated s = run(chain_plan(4, "gpipe", 8));
  EXPECT_NEAR(s.sim.walk_s, (8 + 4 - 1) * (F + B), 1e-12);
}

TEST(Simulator, StepIsTheScheduleThenTheOptimizerPass) {
  const Simulated adamw = run(chain_plan(2, "1f1b", 4));
  const Simulated sgd = run(chain_plan(2, "1f1b", 4), instant_cluster(), "sgd");
  const DeviceProfile cpu = builtin_profile("cpu");
  // Stage 0 holds the bias too: its pass is the longest. AdamW moves 8 bytes
  // per parameter byte (read w, g, m, v; write w, m, v; the norm reads g),
  // SGD with momentum 6.
  const int64_t bytes = (16 * 16 + 16) * 4;
  EXPECT_NEAR(adamw.sim.step_s, adamw.sim.walk_s + op_time(cpu, 0, 8 * bytes), 1e-15);
  EXPECT_NEAR(sgd.sim.step_s, sgd.sim.walk_s + op_time(cpu, 0, 6 * bytes), 1e-15);
}

TEST(Simulator, AMeasuredOptimizerRatePricesTheUpdatePerParameter) {
  Simulated s{chain_plan(2, "1f1b", 4), {}, {}};
  check_plan(s.plan, "chain plan", &s.programs);
  DeviceProfile profile = matmul_profile(s.plan, s.programs, F, B);
  profile.update_s_per_param = {{"adamw", 2e-9}};
  const PlanSimulation adamw = simulate_plan(s.plan, s.programs, profile, instant_cluster(), SimulateOptions{"adamw"});
  EXPECT_NEAR(adamw.step_s, adamw.walk_s + (16 * 16 + 16) * 2e-9, 1e-15);  // stage 0's parameters
  EXPECT_NEAR(adamw.devices[1].optimizer_s, 16 * 16 * 2e-9, 1e-15);
  // An optimizer the profile did not time: its bytes at the bandwidth.
  const PlanSimulation sgd = simulate_plan(s.plan, s.programs, profile, instant_cluster(), SimulateOptions{"sgd"});
  EXPECT_NEAR(sgd.step_s, sgd.walk_s + op_time(profile, 0, 6 * (16 * 16 + 16) * 4), 1e-15);
}

TEST(Simulator, ZeroBubbleBeatsOneFOneBWithTheSameWork) {
  const Simulated zb = run(chain_plan(4, "zb1", 8));
  const Simulated ofob = run(chain_plan(4, "1f1b", 8));
  EXPECT_LT(zb.sim.walk_s, ofob.sim.walk_s - F);
  for (size_t s = 0; s < 4; ++s) {
    const StagePrice& price = zb.sim.stages[s].price;
    EXPECT_NEAR(price.backward_input_s + price.backward_weight_s, B, 1e-15);
    EXPECT_GT(price.backward_weight_s, 0);
    EXPECT_NEAR(zb.sim.stages[s].busy_s, ofob.sim.stages[s].busy_s, 1e-12);
  }
  // Stage 0 sends no input gradient: its input part is empty, W does it all.
  EXPECT_EQ(zb.sim.stages[0].price.backward_input_s, 0);
}

TEST(Simulator, InterleavedRunsTwoChunksPerDevice) {
  const Simulated s = run(chain_plan(4, "interleaved", 4, 1, 2));
  ASSERT_EQ(s.sim.devices.size(), 2u);
  EXPECT_EQ(s.sim.stages[2].device, 0);
  // Every device computes 2 chunks x 4 micro-batches x (F + B).
  for (const SimulatedDevice& d : s.sim.devices) EXPECT_NEAR(d.busy_s, 2 * 4 * (F + B), 1e-12);
  // The theory of interleaving: (p - 1) / (v m + p - 1).
  EXPECT_NEAR(s.sim.bubble, 1.0 / (2 * 4 + 1), 1e-12);
}

TEST(Simulator, SendsDelayTheirReceivesByLatencyAndBytesOverBandwidth) {
  // Two stages, one micro-batch: F0, the activations travel, F1, B1, the
  // gradient travels back, B0. Each hand-off is one (16, 16) f32 tensor.
  const double latency = 3e-4, bandwidth = 1e6;
  const Cluster cluster{1024, {bandwidth, latency}, {bandwidth, latency}};
  const Simulated s = run(chain_plan(2, "1f1b", 1), cluster);
  const double hop = latency + 16 * 16 * 4 / bandwidth;
  EXPECT_NEAR(s.sim.walk_s, 2 * (F + B) + 2 * hop, 1e-12);
  // Device 1 waits for the activations exactly from time 0 to F + hop.
  for (const TimedAction& t : s.sim.timeline.per_device[1])
    if (t.action.kind == ActionKind::recv_act) {
      EXPECT_NEAR(t.end, F + hop, 1e-12);
    }
  // Across nodes, the inter-node link.
  const Cluster split{1, {1e12, 0}, {bandwidth, latency}};
  EXPECT_NEAR(run(chain_plan(2, "1f1b", 1), split).sim.walk_s, 2 * (F + B) + 2 * hop, 1e-12);
}

TEST(Simulator, ReplicasAddTheirGradientAllReduce) {
  const double latency = 1e-5, bandwidth = 1e8;
  const Cluster cluster{1024, {bandwidth, latency}, {bandwidth, latency}};
  // Same micro-batch of 2 (B = 16 over 4 x 2, B = 8 over 4), same pipeline.
  const Simulated one = run(chain_plan(2, "1f1b", 8), cluster);
  const Simulated two = run(chain_plan(2, "1f1b", 4, 2), cluster);
  const Simulated one4 = run(chain_plan(2, "1f1b", 4, 1, 1, 8), cluster);
  ASSERT_EQ(two.sim.replicas, 2);
  EXPECT_EQ(one.sim.samples, two.sim.samples);
  EXPECT_NEAR(two.sim.walk_s, one4.sim.walk_s, 1e-15);
  // Stage 0's backward is the step's last action; its ring all-reduce over 2
  // replicas moves 2 (2 - 1) / 2 of its gradient bytes in 2 latencies, then
  // the optimizer runs.
  const double ring = (16 * 16 + 16) * 4 / bandwidth + 2 * latency;
  EXPECT_NEAR(two.sim.stages[0].all_reduce_s, ring, 1e-15);
  EXPECT_NEAR(two.sim.stages[0].all_reduce_start_s, two.sim.walk_s, 1e-15);
  EXPECT_NEAR(two.sim.step_s - one4.sim.step_s, ring, 1e-12);
  EXPECT_EQ(one4.sim.stages[0].all_reduce_s, 0);

  // The replicas sharing the optimizer state: each holds and steps half of
  // AdamW's two moments, then gathers the other half of the weights (half
  // a ring all-reduce).
  Plan sharded_plan = chain_plan(2, "1f1b", 4, 2);
  sharded_plan.shard_optimizer = true;
  const Simulated sharded = run(sharded_plan, cluster);
  for (size_t s = 0; s < 2; ++s) {
    const SimulatedStage& whole = two.sim.stages[s];
    const SimulatedStage& half = sharded.sim.stages[s];
    EXPECT_EQ(whole.peak_memory_bytes - half.peak_memory_bytes, whole.price.param_bytes) << "stage " << s;
    EXPECT_NEAR(half.optimizer_s, (whole.optimizer_s) / 2 + whole.all_reduce_s / 2, 1e-15) << "stage " << s;
  }
}

TEST(Simulator, PeakMemoryIsParametersTimesCopiesPlusStashInFlight) {
  for (const char* schedule : {"1f1b", "gpipe", "zb1"}) {
    const int p = 4, m = 8;
    const Simulated s = run(chain_plan(p, schedule, m));
    const std::string kind = schedule;
    for (int st = 0; st < p; ++st) {
      const SimulatedStage& stage = s.sim.stages[static_cast<size_t>(st)];
      // 1F1B holds p - s micro-batches, GPipe all m; ZB-H1 keeps a slot
      // until W, at least p - s.
      const int slots = s.sim.timeline.peak_stashed[static_cast<size_t>(st)];
      if (kind == "zb1") {
        EXPECT_GE(slots, p - st);
      } else {
        EXPECT_EQ(slots, kind == "gpipe" ? m : p - st);
      }
      const int inflight = slots;
      // Weights, gradients and AdamW's two moments.
      EXPECT_EQ(stage.peak_memory_bytes, 4 * stage.price.param_bytes + inflight * stage.price.slot_bytes)
          << schedule << " stage " << st;
      EXPECT_EQ(stage.price.slot_bytes % 64, 0);
      // A middle stage's backward reads only its input, (2, 16) f32, for its
      // weight's gradient (the weight itself is a parameter, not stashed);
      // ZB-H1's W reads the output's gradient, a seed, so defers nothing.
      if (st == 1) {
        EXPECT_EQ(stage.price.slot_bytes, 2 * 16 * 4);
      }
      // One stage per device.
      EXPECT_EQ(s.sim.devices[static_cast<size_t>(st)].peak_memory_bytes, stage.peak_memory_bytes);
    }
  }
  // SGD keeps one copy of state.
  const Simulated sgd = run(chain_plan(2, "1f1b", 4), instant_cluster(), "sgd");
  const SimulatedStage& last = sgd.sim.stages[1];
  EXPECT_EQ(last.peak_memory_bytes, 3 * last.price.param_bytes + 1 * last.price.slot_bytes);
}

TEST(Simulator, ModelFlopsUtilisationIsFlopsOverStepAndPeak) {
  const Simulated s = run(chain_plan(2, "1f1b", 4));
  // Per micro-batch: the matmul forward 2*2*16*16 and backward twice that,
  // the bias add 2*16 forward on stage 0, plus what the loss and the
  // backward's elementwise ops add.
  double flops = 0;
  for (const SimulatedStage& st : s.sim.stages) flops += double(st.price.forward_flops + st.price.backward_flops);
  EXPECT_GE(flops, 2 * 3 * 2 * 2 * 16 * 16);
  EXPECT_DOUBLE_EQ(s.sim.flops, 4 * flops);
  EXPECT_DOUBLE_EQ(s.sim.peak_flops, 2 * builtin_profile("cpu").flops);
  EXPECT_DOUBLE_EQ(s.sim.mfu(), s.sim.flops / (s.sim.step_s * s.sim.peak_flops));
  EXPECT_DOUBLE_EQ(s.sim.samples_per_s(), 16 / s.sim.step_s);
}

TEST(Simulator, TraceIsEveryActionInTheRunsFormat) {
  const Simulated s = run(chain_plan(2, "1f1b", 4));
  const std::vector<TraceEvent> events = simulation_trace(s.sim);
  size_t actions = 0;
  for (const auto& list : s.sim.schedule.per_device) actions += list.size() - 1;  // all but the step
  EXPECT_EQ(events.size(), actions + 2);  // and an optimizer slice per device, when the step's collectives end
  for (int d = 0; d < 2; ++d) {
    const auto update = std::find_if(events.begin(), events.end(), [&](const TraceEvent& e) {
      return e.device == d && e.action.kind == ActionKind::step;
    });
    ASSERT_NE(update, events.end()) << "device " << d;
    EXPECT_DOUBLE_EQ(update->start_s, s.sim.update_start_s);
    EXPECT_DOUBLE_EQ(update->end_s, s.sim.update_start_s + s.sim.devices[static_cast<size_t>(d)].optimizer_s);
  }
  EXPECT_DOUBLE_EQ(s.sim.step_s, s.sim.update_start_s + std::max(s.sim.devices[0].optimizer_s,
                                                                  s.sim.devices[1].optimizer_s));
  for (size_t i = 1; i < events.size(); ++i) EXPECT_LE(events[i - 1].start_s, events[i].start_s);
  const nlohmann::json doc = nlohmann::json::parse(trace_json(events, 2));
  EXPECT_TRUE(doc.contains("traceEvents"));
}

TEST(Simulator, RefusesAnInferencePlanAndProgramsOfAnotherPlan) {
  Simulated s = run(chain_plan(2, "1f1b", 4));
  const DeviceProfile cpu = builtin_profile("cpu");
  std::vector<Module> fewer(s.programs.begin(), s.programs.begin() + 1);
  try {
    simulate_plan(s.plan, fewer, cpu, instant_cluster());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "1 stage programs for a plan of 2 stages");
  }
  Plan inference = s.plan;
  inference.loss_stage_output.clear();
  try {
    simulate_plan(inference, s.programs, cpu, instant_cluster());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "plan for @chain is an inference plan: it has no training step to simulate");
  }
}

TEST(Simulator, SixteenStagesOfSixtyFourReplicasSimulateFast) {
  // The event loop is O(actions) and each stage is priced once: 16 stages,
  // m = 192, 64 replicas.
  const Simulated s = run(chain_plan(16, "1f1b", 192, 1, 1, 2 * 192));
  Plan wide = s.plan;
  wide.ranks = replicated_ranks(wide.stages, 16, 64);
  for (int k = 1; k < 64; ++k)
    for (int d = 0; d < 16; ++d) wide.devices.push_back({fmt::format("cpu:{}", k * 16 + d), "cpu", 1 << 30, 1});
  const DeviceProfile profile = matmul_profile(s.plan, s.programs, F, B);
  const auto t0 = std::chrono::steady_clock::now();
  const PlanSimulation sim = simulate_plan(wide, s.programs, profile, instant_cluster());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(sim.replicas, 64);
  EXPECT_NEAR(sim.walk_s, (192 + 15) * (F + B), 1e-9);
  EXPECT_LT(seconds, 0.5);
}

}  // namespace
}  // namespace pf
