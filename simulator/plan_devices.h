// How each device of a plan is priced: its profile and its speed.
#pragma once

#include <vector>

#include "partitioner/device_profile.h"
#include "plan/plan.h"

namespace pf {

/// Per device of `plan` (Plan::devices order) the profile and speed the
/// compiler's --devices list gives it (parse_device_entries): a device of
/// `reference`'s name is priced by `reference` itself (measured times
/// included), another kind by its built-in roofline at the reference's
/// precision, with a speed of its matmul rate over the reference's. A
/// device's kind is its name up to ':'.
std::vector<DeviceEntry> plan_device_entries(const Plan& plan, const DeviceProfile& reference);

}  // namespace pf
