// Staging NCCL messages through pinned host and device blocks.
#include "comm/nccl_staging.h"

#include <algorithm>

#include "backends/cuda/check.h"

namespace pf::nccl_staging {

BlockPool::~BlockPool() {
  for (const Block& b : blocks_) (void)(device_ ? cudaFree(b.p) : cudaFreeHost(b.p));
}

std::byte* BlockPool::acquire(size_t bytes) {
  for (Block& b : blocks_)
    if (!b.used && b.bytes >= bytes) {
      b.used = true;
      return b.p;
    }
  const size_t size = std::max<size_t>(bytes, 4096);
  void* p = nullptr;
  if (device_)
    PF_CUDA_CHECK(cudaMalloc(&p, size));
  else
    PF_CUDA_CHECK(cudaMallocHost(&p, size));
  blocks_.push_back({static_cast<std::byte*>(p), size, true});
  return blocks_.back().p;
}

void BlockPool::release(std::byte* p) {
  for (Block& b : blocks_)
    if (b.p == p) b.used = false;
}

Transfer::Transfer(BlockPool& host_pool, BlockPool& device_pool, cudaStream_t stream, size_t bytes)
    : host_pool_(host_pool), device_pool_(device_pool), stream_(stream) {
  PF_CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
  if (bytes == 0) return;
  host = host_pool.acquire(bytes);
  device = device_pool.acquire(bytes);
}

Transfer::~Transfer() {
  if (done_) (void)cudaEventDestroy(done_);
  if (!complete) return;
  if (host) host_pool_.release(host);
  if (device) device_pool_.release(device);
}

void Transfer::record() { PF_CUDA_CHECK(cudaEventRecord(done_, stream_)); }

bool on_device(const void* p) {
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    (void)cudaGetLastError();  // an unknown pointer: host memory
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

}  // namespace pf::nccl_staging
