// How the NCCL communicator stages a message that is not in device memory:
// reusable blocks of pinned host and device memory, and one transfer's
// blocks and completion event. Internal to nccl_communicator.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <vector>

namespace pf::nccl_staging {

/// Blocks of pinned host or device memory, reused: freeing either would
/// synchronise the device, which may be waiting on another rank.
class BlockPool {
 public:
  explicit BlockPool(bool device) : device_(device) {}
  ~BlockPool();
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  /// A free block of at least `bytes`, allocated when none is.
  std::byte* acquire(size_t bytes);
  void release(std::byte* p);

 private:
  struct Block {
    std::byte* p;
    size_t bytes;
    bool used;
  };
  bool device_;
  std::vector<Block> blocks_;
};

/// One operation on a stream: its staging blocks (a pinned and a device one
/// of `bytes`, or none) and the event after its last step. Its blocks go
/// back to the pools only once it completed: after a failure a copy into
/// them may still come, so they stay taken.
class Transfer {
 public:
  Transfer(BlockPool& host_pool, BlockPool& device_pool, cudaStream_t stream, size_t bytes);
  ~Transfer();
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  void record();
  cudaEvent_t done() const { return done_; }
  cudaStream_t stream() const { return stream_; }

  std::byte* host = nullptr;
  std::byte* device = nullptr;
  bool complete = false;

 private:
  BlockPool& host_pool_;
  BlockPool& device_pool_;
  cudaStream_t stream_;
  cudaEvent_t done_ = nullptr;
};

/// Whether NCCL may read or write `p` in place: device (or managed) memory.
/// Host memory, pinned or not, is staged.
bool on_device(const void* p);

}  // namespace pf::nccl_staging
