// What the schedule tests share: unit costs of a split backward, and a
// device's peak of held activations.
#pragma once

#include <algorithm>

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

}  // namespace pf::testing_support
