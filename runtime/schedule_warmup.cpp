// More forwards ahead of the first backward.
#include "runtime/schedule_warmup.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"
#include "runtime/schedule_orders.h"

namespace pf {

Schedule with_extra_warmup(const Schedule& schedule, int extra) {
  // Interleaved chunks would need the last device to run ahead too (a
  // forward of device 0's second chunk waits on the last device's first),
  // which delays the backward everything waits on.
  if (schedule.virtual_stages != 1)
    throw Error(fmt::format("extra warm-up forwards run ahead on devices of one model chunk, and {} gives each "
                            "device {}",
                            schedule_kind_name(schedule.kind), schedule.virtual_stages));
  if (schedule.kind == ScheduleKind::gpipe || schedule.kind == ScheduleKind::looped_bfs)
    throw Error(fmt::format("{} runs every forward before its first backward already: extra warm-up forwards change "
                            "nothing",
                            schedule_kind_name(schedule.kind)));
  if (extra < 0) throw Error(fmt::format("extra warm-up forwards cannot be negative, got {}", extra));
  using schedule_orders::Work;
  schedule_orders::DeviceOrders orders(static_cast<size_t>(schedule.devices));
  for (int d = 0; d < schedule.devices; ++d) {
    // Each forward moves `extra` input gradients earlier (none before the
    // first); the other actions keep their order, a W its place after its B.
    const int ahead = d + 1 < schedule.devices ? extra : 0;
    std::vector<Work> forwards, others;
    std::vector<int> before;  // per forward: the input gradients it now precedes
    int gradients = 0;
    for (const Action& a : schedule.per_device[static_cast<size_t>(d)]) {
      if (!is_compute(a.kind)) continue;
      const Work work{a.kind, a.microbatch, 0};
      if (a.kind == ActionKind::forward) {
        forwards.push_back(work);
        before.push_back(std::max(0, gradients - ahead));
        continue;
      }
      if (a.kind != ActionKind::backward_weight) ++gradients;
      others.push_back(work);
    }
    std::vector<Work>& order = orders[static_cast<size_t>(d)];
    size_t next = 0;
    int seen = 0;
    for (const Work& w : others) {
      if (w.kind != ActionKind::backward_weight) {
        while (next < forwards.size() && before[next] <= seen) order.push_back(forwards[next++]);
        ++seen;
      }
      order.push_back(w);
    }
    order.insert(order.end(), forwards.begin() + static_cast<std::ptrdiff_t>(next), forwards.end());
  }
  Schedule eager = schedule_orders::schedule_from_orders(ScheduleKind::custom, schedule.devices,
                                                         schedule.microbatches, schedule.virtual_stages, orders,
                                                         schedule.placement, schedule.split_backward);
  validate(eager);
  return eager;
}

}  // namespace pf
