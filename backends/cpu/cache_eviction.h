// Dropping memory from the CPU's caches, so that a timing sees it as a training step does.
#pragma once

#include <cstdint>

namespace pf::cpu {

/// Writes [data, data + bytes) back to memory where it changed and drops
/// its lines from every level of cache (CLFLUSH: any x86-64 CPU). A step
/// that cycles through more weights and stashed activations than the caches
/// hold finds each layer's cold when it comes back to it, a micro-batch
/// later; an op timed again and again on the same buffers finds them warm.
void evict_from_caches(const void* data, int64_t bytes);

}  // namespace pf::cpu
