// The simulator and a real run agree: per device, the compute actions of a
// traced training step, in the order they started, are the simulator's, for
// every schedule; both end a device's step with its optimizer; and the stash a
// run measures is the simulator's slots.
#include <gtest/gtest.h>

#include <algorithm>

#include "backends/cpu/blas.h"
#include "runtime/pipeline.h"
#include "runtime/random_batch.h"
#include "simulator/simulator.h"
#include "tests/simulator/chain_plan.h"

namespace pf {
namespace {

using Sequence = std::vector<std::vector<Action>>;  // per device, compute actions by start

Sequence compute_order(const std::vector<TraceEvent>& events, int devices) {
  std::vector<TraceEvent> sorted = events;
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const TraceEvent& a, const TraceEvent& b) { return a.start_s < b.start_s; });
  Sequence out(static_cast<size_t>(devices));
  for (const TraceEvent& e : sorted)
    if (is_compute(e.action.kind)) out[static_cast<size_t>(e.device)].push_back(e.action);
  return out;
}

struct Case {
  const char* schedule;
  int layers, microbatches, virtual_stages;
};

class RunAgreement : public ::testing::TestWithParam<Case> {};

TEST_P(RunAgreement, ComputeActionsRunInTheSimulatorsOrder) {
  cpu::set_cpu_threads(1);
  const Case c = GetParam();
  const Plan compiled = test::chain_plan(c.layers, c.schedule, c.microbatches, 1, c.virtual_stages);
  std::vector<Module> programs;
  Plan plan = compiled;
  check_plan(plan, "chain plan", &programs);
  const PlanSimulation sim = simulate_plan(plan, programs, builtin_profile("cpu"), default_cluster("cpu"));
  const int devices = static_cast<int>(sim.devices.size());

  PipelineOptions po;
  po.trace = true;
  po.train.optimizer = "sgd";
  std::unique_ptr<Pipeline> pipeline = Pipeline::from_plan(plan, programs, po);
  pipeline->initialize(1);
  pipeline->start();
  Module model = test::chain_model(c.layers);
  verify_module(model, model.binding());
  const RandomBatch batch = random_batch(model.graph(), 3, 10);
  const PipelineStepResult r = pipeline->train_step(batch.named);

  const Sequence real = compute_order(r.trace, devices);
  const Sequence predicted = compute_order(simulation_trace(sim), devices);
  ASSERT_EQ(real.size(), predicted.size());
  for (int d = 0; d < devices; ++d) {
    ASSERT_EQ(real[static_cast<size_t>(d)].size(), predicted[static_cast<size_t>(d)].size()) << "device " << d;
    for (size_t i = 0; i < real[static_cast<size_t>(d)].size(); ++i)
      EXPECT_EQ(format_action(real[static_cast<size_t>(d)][i]), format_action(predicted[static_cast<size_t>(d)][i]))
          << "device " << d << ", compute action " << i;
  }
  // Both end each device's step with one optimizer slice, after its last action.
  for (const auto& [events, who] : {std::pair{r.trace, "run"}, std::pair{simulation_trace(sim), "simulator"}}) {
    for (int d = 0; d < devices; ++d) {
      double last_action_end = 0;
      std::vector<const TraceEvent*> updates;
      for (const TraceEvent& e : events) {
        if (e.device != d) continue;
        if (e.action.kind == ActionKind::step)
          updates.push_back(&e);
        else
          last_action_end = std::max(last_action_end, e.end_s);
      }
      ASSERT_EQ(updates.size(), 1u) << who << ", device " << d;
      EXPECT_GE(updates[0]->start_s, last_action_end) << who << ", device " << d;
      EXPECT_GT(updates[0]->end_s, updates[0]->start_s) << who << ", device " << d;
    }
  }
  // The run's stash: the slots it held at once (a split backward keeps its
  // slot until W), each of the simulator's size; and the micro-batches
  // between forward and backward (its input part).
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    EXPECT_EQ(r.peak_stash_bytes[s], sim.timeline.peak_stashed[s] * sim.stages[s].price.slot_bytes) << "stage " << s;
    EXPECT_EQ(r.peak_inflight[s], sim.timeline.peak_inflight[s]) << "stage " << s;
  }
}

INSTANTIATE_TEST_SUITE_P(Schedules, RunAgreement,
                         ::testing::Values(Case{"1f1b", 3, 8, 1}, Case{"gpipe", 3, 4, 1}, Case{"zb1", 3, 8, 1},
                                           Case{"interleaved", 4, 4, 2}, Case{"zbv", 4, 8, 2},
                                           Case{"dualpipev", 4, 8, 2}, Case{"loopedbfs", 4, 4, 2}),
                         [](const ::testing::TestParamInfo<Case>& param) {
                           return std::string(param.param.schedule);
                         });

}  // namespace
}  // namespace pf
