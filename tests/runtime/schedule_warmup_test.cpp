// More forwards ahead (with_extra_warmup) and schedules under jitter
// (simulate_jittered): what each device holds, the steady step kept, and
// the slack paying off once actions run late.
#include "runtime/schedule_warmup.h"

#include <gtest/gtest.h>

#include <vector>

#include "runtime/schedule_jitter.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

/// Every stage costing a forward 1 and a backward 2.
ActionCosts unit_stages(const Schedule& schedule) {
  ActionCosts costs;
  costs.stages.assign(static_cast<size_t>(schedule.model_stages()), {1, 2, 1, 1, 0, 0});
  return costs;
}

/// The compute actions of `device`, as action_label names them.
std::vector<std::string> labels(const Schedule& schedule, int device) {
  std::vector<std::string> out;
  for (const Action& a : schedule.per_device[static_cast<size_t>(device)])
    if (is_compute(a.kind)) out.push_back(action_label(schedule, a));
  return out;
}

TEST(ExtraWarmup, RunsMoreForwardsAheadOnEveryDeviceButTheLast) {
  const Schedule one_f_one_b = make_schedule(ScheduleKind::one_f_one_b, 3, 6);
  const Schedule eager = with_extra_warmup(one_f_one_b, 1);
  EXPECT_EQ(eager.kind, ScheduleKind::custom);
  using L = std::vector<std::string>;
  EXPECT_EQ(labels(eager, 0), (L{"F0", "F1", "F2", "F3", "B0", "F4", "B1", "F5", "B2", "B3", "B4", "B5"}));
  EXPECT_EQ(labels(eager, 1), (L{"F0", "F1", "F2", "B0", "F3", "B1", "F4", "B2", "F5", "B3", "B4", "B5"}));
  EXPECT_EQ(labels(eager, 2), labels(one_f_one_b, 2));

  // One more activation held where a forward went ahead; the same step on steady costs.
  const Simulation before = simulate(one_f_one_b), after = simulate(eager);
  EXPECT_EQ(after.peak_stashed, (std::vector<int>{before.peak_stashed[0] + 1, before.peak_stashed[1] + 1,
                                                  before.peak_stashed[2]}));
  EXPECT_DOUBLE_EQ(after.makespan, before.makespan);
}

// A W keeps its place after its B; each forward moves one B earlier.
TEST(ExtraWarmup, ZeroBubbleKeepsItsWeightGradientsInPlace) {
  const Schedule zb1 = make_schedule(ScheduleKind::zb_h1, 3, 6);
  const Schedule eager = with_extra_warmup(zb1, 1);
  using L = std::vector<std::string>;
  EXPECT_EQ(labels(eager, 0), (L{"F0", "F1", "F2", "F3", "B0", "W0", "F4", "B1", "W1", "F5", "B2", "W2", "B3", "W3",
                                 "B4", "W4", "B5", "W5"}));
  EXPECT_EQ(labels(eager, 1), (L{"F0", "F1", "F2", "B0", "F3", "B1", "W0", "F4", "B2", "W1", "F5", "B3", "W2", "B4",
                                 "W3", "B5", "W4", "W5"}));
  EXPECT_EQ(labels(eager, 2), labels(zb1, 2));
  EXPECT_TRUE(eager.split_backward);
  UnitCosts split;
  split.forward = split.backward_input = split.backward_weight = 1;
  EXPECT_DOUBLE_EQ(simulate(eager, split).makespan, simulate(zb1, split).makespan);
}

TEST(ExtraWarmup, NoneKeepsTheListsAndMoreThanTheForwardsRunsThemAll) {
  const Schedule one_f_one_b = make_schedule(ScheduleKind::one_f_one_b, 4, 8);
  EXPECT_EQ(with_extra_warmup(one_f_one_b, 0).per_device, one_f_one_b.per_device);

  const Schedule all_ahead = with_extra_warmup(make_schedule(ScheduleKind::one_f_one_b, 2, 4), 10);
  using L = std::vector<std::string>;
  EXPECT_EQ(labels(all_ahead, 0), (L{"F0", "F1", "F2", "F3", "B0", "B1", "B2", "B3"}));
  EXPECT_EQ(simulate(all_ahead).peak_stashed, (std::vector<int>{4, 1}));
}

TEST(ExtraWarmup, EveryShapeStaysValid) {
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1})
    for (int p : {1, 2, 3, 5})
      for (int m : {1, p, 2 * p + 1})
        for (int extra : {1, 2, 7}) {
          const Schedule eager = with_extra_warmup(make_schedule(kind, p, m), extra);
          EXPECT_NO_THROW(validate(eager))
              << schedule_kind_name(kind) << " p=" << p << " m=" << m << " extra=" << extra;
        }
}

TEST(ExtraWarmup, Errors) {
  EXPECT_EQ(error_of([] { with_extra_warmup(make_schedule(ScheduleKind::zb_v, 2, 4, 2), 1); }),
            "extra warm-up forwards run ahead on devices of one model chunk, and zbv gives each device 2");
  EXPECT_EQ(error_of([] { with_extra_warmup(make_schedule(ScheduleKind::gpipe, 2, 4), 1); }),
            "gpipe runs every forward before its first backward already: extra warm-up forwards change nothing");
  EXPECT_EQ(error_of([] { with_extra_warmup(make_schedule(ScheduleKind::interleaved, 2, 4, 2), 1); }),
            "extra warm-up forwards run ahead on devices of one model chunk, and interleaved gives each device 2");
  EXPECT_EQ(error_of([] { with_extra_warmup(make_schedule(ScheduleKind::one_f_one_b, 2, 4), -1); }),
            "extra warm-up forwards cannot be negative, got -1");
}

TEST(Jitter, NoneIsTheSteadyStep) {
  const Schedule schedule = make_schedule(ScheduleKind::one_f_one_b, 2, 8);
  const JitteredSimulation j = simulate_jittered(schedule, unit_stages(schedule), {.sigma = 0, .trials = 3});
  EXPECT_DOUBLE_EQ(j.nominal.makespan, 27);  // (m + p - 1) (F + B)
  EXPECT_DOUBLE_EQ(j.mean_makespan, 27);
  EXPECT_DOUBLE_EQ(j.median_makespan, 27);
  EXPECT_DOUBLE_EQ(j.p90_makespan, 27);
  EXPECT_DOUBLE_EQ(j.mean_bubble, j.nominal.bubble_fraction);
}

TEST(Jitter, TheSameSeedDrawsTheSameTrials) {
  const Schedule schedule = make_schedule(ScheduleKind::zb_h1, 3, 6);
  const ActionCosts costs = unit_stages(schedule);
  const JitteredSimulation a = simulate_jittered(schedule, costs, {.sigma = 0.2, .trials = 20, .seed = 7});
  const JitteredSimulation b = simulate_jittered(schedule, costs, {.sigma = 0.2, .trials = 20, .seed = 7});
  const JitteredSimulation c = simulate_jittered(schedule, costs, {.sigma = 0.2, .trials = 20, .seed = 8});
  EXPECT_EQ(a.mean_makespan, b.mean_makespan);
  EXPECT_EQ(a.p90_makespan, b.p90_makespan);
  EXPECT_NE(a.mean_makespan, c.mean_makespan);
  EXPECT_LE(a.median_makespan, a.p90_makespan);
}

// 1F1B on two devices has no slack: every late action delays the other
// device, so noise of mean zero lengthens the step on average. One forward
// ahead on device 0 takes most of that back.
TEST(Jitter, SlackAbsorbsIt) {
  const Schedule one_f_one_b = make_schedule(ScheduleKind::one_f_one_b, 2, 8);
  const Schedule eager = with_extra_warmup(one_f_one_b, 1);
  const Jitter jitter{.sigma = 0.15, .trials = 400};
  const JitteredSimulation tight = simulate_jittered(one_f_one_b, unit_stages(one_f_one_b), jitter);
  const JitteredSimulation slack = simulate_jittered(eager, unit_stages(eager), jitter);
  EXPECT_GT(tight.mean_makespan, 1.02 * tight.nominal.makespan);
  EXPECT_LT(slack.mean_makespan, 1.01 * slack.nominal.makespan);
  EXPECT_LT(slack.mean_bubble, tight.mean_bubble);

  // ZB-H1's Ws fill some of the waits, less than a forward ahead does.
  const Schedule zb1 = make_schedule(ScheduleKind::zb_h1, 2, 8);
  UnitCosts split;
  split.forward = split.backward_input = split.backward_weight = 1;
  const JitteredSimulation zb1_tight = simulate_jittered(zb1, split, jitter);
  const JitteredSimulation zb1_slack = simulate_jittered(with_extra_warmup(zb1, 1), split, jitter);
  EXPECT_LT(zb1_slack.mean_makespan, zb1_tight.mean_makespan);
}

TEST(Jitter, Errors) {
  const Schedule schedule = make_schedule(ScheduleKind::one_f_one_b, 2, 4);
  EXPECT_EQ(error_of([&] { simulate_jittered(schedule, unit_stages(schedule), {.sigma = 1.5}); }),
            "simulate: the jitter's spread must be between 0 and 1, got 1.5");
  EXPECT_EQ(error_of([&] { simulate_jittered(schedule, unit_stages(schedule), {.sigma = 0.1, .trials = 0}); }),
            "simulate: jitter needs 1 trial or more, got 0");
}

}  // namespace
}  // namespace pf
