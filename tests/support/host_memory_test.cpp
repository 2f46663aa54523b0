// host_memory_bytes against the kernel's own account of the machine's memory.
#include "support/host_memory.h"

#include <gtest/gtest.h>

#include <fstream>
#include <string>

namespace pf {
namespace {

TEST(HostMemory, IsTheMemTotalOfProcMeminfo) {
  std::ifstream meminfo("/proc/meminfo");
  // Outside Linux there is no kernel account to compare with.
  if (!meminfo) GTEST_SKIP() << "no /proc/meminfo (not Linux): nothing to compare host_memory_bytes with";
  std::string line;
  while (std::getline(meminfo, line) && !line.starts_with("MemTotal:")) {
  }
  ASSERT_TRUE(line.starts_with("MemTotal:")) << "no MemTotal in /proc/meminfo";
  const double kib = std::stod(line.substr(line.find(':') + 1));  // "MemTotal:  24576000 kB"
  EXPECT_EQ(host_memory_bytes(), kib * 1024);
}

}  // namespace
}  // namespace pf
