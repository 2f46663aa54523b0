// A caching allocator: size classes, one free list per (stream, class), so that steady-state steps never call cudaMalloc.
#include "backends/cuda/allocator.h"

#include <fmt/format.h>

#include <bit>

#include "ir/align.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {
constexpr size_t kMinBlock = 512;
constexpr size_t kSmallLimit = size_t{1} << 20;  // 1 MiB
constexpr size_t kLargeStep = size_t{2} << 20;   // 2 MiB
}  // namespace

size_t CachingAllocator::size_class(size_t bytes) {
  if (bytes <= kMinBlock) return kMinBlock;
  if (bytes <= kSmallLimit) return std::bit_ceil(bytes);
  return align_up(bytes, kLargeStep);
}

CachingAllocator::CachingAllocator(RawAllocator raw) : raw_(raw) {}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void* CachingAllocator::allocate(size_t bytes, StreamKey stream) {
  const size_t cls = size_class(bytes);
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = free_.find({stream, cls});
  if (it != free_.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    live_.emplace(p, Block{cls, stream});
    stats_.bytes_cached -= static_cast<int64_t>(cls);
    stats_.bytes_in_use += static_cast<int64_t>(cls);
    ++stats_.reuses;
    return p;
  }
  void* p = raw_.allocate(cls, raw_.user);
  if (!p && stats_.bytes_cached > 0) {
    // Blocks cached for other classes or streams may be what is missing.
    release_cached_locked();
    p = raw_.allocate(cls, raw_.user);
  }
  if (!p)
    throw Error(fmt::format("out of device memory: allocating {} bytes (class {}) with {} bytes in use", bytes, cls,
                            stats_.bytes_in_use));
  live_.emplace(p, Block{cls, stream});
  stats_.bytes_in_use += static_cast<int64_t>(cls);
  ++stats_.raw_allocations;
  return p;
}

void CachingAllocator::deallocate(void* p) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = live_.find(p);
  if (it == live_.end()) throw Error(fmt::format("caching allocator: {} was not allocated here or is freed twice", p));
  const Block b = it->second;
  live_.erase(it);
  free_[{b.stream, b.bytes}].push_back(p);
  stats_.bytes_in_use -= static_cast<int64_t>(b.bytes);
  stats_.bytes_cached += static_cast<int64_t>(b.bytes);
}

void CachingAllocator::release_cached() {
  std::lock_guard<std::mutex> lock(mutex_);
  release_cached_locked();
}

void CachingAllocator::release_cached_locked() {
  for (auto& [key, blocks] : free_)
    for (void* p : blocks) raw_.release(p, raw_.user);
  free_.clear();
  stats_.bytes_cached = 0;
}

CachingAllocator::Stats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace pf::cuda
