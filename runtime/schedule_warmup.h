// More forwards ahead of the first backward: 1F1B with slack against jitter.
#pragma once

#include "runtime/schedule.h"

namespace pf {

/// `schedule` (one model chunk per device: 1f1b, zb1, or lists of one's
/// own) with every forward moved `extra` input gradients earlier on every
/// device but the last: `extra` more forwards before the first backward,
/// then, as before, the forwards between the backwards, the weight
/// gradients where they were. On steady costs the step is the same (each
/// device's first backward still waits for the last device's); what
/// changes is that each device holds `extra` more activations and has them
/// to run while a neighbour's action runs late, where 1F1B on two devices
/// waits on the other device at every action of its steady state. The
/// last device gains nothing from a forward run early (its backward is next
/// on the critical path), so it keeps its order. Returns custom lists (a
/// schedule file writes them; the kind is gone), proven to run; throws
/// Error for several chunks per device, gpipe's order (every forward ahead
/// already) or a negative `extra`.
Schedule with_extra_warmup(const Schedule& schedule, int extra);

}  // namespace pf
