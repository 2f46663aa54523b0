// Transports: the file-store rendezvous (runs everywhere), peer copies (one GPU: a same-device copy), NCCL send/recv between two ranks.
#include "backends/cuda/transport.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "comm/file_store.h"
#include "ir/diagnostic.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/temp_dir.h"

namespace pf::cuda {
namespace {

using namespace std::chrono_literals;
using testing::DeviceBuffer;

using testing_support::TempDir;

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

// Two ranks as threads of this process, one GPU each: NCCL rejects two ranks
// of one communicator on the same GPU, so this needs two.
TEST(NcclTransport, TwoRanksSendAndReceive) {
  PF_REQUIRE_CUDA();
  if (device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices (NCCL allows one rank per GPU), " << device_count()
                                       << " visible";
  TempDir dir;
  pf::FileStore store(dir.str(), 30000ms);
  constexpr size_t kCount = 1 << 16;
  std::vector<float> received(kCount);
  auto rank = [&](int r) {
    NcclTransport t(store, "pair.id", r, 2, r);
    cudaStream_t stream;
    PF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    if (r == 0) {
      std::vector<float> host(kCount);
      std::iota(host.begin(), host.end(), 1.f);
      DeviceBuffer buf(host.data(), kCount * sizeof(float));
      t.send(buf.get(), kCount * sizeof(float), 1, stream);
      PF_CUDA_CHECK(cudaStreamSynchronize(stream));
    } else {
      DeviceBuffer buf(kCount * sizeof(float));
      t.recv(buf.get(), kCount * sizeof(float), 0, stream);
      PF_CUDA_CHECK(cudaStreamSynchronize(stream));
      PF_CUDA_CHECK(cudaMemcpy(received.data(), buf.get(), kCount * sizeof(float), cudaMemcpyDeviceToHost));
    }
    PF_CUDA_CHECK(cudaStreamDestroy(stream));
  };
  std::thread r1([&] { rank(1); });
  rank(0);
  r1.join();
  for (size_t i = 0; i < kCount; ++i) ASSERT_EQ(received[i], static_cast<float>(i + 1)) << "element " << i;
}

}  // namespace
}  // namespace pf::cuda
