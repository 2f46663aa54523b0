// DualPipeV: DeepSeek's order on the V, the exact picture of a small case,
// the bound it reaches, the memory it holds and what it refuses.
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

TEST(DualPipeV, IsAVWithItsBackwardSplit) {
  EXPECT_EQ(parse_schedule_kind("dualpipev"), ScheduleKind::dual_pipe_v);
  EXPECT_TRUE(splits_backward(ScheduleKind::dual_pipe_v));
  EXPECT_EQ(stage_placement(ScheduleKind::dual_pipe_v), StagePlacement::v_shape());
  EXPECT_EQ(chunks_per_device(ScheduleKind::dual_pipe_v, 1), 2);
  const Schedule s = make_schedule(ScheduleKind::dual_pipe_v, 3, 6, 2);
  EXPECT_EQ(s.placement, StagePlacement::v_shape());
  EXPECT_TRUE(s.split_backward);
  EXPECT_EQ(s.device_of(0), 0);
  EXPECT_EQ(s.device_of(5), 0);
  EXPECT_EQ(s.device_of(2), 2);
  EXPECT_EQ(s.device_of(3), 2);
}

// Device 1 (the last) runs its warm-up's forwards of both chunks in turn,
// then the steady state's pairs (F of chunk 0 and B of chunk 1, F of chunk 1
// and B of chunk 0), each B with its W, and ends on two Bs whose Ws come
// last; device 0 ends on chunk 0's Bs with their Ws deferred behind them.
TEST(DualPipeV, TwoDevicesFourMicrobatches) {
  const Schedule s = make_schedule(ScheduleKind::dual_pipe_v, 2, 4, 2);
  EXPECT_EQ(render_schedule_text(s, simulate(s, split_costs())),
            "dualpipev p=2 m=4 v=2, one column = 1 time unit\n"
            "dev 0: F0c0 F1c0 F2c0 F0c1 B0c1 W0c1 F1c1 F3c0 B1c1 W1c1 F2c1 B0c0 W0c0 B2c1 W2c1 F3c1 B1c0 W1c0 B3c1 "
            "W3c1 B2c0 W2c0 .    B3c0 W3c0\n"
            "dev 1: .    F0c0 F0c1 F1c0 F1c1 F2c0 B0c1 W0c1 F2c1 B0c0 W0c0 F3c0 B1c1 W1c1 F3c1 B1c0 W1c0 B2c1 W2c1 "
            "B2c0 W2c0 B3c1 B3c0 W3c1 W3c0\n"
            "bubble: 4.0%\n");
}

// With F = B = W it reaches zbv's bound, 6m + p - 1 units, for every m it
// takes (2p and more), and holds one chunk of activations more than zbv on
// device 0 (2p + 1: its warm-up's last forward runs before the first
// backward's W), at most that on the others.
TEST(DualPipeV, ReachesTheBoundWithOneChunkMoreThanZbv) {
  const UnitCosts costs = split_costs();
  for (int p = 1; p <= 8; ++p)
    for (int m = 2 * p; m <= 4 * p + 4; ++m) {
      SCOPED_TRACE(fmt::format("p={} m={}", p, m));
      const Schedule s = make_schedule(ScheduleKind::dual_pipe_v, p, m, 2);
      const Simulation sim = simulate(s, costs);
      EXPECT_DOUBLE_EQ(sim.makespan, 6.0 * m + p - 1);
      EXPECT_EQ(theoretical_bubble(s, costs), std::nullopt);
      EXPECT_EQ(held_at_peak(s, 0), 2 * p + 1);
      for (int d = 1; d < p; ++d) EXPECT_LE(held_at_peak(s, d), 2 * p + 1) << "device " << d;
    }
}

// Each chunk's forwards and backwards run their micro-batches in order, and
// every W follows its own B (deferred ones oldest first).
TEST(DualPipeV, RunsEachChunksMicrobatchesInOrder) {
  const Schedule s = make_schedule(ScheduleKind::dual_pipe_v, 4, 11, 2);
  for (int d = 0; d < 4; ++d) {
    int next[3][2] = {};
    for (const Action& a : s.per_device[static_cast<size_t>(d)]) {
      if (!is_compute(a.kind)) continue;
      const int kind = a.kind == ActionKind::forward ? 0 : a.kind == ActionKind::backward_input ? 1 : 2;
      EXPECT_EQ(a.microbatch, next[kind][s.chunk_of(a.stage)]++) << "device " << d << ": " << format_action(a);
    }
  }
}

TEST(DualPipeV, RefusesTooFewMicrobatchesAndOtherChunkCounts) {
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::dual_pipe_v, 4, 7, 2); }),
            "dualpipev needs at least 2 micro-batches per device (8 on 4 devices), got 7");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::dual_pipe_v, 1, 1, 2); }),
            "dualpipev needs at least 2 micro-batches per device (2 on 1 device), got 1");
  EXPECT_EQ(error_of([] { chunks_per_device(ScheduleKind::dual_pipe_v, 4); }),
            "dualpipev places 2 chunks on each device (the arms of its V), not 4; more chunks per device are "
            "interleaved's");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::dual_pipe_v, 2, 4, 1); }),
            "dualpipev places 2 chunks on each device, got 1 virtual stages");
}

}  // namespace
}  // namespace pf
