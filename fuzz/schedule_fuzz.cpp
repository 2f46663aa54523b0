// The schedule file reader on any bytes: a bad file must give pf::Error, and
// a good one must write out to text that reads back to the same lists.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  std::optional<pf::Schedule> schedule;
  try {
    schedule = pf::read_schedule_text(text, "fuzz.schedule");
  } catch (const pf::Error&) {
    return 0;
  }
  const pf::Schedule again = pf::read_schedule_text(pf::write_schedule_text(*schedule), "again.schedule");
  if (again.per_device != schedule->per_device || again.placement != schedule->placement) __builtin_trap();
  return 0;
}
