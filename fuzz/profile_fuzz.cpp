// A device profile's JSON (pipeforge profile's output, compile --profile's
// input) on any bytes: a bad one must give pf::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ir/diagnostic.h"
#include "partitioner/device_profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    pf::profile_from_json(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
  } catch (const pf::Error&) {
  }
  return 0;
}
