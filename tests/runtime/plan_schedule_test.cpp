// The schedule a plan runs: a cost-driven order (zbi) is the one the compiler
// predicted with, read back from the plan file alike by every rank.
#include <gtest/gtest.h>

#include <string>

#include "ir/parser.h"
#include "partitioner/compile.h"
#include "plan/plan.h"
#include "runtime/plan_schedule.h"

namespace pf {
namespace {

Plan zbi_plan(int devices, const DimBinding& overrides) {
  Module m = parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/gpt.pf"));
  const DimBinding b = m.binding(overrides);
  CompileOptions o;
  o.devices = "cpu:" + std::to_string(devices);
  o.microbatches = 8;
  o.schedule = "zbi";
  o.virtual_stages = 2;
  return compile_plan(std::move(m), b, "gpt.pf", o).plan;
}

// Chunks of unequal cost (the embedding and the head weigh on two of them):
// the order chosen on the plan's costs is not the unit-cost one, is shorter
// on those costs, and is what the compiler's prediction simulated; the plan
// file carries the costs exactly, so the runtime's lists are the same.
TEST(PlanSchedule, ZbiRunsTheOrderTheCompilerChoseOnThePlansCosts) {
  const Plan plan = zbi_plan(4, {{"B", 16}, {"L", 8}, {"C", 256}, {"H", 4}, {"T", 64}, {"S", 64}, {"V", 4096}});
  const Plan again = plan_from_json(plan_to_json(plan), "plan.json");
  const Schedule runs = plan_schedule(again);
  const ActionCosts costs = plan_action_costs(again);
  EXPECT_EQ(runs.per_device, make_schedule(ScheduleKind::zb_interleaved, 4, 8, 2, costs).per_device);
  EXPECT_EQ(simulate(runs, costs).bubble_fraction, plan.predicted.bubble_fraction);  // the same bits
  const Schedule on_units = make_schedule(ScheduleKind::zb_interleaved, 4, 8, 2);
  EXPECT_NE(runs.per_device, on_units.per_device);
  EXPECT_LT(simulate(runs, costs).makespan, simulate(on_units, costs).makespan);
  // No stage holds more than its cap (what the compiler's memory rule counted).
  const std::vector<int> held = simulate(runs).peak_stashed;
  for (size_t s = 0; s < held.size(); ++s) EXPECT_LE(held[s], zbi_stage_cap(static_cast<int>(s), 4, 8, 2)) << s;
  // Its stages' backwards are split as their programs are: the first stage
  // (the embedding) computes no input gradient, all W.
  EXPECT_EQ(again.stages[0].predicted.backward_weight_s, again.stages[0].predicted.backward_s);
  for (size_t s = 1; s < again.stages.size(); ++s) {
    EXPECT_GT(again.stages[s].predicted.backward_weight_s, 0.2 * again.stages[s].predicted.backward_s) << s;
    EXPECT_LT(again.stages[s].predicted.backward_weight_s, 0.8 * again.stages[s].predicted.backward_s) << s;
  }
}

// A plan without predicted costs (all zero) runs the unit-cost order.
TEST(PlanSchedule, UnpricedPlansRunTheUnitCostOrder) {
  Plan plan = zbi_plan(2, {{"B", 8}, {"L", 4}, {"C", 64}, {"H", 4}, {"T", 16}, {"S", 16}, {"V", 64}});
  for (PlanStage& s : plan.stages) s.predicted = {};
  EXPECT_EQ(plan_schedule(plan).per_device, make_schedule(ScheduleKind::zb_interleaved, 2, 8, 2).per_device);
}

}  // namespace
}  // namespace pf
