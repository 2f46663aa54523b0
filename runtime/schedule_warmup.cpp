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
  if (schedule.kind != ScheduleKind::one_f_one_b)
    throw Error(fmt::format("extra warm-up forwards apply to 1f1b, whose devices alternate a forward and a backward "
                            "after their warm-up, not to {}",
                            schedule_kind_name(schedule.kind)));
  if (extra < 0) throw Error(fmt::format("extra warm-up forwards cannot be negative, got {}", extra));
  using schedule_orders::Work;
  schedule_orders::DeviceOrders orders(static_cast<size_t>(schedule.devices));
  for (int d = 0; d < schedule.devices; ++d) {
    std::vector<Work> forwards, backwards;
    int ahead = -1;  // forwards before the first backward
    for (const Action& a : schedule.per_device[static_cast<size_t>(d)]) {
      if (!is_compute(a.kind)) continue;
      const Work work{a.kind, a.microbatch, schedule.chunk_of(a.stage)};
      if (a.kind == ActionKind::forward) {
        forwards.push_back(work);
      } else {
        if (ahead < 0) ahead = static_cast<int>(forwards.size());
        backwards.push_back(work);
      }
    }
    const int all = static_cast<int>(forwards.size());
    if (ahead < 0) ahead = all;
    if (d + 1 < schedule.devices) ahead = std::min(ahead + extra, all);
    // one_f_one_b_order runs a forward before the first backward after its
    // warm-up, while one is left.
    const int warmup = ahead < all ? ahead - 1 : all;
    orders[static_cast<size_t>(d)] = schedule_orders::one_f_one_b_order(forwards, backwards, warmup);
  }
  Schedule eager = schedule_orders::schedule_from_orders(ScheduleKind::custom, schedule.devices,
                                                         schedule.microbatches, schedule.virtual_stages, orders,
                                                         schedule.placement, schedule.split_backward);
  validate(eager);
  return eager;
}

}  // namespace pf
