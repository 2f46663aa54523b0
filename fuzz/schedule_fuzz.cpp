// The schedule readers on any bytes, as Pipeforge's schedule text and as
// PyTorch's schedule CSV: a bad file must give pf::Error, and a good one must
// write out in its format to a file that reads back to the same lists.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"

namespace {

using Reader = pf::Schedule (*)(std::string_view, const std::string&);
using Writer = std::string (*)(const pf::Schedule&);

void round_trip(const std::string& text, Reader read, Writer write) {
  std::optional<pf::Schedule> schedule;
  try {
    schedule = read(text, "fuzz.schedule");
  } catch (const pf::Error&) {
    return;
  }
  const pf::Schedule again = read(write(*schedule), "again.schedule");
  if (again.per_device != schedule->per_device || again.placement != schedule->placement) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  round_trip(text, pf::read_schedule_text, pf::write_schedule_text);
  round_trip(text, pf::read_torch_schedule_csv, pf::write_torch_schedule_csv);
  return 0;
}
