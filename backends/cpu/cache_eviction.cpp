// Drops buffers from the caches line by line.
#include "backends/cpu/cache_eviction.h"

#include <emmintrin.h>

namespace pf::cpu {

void evict_from_caches(const void* data, int64_t bytes) {
  constexpr int64_t kLine = 64;
  const auto* first = static_cast<const char*>(data);
  // From the line holding the first byte to the one holding the last.
  const auto start = reinterpret_cast<uintptr_t>(first) % kLine;
  for (int64_t at = -static_cast<int64_t>(start); at < bytes; at += kLine) _mm_clflush(first + at);
  // CLFLUSH is ordered by a fence only: the timed run starts after it.
  _mm_mfence();
}

}  // namespace pf::cpu
