// A cluster description (compile --cluster) on any bytes, and the links it
// gives between its devices: a bad one must give pf::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ir/diagnostic.h"
#include "partitioner/device_profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const pf::Cluster cluster = pf::cluster_from_json(std::string(reinterpret_cast<const char*>(data), size),
                                                      "fuzz.json");
    pf::pipeline_link(cluster, 8);
    pf::replica_link(cluster, 4, 2);
  } catch (const pf::Error&) {
  }
  return 0;
}
