// The memory of the machine this process runs on.
#include "support/host_memory.h"

#include <unistd.h>

namespace pf {

double host_memory_bytes() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page <= 0) return 0;
  return static_cast<double>(pages) * static_cast<double>(page);
}

}  // namespace pf
