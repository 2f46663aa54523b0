// Memory over a simulated step.
#include "simulator/memory_peaks.h"

#include <algorithm>

namespace pf {

MemoryPeaks memory_peaks(const Schedule& schedule, const Simulation& sim, const std::vector<StageMemory>& stages) {
  const size_t n = stages.size();
  // Whether each stage's backward comes in two actions: then W frees the slot.
  std::vector<bool> split(n, false);
  for (const auto& list : schedule.per_device)
    for (const Action& a : list)
      if (a.kind == ActionKind::backward_weight) split[static_cast<size_t>(a.stage)] = true;
  MemoryPeaks peaks;
  peaks.per_stage.assign(n, 0);
  peaks.per_device.assign(sim.per_device.size(), 0);
  std::vector<int64_t> held(n, 0);
  for (size_t d = 0; d < sim.per_device.size(); ++d) {
    int64_t device = 0;
    for (size_t s = 0; s < n; ++s)
      if (schedule.device_of(static_cast<int>(s)) == static_cast<int>(d)) {
        held[s] = stages[s].static_bytes;
        peaks.per_stage[s] = held[s];
        device += held[s];
      }
    peaks.per_device[d] = device;
    // A device runs one action at a time, so its list's order is the order in time.
    for (const TimedAction& t : sim.per_device[d]) {
      const Action& a = t.action;
      if (!is_compute(a.kind)) continue;
      const auto s = static_cast<size_t>(a.stage);
      int64_t change = 0;
      if (a.kind == ActionKind::forward) change = stages[s].slot_bytes;
      if (a.kind == (split[s] ? ActionKind::backward_weight : ActionKind::backward)) change = -stages[s].slot_bytes;
      held[s] += change;
      device += change;
      peaks.per_stage[s] = std::max(peaks.per_stage[s], held[s]);
      peaks.per_device[d] = std::max(peaks.per_device[d], device);
    }
  }
  return peaks;
}

}  // namespace pf
