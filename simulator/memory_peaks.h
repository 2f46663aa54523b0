// Memory of each stage and device over a simulated step, and its peaks.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/schedule.h"

namespace pf {

/// Per stage: what it holds all step (weights, gradients, optimizer state)
/// and what one micro-batch in flight adds (its stash slot).
struct StageMemory {
  int64_t static_bytes = 0;
  int64_t slot_bytes = 0;
};

struct MemoryPeaks {
  std::vector<int64_t> per_stage;   // static + slot * the most micro-batches it held at once
  std::vector<int64_t> per_device;  // the most its stages held at one moment together
};

/// Walks each device's timed actions in order: a micro-batch's slot is taken
/// when its forward starts and given back when its last backward action
/// (backward, or backward_weight where the backward is split) ends, as the
/// runtime's stash slots are. Stage s is on device schedule.device_of(s).
MemoryPeaks memory_peaks(const Schedule& schedule, const Simulation& sim, const std::vector<StageMemory>& stages);

}  // namespace pf
