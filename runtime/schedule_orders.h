// Compute orders: what each device of a schedule runs, before the transfers are added.
#pragma once

#include <optional>
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

/// make_schedule, on `costs` where the kind's order depends on them (zbi;
/// nullptr: unit costs).
Schedule build_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                        const ActionCosts* costs);

/// The schedule whose devices run `orders`, each action with the transfers
/// it implies (the receive of its input right before it, the send of its
/// output right after) and a step closing every list.
Schedule schedule_from_orders(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                              const DeviceOrders& orders);
/// The same with the stages placed and the backward split as given (a
/// schedule file's), not as `kind` says.
Schedule schedule_from_orders(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                              const DeviceOrders& orders, StagePlacement placement, bool split_backward);

/// Zero bubble over `chunks` >= 2 round-robin chunks per device (zbi): the
/// shortest on `costs` (nullptr: F = B = W = 1) of list schedules that keep
/// at most `devices` micro-batches between their first forward and their
/// last input gradient, and `interleaved` (interleaved 1F1B's orders with
/// each backward split), none holding more on any stage than the list
/// schedule on unit costs does (see the definition).
Schedule zero_bubble_interleaved(int devices, int microbatches, int chunks, const ActionCosts* costs,
                                 const DeviceOrders& interleaved);

/// ZB-V on `devices` devices (two chunks each, placed as a V) and
/// `microbatches` micro-batches: the better on unit costs of the V's
/// steady-state pattern and a greedy list schedule (see the definition).
Schedule zero_bubble_v(int devices, int microbatches);

/// DualPipeV on `devices` devices (two chunks each, placed as a V) and
/// `microbatches` >= 2 * devices micro-batches (see the definition). Throws
/// Error for fewer.
Schedule dual_pipe_v(int devices, int microbatches);

}  // namespace pf::schedule_orders
