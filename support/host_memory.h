// The memory of the machine this process runs on.
#pragma once

namespace pf {

/// This machine's physical memory in bytes; 0 where the system does not say.
/// Work that would need more is refused up front: it would page for minutes,
/// or be killed, before anything failed.
double host_memory_bytes();

}  // namespace pf
