// A caching allocator: size classes, one free list per (stream, class), so that steady-state steps never call cudaMalloc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pf::cuda {

/// Where the allocator gets and returns memory: cudaMalloc/cudaFree on a
/// device (see CudaDevice), or anything else in tests. `allocate` returns
/// nullptr when out of memory (any other failure throws).
struct RawAllocator {
  void* (*allocate)(size_t bytes, void* user) = nullptr;
  void (*release)(void* p, void* user) = nullptr;
  void* user = nullptr;
};

/// Memory in size classes, kept when freed and handed out again.
///
/// Classes: up to 1 MiB, the next power of two (at least 512 bytes); above,
/// the next multiple of 2 MiB, so that large activations of slightly
/// different sizes share blocks without wasting more than 2 MiB each.
///
/// Streams: a block freed by work on stream S goes back to S's list and is
/// handed out again only for S, so that work queued on S before the free
/// (which may still read the block) runs before any new use of it, by stream
/// order, without a host synchronisation. Using a block on another stream is
/// the caller's business: order it with an event first.
///
/// When the raw allocator runs out, every cached block is released and the
/// allocation retried once; then pf::Error names the request and the
/// allocator's state. Thread-safe (stages on different threads share a device).
class CachingAllocator {
 public:
  using StreamKey = const void*;  // a cudaStream_t, or any key in tests

  struct Stats {
    int64_t bytes_in_use = 0;    // handed out, by class size
    int64_t bytes_cached = 0;    // kept in free lists
    int64_t raw_allocations = 0; // calls to RawAllocator::allocate that succeeded
    int64_t reuses = 0;          // allocations served from a free list
  };

  explicit CachingAllocator(RawAllocator raw);
  /// Releases every cached block; blocks still handed out are leaked to the
  /// raw allocator's owner (a device frees everything when it is reset).
  ~CachingAllocator();
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  /// At least `bytes` (0 gives a block of the smallest class) for use on `stream`.
  void* allocate(size_t bytes, StreamKey stream);
  /// Returns a block from allocate() to its stream's free list; nullptr is ignored.
  void deallocate(void* p);
  /// Releases every cached block to the raw allocator (the caller makes sure
  /// no queued work still reads them: cudaFree itself waits for the device).
  void release_cached();
  Stats stats() const;

  /// The class a request of `bytes` is served from.
  static size_t size_class(size_t bytes);

 private:
  struct Block {
    size_t bytes;
    StreamKey stream;
  };
  void release_cached_locked();

  RawAllocator raw_;
  mutable std::mutex mutex_;
  std::map<std::pair<StreamKey, size_t>, std::vector<void*>> free_;  // (stream, class) -> blocks
  std::unordered_map<void*, Block> live_;                            // handed out
  Stats stats_;
};

}  // namespace pf::cuda
