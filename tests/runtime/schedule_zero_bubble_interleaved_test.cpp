// Zero bubble over interleaved chunks (zbi): valid lists for every shape,
// within its caps and interleaved 1F1B's memory, idler than none of the
// schedules it stands beside where it should not be, orders chosen on
// costs, and what it refuses.
#include <gtest/gtest.h>

#include <algorithm>

#include <fmt/format.h>

#include "runtime/schedule.h"
#include "tests/error_of.h"
#include "tests/runtime/schedule_test_util.h"

namespace pf {
namespace {

using testing_support::error_of;
using testing_support::held_at_peak;
using testing_support::split_costs;

TEST(ZeroBubbleInterleaved, PlacesChunksRoundRobinAndSplitsTheBackward) {
  const Schedule s = make_schedule(ScheduleKind::zb_interleaved, 3, 6, 2);
  EXPECT_EQ(s.device_of(4), 1);  // Megatron's placement: stage s on device s % p
  EXPECT_EQ(s.chunk_of(4), 1);
  EXPECT_TRUE(splits_backward(ScheduleKind::zb_interleaved));
  EXPECT_EQ(parse_schedule_kind("zbi"), ScheduleKind::zb_interleaved);
  int inputs = 0, weights = 0;
  for (const auto& list : s.per_device)
    for (const Action& a : list) {
      inputs += a.kind == ActionKind::backward_input;
      weights += a.kind == ActionKind::backward_weight;
      EXPECT_NE(a.kind, ActionKind::backward);
    }
  EXPECT_EQ(inputs, 6 * 6);
  EXPECT_EQ(weights, 6 * 6);
}

// Every shape gives lists the simulator runs to the end (every dependency
// met, every micro-batch through every stage), no stage holding more than
// zbi_stage_cap (what the compiler counts) nor a device more than
// interleaved 1F1B's device 0 at its peak; where m is a multiple of p
// (Megatron's own condition for its interleaved order), no more idle than
// interleaved 1F1B on the same chunks.
TEST(ZeroBubbleInterleaved, ValidWithinItsCapsAndNeverIdlerThanInterleaved) {
  for (int p = 1; p <= 8; ++p)
    for (int v = 2; v <= 4; ++v)
      for (int m = 1; m <= 24; ++m) {
        SCOPED_TRACE(fmt::format("p={} v={} m={}", p, v, m));
        const Schedule zbi = make_schedule(ScheduleKind::zb_interleaved, p, m, v);
        const Schedule interleaved = make_schedule(ScheduleKind::interleaved, p, m, v);
        const Simulation mine = simulate(zbi, split_costs());
        if (m % p == 0) {
          EXPECT_LE(mine.makespan, simulate(interleaved, split_costs()).makespan + 1e-9);
        }
        for (int s = 0; s < p * v; ++s)
          EXPECT_LE(mine.peak_stashed[static_cast<size_t>(s)], zbi_stage_cap(s, p, m, v)) << "stage " << s;
        int interleaved_peak = 0;
        for (int d = 0; d < p; ++d) interleaved_peak = std::max(interleaved_peak, held_at_peak(interleaved, d));
        for (int d = 0; d < p; ++d) EXPECT_LE(held_at_peak(zbi, d), interleaved_peak);
      }
}

// On a plan's costs the order is chosen anew, and never runs longer on them
// than the unit-cost order does.
TEST(ZeroBubbleInterleaved, OrdersOnCostsRunNoLongerThanTheUnitOrder) {
  ActionCosts costs;
  for (double f : {0.2, 1.0, 1.5, 0.7, 1.1, 0.9, 2.4, 1.3})
    costs.stages.push_back(ActionCosts::Stage{f, 2 * f, f, f, 0.01, 0.01});
  const Schedule on_costs = make_schedule(ScheduleKind::zb_interleaved, 4, 8, 2, costs);
  const Schedule on_units = make_schedule(ScheduleKind::zb_interleaved, 4, 8, 2);
  EXPECT_LE(simulate(on_costs, costs).makespan, simulate(on_units, costs).makespan);
  for (int s = 0; s < 8; ++s) EXPECT_LE(simulate(on_costs).peak_stashed[static_cast<size_t>(s)], zbi_stage_cap(s, 4, 8, 2));
  // Other kinds ignore the costs.
  EXPECT_EQ(make_schedule(ScheduleKind::interleaved, 4, 8, 2, costs).per_device,
            make_schedule(ScheduleKind::interleaved, 4, 8, 2).per_device);
}

// What it is for: more chunks than a V's two, and so less idle than ZB-V
// and ZB-H1 where micro-batches are few (p = 8, v = 4, m = 8: 6.8 % idle
// against ZB-V's 12.7 % and ZB-H1's 22.6 %).
TEST(ZeroBubbleInterleaved, FourChunksLeaveLessIdleThanTheOtherZeroBubbles) {
  for (int p : {4, 8})
    for (int m : {p, 2 * p}) {
      SCOPED_TRACE(fmt::format("p={} m={}", p, m));
      const double zbi = simulate(make_schedule(ScheduleKind::zb_interleaved, p, m, 4), split_costs()).bubble_fraction;
      EXPECT_LT(zbi, simulate(make_schedule(ScheduleKind::zb_v, p, m, 2), split_costs()).bubble_fraction);
      EXPECT_LT(zbi, simulate(make_schedule(ScheduleKind::zb_h1, p, m, 1), split_costs()).bubble_fraction);
    }
  EXPECT_NEAR(simulate(make_schedule(ScheduleKind::zb_interleaved, 8, 8, 4), split_costs()).bubble_fraction, 0.068,
              0.001);
}

TEST(ZeroBubbleInterleaved, TakesTwoOrMoreChunksPerDevice) {
  EXPECT_EQ(chunks_per_device(ScheduleKind::zb_interleaved, 1), 2);
  EXPECT_EQ(chunks_per_device(ScheduleKind::zb_interleaved, 3), 3);
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::zb_interleaved, 2, 4, 1); }),
            "zbi interleaves 2 or more chunks on each device, got 1 virtual stage");
}

}  // namespace
}  // namespace pf
