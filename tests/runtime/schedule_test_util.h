// What the schedule tests share: unit costs of a split backward, a device's
// peak of held activations, and the generated shapes the file formats read back.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "runtime/schedule.h"

namespace pf::testing_support {

/// F = B = W = 1 per chunk (a fused backward: 2).
inline UnitCosts split_costs() {
  UnitCosts costs;
  costs.forward = costs.backward_input = costs.backward_weight = 1;
  return costs;
}

/// The most chunk-micro-batches of activations `device` holds at once: a
/// forward adds one, its W (or fused backward) frees it.
inline int held_at_peak(const Schedule& s, int device) {
  int held = 0, peak = 0;
  for (const Action& a : s.per_device[static_cast<size_t>(device)]) {
    if (a.kind == ActionKind::forward) peak = std::max(peak, ++held);
    if (a.kind == ActionKind::backward_weight || a.kind == ActionKind::backward) --held;
  }
  return peak;
}

/// A generated schedule's shape: its kind, devices, micro-batches, chunks.
struct GeneratedShape {
  ScheduleKind kind;
  int devices, microbatches, chunks;
};

/// Every kind in the shapes that test a file format: several chunks, a V,
/// fewer micro-batches than devices, a wave of chunks in a loop.
inline std::vector<GeneratedShape> generated_shapes() {
  return {
      {ScheduleKind::gpipe, 3, 5, 1},          {ScheduleKind::one_f_one_b, 4, 8, 1},
      {ScheduleKind::one_f_one_b, 4, 2, 1},    {ScheduleKind::interleaved, 2, 4, 2},
      {ScheduleKind::interleaved, 4, 8, 3},    {ScheduleKind::zb_h1, 4, 8, 1},
      {ScheduleKind::zb_v, 2, 4, 2},           {ScheduleKind::zb_v, 4, 8, 2},
      {ScheduleKind::zb_interleaved, 4, 8, 2}, {ScheduleKind::dual_pipe_v, 3, 6, 2},
      {ScheduleKind::looped_bfs, 3, 4, 2},
  };
}

/// `read`, a file's lists, runs what `generated` runs: its devices,
/// micro-batches, chunks, placement, backward and every action in order
/// (its kind is custom).
inline void expect_same_lists(const Schedule& read, const Schedule& generated) {
  EXPECT_EQ(read.kind, ScheduleKind::custom);
  EXPECT_EQ(read.devices, generated.devices);
  EXPECT_EQ(read.microbatches, generated.microbatches);
  EXPECT_EQ(read.virtual_stages, generated.virtual_stages);
  EXPECT_EQ(read.placement, generated.placement);
  EXPECT_EQ(read.split_backward, generated.split_backward);
  EXPECT_EQ(read.per_device, generated.per_device);
}

}  // namespace pf::testing_support
