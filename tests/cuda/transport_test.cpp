// Peer copies between the GPUs of one process (one GPU: a same-device copy).
#include "backends/cuda/transport.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "tests/cuda/cuda_test_util.h"

namespace pf::cuda {
namespace {

using testing::DeviceBuffer;

TEST(PeerCopy, OneDeviceIsASameDeviceCopy) {
  PF_REQUIRE_CUDA();
  EXPECT_TRUE(enable_peer_access(0, 0));
  std::vector<float> host(1000);
  std::iota(host.begin(), host.end(), 0.f);
  DeviceBuffer src(host.data(), host.size() * sizeof(float)), dst(host.size() * sizeof(float));
  CudaDevice device(0, 1);
  copy_peer_async(dst.get(), 0, src.get(), 0, host.size() * sizeof(float), device.stream(0));
  device.synchronize(0);
  std::vector<float> back(host.size());
  PF_CUDA_CHECK(cudaMemcpy(back.data(), dst.get(), back.size() * sizeof(float), cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, host);
}

TEST(PeerCopy, TwoDevicesCopyWithOrWithoutPeerAccess) {
  PF_REQUIRE_CUDA();
  if (device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices, " << device_count() << " visible";
  const bool direct = enable_peer_access(0, 1);
  std::vector<int32_t> host(4096);
  std::iota(host.begin(), host.end(), 7);
  PF_CUDA_CHECK(cudaSetDevice(0));
  DeviceBuffer src(host.data(), host.size() * 4);
  PF_CUDA_CHECK(cudaSetDevice(1));
  DeviceBuffer dst(host.size() * 4);
  CudaDevice device(0, 1);
  copy_peer_async(dst.get(), 1, src.get(), 0, host.size() * 4, device.stream(0));
  device.synchronize(0);
  std::vector<int32_t> back(host.size());
  PF_CUDA_CHECK(cudaMemcpy(back.data(), dst.get(), back.size() * 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(back, host) << (direct ? "with" : "without") << " peer access";
}

}  // namespace
}  // namespace pf::cuda
