// ZB-V: the V placement, the exact picture of a small case, the bound it
// reaches, the memory it holds and what it refuses.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "tests/error_of.h"
#include "tests/runtime/schedule_test_util.h"

namespace pf {
namespace {

using testing_support::error_of;
using testing_support::held_at_peak;
using testing_support::split_costs;

TEST(ZeroBubbleV, PlacesStagesAsAV) {
  const Schedule s = make_schedule(ScheduleKind::zb_v, 3, 3, 2);
  std::vector<int> devices, chunks;
  for (int stage = 0; stage < s.model_stages(); ++stage) {
    devices.push_back(s.device_of(stage));
    chunks.push_back(s.chunk_of(stage));
  }
  EXPECT_EQ(devices, (std::vector<int>{0, 1, 2, 2, 1, 0}));
  EXPECT_EQ(chunks, (std::vector<int>{0, 0, 0, 1, 1, 1}));
  // Round robin, for contrast: interleaved's stage 3 is device 0's chunk 1.
  const Schedule r = make_schedule(ScheduleKind::interleaved, 3, 3, 2);
  EXPECT_EQ(r.device_of(3), 0);
  EXPECT_EQ(r.chunk_of(3), 1);
  for (StagePlacement placement : {StagePlacement::round_robin(), StagePlacement::v_shape()})
    for (int p = 1; p <= 8; ++p)
      for (int stage = 0; stage < 2 * p; ++stage) {
        const int d = placement.device(stage, p);
        EXPECT_EQ(placement.stage(d, placement.chunk(stage, p), p), stage) << p << " " << stage;
      }
}

TEST(ZeroBubbleV, TwoDevicesFourMicrobatches) {
  const Schedule s = make_schedule(ScheduleKind::zb_v, 2, 4, 2);
  EXPECT_EQ(render_schedule_text(s, simulate(s, split_costs())),
            "zbv p=2 m=4 v=2, one column = 1 time unit\n"
            "dev 0: F0c0 F1c0 F2c0 F0c1 B0c1 W0c1 F1c1 B1c1 W1c1 F3c0 B0c0 W0c0 F2c1 B2c1 W2c1 B1c0 W1c0 F3c1 B3c1 "
            "W3c1 B2c0 W2c0 B3c0 W3c0 .\n"
            "dev 1: .    F0c0 F0c1 F1c0 F1c1 B0c1 W0c1 F2c0 B0c0 W0c0 F2c1 B1c1 W1c1 F3c0 B1c0 W1c0 F3c1 B2c1 W2c1 "
            "B2c0 B3c1 B3c0 W2c0 W3c1 W3c0\n"
            "bubble: 4.0% (theory 4.0%)\n");
}

// The turn of the V (stage p - 1 to stage p) is a hand-off within device
// p - 1, and device 0 holds the first and the last stage.
TEST(ZeroBubbleV, TheTurnStaysOnTheLastDevice) {
  const int p = 3;
  const Schedule s = make_schedule(ScheduleKind::zb_v, p, 4, 2);
  const std::vector<Action>& turn = s.per_device[p - 1];
  EXPECT_NE(std::find(turn.begin(), turn.end(), Action{ActionKind::send_act, 0, p - 1, p - 1}), turn.end());
  EXPECT_NE(std::find(turn.begin(), turn.end(), Action{ActionKind::recv_act, 0, p, p - 1}), turn.end());
  EXPECT_NE(std::find(turn.begin(), turn.end(), Action{ActionKind::send_grad, 0, p, p - 1}), turn.end());
  EXPECT_EQ(s.device_of(0), 0);
  EXPECT_EQ(s.device_of(2 * p - 1), 0);
}

// With F = B = W no order beats 6m + p - 1 units: device p - 1 waits p - 1
// for its first input and then has 6m of work. ZB-V reaches it for m = p
// and m >= 2p - 2 (the theory it states; some shapes between reach it too),
// beats ZB-H1 for m >= p, and holds at most 2p chunks of activations per
// device (1F1B's peak of p micro-batches of a stage twice as long).
TEST(ZeroBubbleV, ReachesTheBoundWithOneFOneBMemory) {
  const UnitCosts costs = split_costs();
  for (int p = 1; p <= 12; ++p)
    for (int m = 1; m <= 48; ++m) {
      SCOPED_TRACE(fmt::format("p={} m={}", p, m));
      const Schedule s = make_schedule(ScheduleKind::zb_v, p, m, 2);
      const Simulation sim = simulate(s, costs);
      const double bound = double(p - 1) / (6 * m + p - 1);
      if (m == p || m >= 2 * p - 2) {
        EXPECT_DOUBLE_EQ(sim.makespan, 6.0 * m + p - 1);
        EXPECT_NEAR(sim.bubble_fraction, bound, 1e-12);
        ASSERT_TRUE(theoretical_bubble(s, costs));
        EXPECT_NEAR(*theoretical_bubble(s, costs), bound, 1e-12);
      } else {
        EXPECT_GE(sim.makespan, 6.0 * m + p - 1);
        EXPECT_EQ(theoretical_bubble(s, costs), std::nullopt);
      }
      if (m >= p && p > 1) {
        EXPECT_LT(sim.bubble_fraction, simulate(make_schedule(ScheduleKind::zb_h1, p, m), costs).bubble_fraction);
      }
      for (int d = 0; d < p; ++d) EXPECT_LE(held_at_peak(s, d), std::min(2 * p, 2 * m)) << "device " << d;
    }
}

TEST(ZeroBubbleV, TakesExactlyTwoChunksPerDevice) {
  EXPECT_EQ(chunks_per_device(ScheduleKind::zb_v, 1), 2);
  EXPECT_EQ(chunks_per_device(ScheduleKind::zb_v, 2), 2);
  EXPECT_EQ(chunks_per_device(ScheduleKind::interleaved, 3), 3);
  EXPECT_EQ(chunks_per_device(ScheduleKind::one_f_one_b, 1), 1);
  EXPECT_EQ(error_of([] { chunks_per_device(ScheduleKind::zb_v, 3); }),
            "zbv places 2 chunks on each device (the arms of its V), not 3; more chunks per device are "
            "interleaved's");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::zb_v, 2, 4, 1); }),
            "zbv places 2 chunks on each device, got 1 virtual stages");
}

}  // namespace
}  // namespace pf
