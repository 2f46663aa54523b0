// The plan loader on any bytes: the JSON, every field, the topology and
// each stage's program (parsed and verified). A bad plan must give
// pf::Error.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "plan/plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    std::vector<pf::Module> programs;
    pf::plan_from_json(text, "fuzz.json", &programs);
  } catch (const pf::Error&) {
  }
  return 0;
}
