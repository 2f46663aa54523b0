// Helpers of the CUDA tests: the skip without a GPU, and host <-> device copies.
#pragma once

#include <gtest/gtest.h>

#include <cstddef>
#include <string>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/device.h"

/// Skips the calling test, loudly, where no GPU is visible.
#define PF_REQUIRE_CUDA()                                        \
  do {                                                           \
    std::string why_;                                            \
    if (!::pf::cuda::cuda_available(&why_))                      \
      GTEST_SKIP() << "no CUDA device (" << why_ << ")";         \
  } while (0)

namespace pf::cuda::testing {

/// A device copy of `bytes` host bytes (cudaMalloc'd: the tests do not go
/// through the caching allocator unless they test it), freed on destruction.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) { PF_CUDA_CHECK(cudaMalloc(&p_, bytes ? bytes : 1)); }
  DeviceBuffer(const void* host, size_t bytes) : DeviceBuffer(bytes) {
    if (bytes) PF_CUDA_CHECK(cudaMemcpy(p_, host, bytes, cudaMemcpyHostToDevice));
  }
  ~DeviceBuffer() { (void)cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), bytes_(o.bytes_) { o.p_ = nullptr; }

  void* get() const { return p_; }
  std::vector<std::byte> read() const {
    std::vector<std::byte> out(bytes_);
    if (bytes_) PF_CUDA_CHECK(cudaMemcpy(out.data(), p_, bytes_, cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

}  // namespace pf::cuda::testing
