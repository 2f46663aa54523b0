// The profiles and speeds of a plan's devices.
#include "simulator/plan_devices.h"

#include <fmt/format.h>

namespace pf {

std::vector<DeviceEntry> plan_device_entries(const Plan& plan, const DeviceProfile& reference) {
  // The plan's devices as a --devices list of one device per entry, so that
  // each is priced exactly as the compiler priced it.
  std::string list;
  for (const PlanDevice& d : plan.devices) {
    if (!list.empty()) list += ',';
    list += d.name.substr(0, d.name.find(':'));
    if (d.threads > 1) list += fmt::format(":1x{}", d.threads);
  }
  return parse_device_entries(list, reference);
}

}  // namespace pf
