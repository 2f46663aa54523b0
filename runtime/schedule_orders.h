// Compute orders: what each device of a schedule runs, before the transfers are added.
#pragma once

#include <vector>

#include "runtime/schedule.h"

namespace pf::schedule_orders {

/// A compute action before placement: which chunk of its device it runs.
struct Work {
  ActionKind kind;
  int microbatch;
  int chunk;
};

/// Per device, its compute actions in running order.
using DeviceOrders = std::vector<std::vector<Work>>;

/// The schedule whose devices run `orders`, each action with the transfers
/// it implies (the receive of its input right before it, the send of its
/// output right after) and a step closing every list.
Schedule schedule_from_orders(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                              const DeviceOrders& orders);

/// ZB-V on `devices` devices (two chunks each, placed as a V) and
/// `microbatches` micro-batches: the better on unit costs of the V's
/// steady-state pattern and a greedy list schedule (see the definition).
Schedule zero_bubble_v(int devices, int microbatches);

}  // namespace pf::schedule_orders
