// A simulated step as a run's trace.
#include "simulator/simulator.h"

#include <algorithm>

namespace pf {

std::vector<TraceEvent> simulation_trace(const PlanSimulation& sim) {
  std::vector<TraceEvent> events;
  for (size_t d = 0; d < sim.timeline.per_device.size(); ++d)
    for (const TimedAction& t : sim.timeline.per_device[d])
      if (t.action.kind != ActionKind::step) events.push_back({static_cast<int>(d), t.action, t.start, t.end});
  // Each device's optimizer pass, as a run's trace shows it.
  for (size_t d = 0; d < sim.devices.size(); ++d)
    if (sim.devices[d].optimizer_s > 0)
      events.push_back({static_cast<int>(d), Action{ActionKind::step, -1, -1, -1}, sim.update_start_s,
                        sim.update_start_s + sim.devices[d].optimizer_s});
  // In the order of a run's trace: by start.
  std::stable_sort(events.begin(), events.end(),
                   [](const TraceEvent& a, const TraceEvent& b) { return a.start_s < b.start_s; });
  return events;
}

}  // namespace pf
