// The communicator between GPU processes, as two ranks on threads of this process, one GPU each.
#include "comm/nccl_communicator.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "comm/file_store.h"
#include "ir/diagnostic.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/temp_dir.h"

namespace pf {
namespace {

using namespace std::chrono_literals;
using cuda::testing::DeviceBuffer;
using testing_support::TempDir;

/// Skips without two GPUs: NCCL refuses two ranks of one communicator on
/// one GPU ("Duplicate GPU detected"), so two ranks need two.
#define PF_REQUIRE_TWO_GPUS()                                                                            \
  do {                                                                                                   \
    PF_REQUIRE_CUDA();                                                                                   \
    if (::pf::cuda::device_count() < 2)                                                                  \
      GTEST_SKIP() << "needs 2 CUDA devices (NCCL allows one rank per GPU), " << ::pf::cuda::device_count() \
                   << " visible";                                                                        \
  } while (0)

/// Runs `body(comm)` as ranks 0 and 1, each on its own thread and GPU, over
/// a file store; a failure on either thread fails the test.
void two_ranks(const std::function<void(NcclCommunicator&)>& body, double timeout_s = 30) {
  TempDir dir;
  FileStore store(dir.str(), 30000ms);
  std::string errors[2];
  auto rank = [&](int r) {
    try {
      NcclCommunicator comm(store, r, 2, {r, {timeout_s, 0.1, "test"}});
      body(comm);
    } catch (const Error& e) {
      errors[r] = e.message();
    } catch (const std::exception& e) {
      errors[r] = e.what();
    }
  };
  std::thread one([&] { rank(1); });
  rank(0);
  one.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
}

const CommGroup kWorld = CommGroup::world(2);

TEST(NcclCommunicator, RejectsARankOutsideTheWorld) {
  TempDir dir;
  FileStore store(dir.str(), 1000ms);
  try {
    NcclCommunicator comm(store, 2, 2);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "rank 2 is not within a world of 2");
  }
}

TEST(NcclCommunicator, DeviceBuffersArriveBitForBit) {
  PF_REQUIRE_TWO_GPUS();
  constexpr size_t kCount = 1 << 16;
  std::vector<float> sent(kCount), received(kCount);
  for (size_t i = 0; i < kCount; ++i) sent[i] = std::ldexp(static_cast<float>(i) + 0.1f, static_cast<int>(i % 40) - 20);
  two_ranks([&](NcclCommunicator& comm) {
    EXPECT_TRUE(comm.device_messages());
    if (comm.rank() == 0) {
      DeviceBuffer buf(sent.data(), kCount * sizeof(float));
      comm.send(1, 7, buf.get(), kCount * sizeof(float));
      comm.barrier(kWorld);  // the sent buffer is free again
    } else {
      DeviceBuffer buf(kCount * sizeof(float));
      const int h = comm.post({0, 7, buf.get(), static_cast<int64_t>(kCount * sizeof(float)), "the test's message"});
      EXPECT_EQ(comm.wait(h).data, buf.get());
      PF_CUDA_CHECK(cudaMemcpy(received.data(), buf.get(), kCount * sizeof(float), cudaMemcpyDeviceToHost));
      comm.barrier(kWorld);
    }
  });
  EXPECT_EQ(std::memcmp(sent.data(), received.data(), kCount * sizeof(float)), 0);
}

// Host buffers are staged; messages come in the order posted, each to its
// own buffer, and a rank's message to itself is lent.
TEST(NcclCommunicator, HostBuffersAndMessagesToItself) {
  PF_REQUIRE_TWO_GPUS();
  std::string got;
  int64_t length = 0;
  two_ranks([&](NcclCommunicator& comm) {
    const std::string text = "from rank 0";
    const int64_t n = static_cast<int64_t>(text.size());
    if (comm.rank() == 0) {
      comm.send(1, 1, &n, sizeof n);
      comm.send(1, 2, text.data(), n);
      comm.send(0, 3, &n, sizeof n);
      const int own = comm.post({0, 3, nullptr, sizeof n, "its own"});
      EXPECT_EQ(comm.wait(own).data, &n);
    } else {
      std::string buffer(text.size(), '\0');
      const int a = comm.post({0, 1, &length, sizeof length, "the length"});
      const int b = comm.post({0, 2, buffer.data(), n, "the text"});
      comm.wait(a);
      comm.wait(b);
      got = buffer;
    }
    comm.barrier(kWorld);
  });
  EXPECT_EQ(length, 11);
  EXPECT_EQ(got, "from rank 0");
}

// Every member ends with the same bits; integers in floats sum exactly.
TEST(NcclCommunicator, AllReduceGivesEveryRankTheSameBits) {
  PF_REQUIRE_TWO_GPUS();
  std::vector<float> f[2];
  std::vector<double> d[2];
  std::vector<float> started[2];
  two_ranks([&](NcclCommunicator& comm) {
    const int r = comm.rank();
    f[r].resize(1000);
    d[r] = {0.1 * (r + 1), 1e300 * r, -3.0};
    started[r].assign(4096, static_cast<float>(r + 1) / 3.0f);
    for (size_t i = 0; i < f[r].size(); ++i) f[r][i] = static_cast<float>(i * (r + 1)) / 7.0f;
    const int h = comm.start_all_reduce(kWorld, started[r]);
    comm.all_reduce(kWorld, f[r]);
    comm.all_reduce(kWorld, d[r]);
    comm.finish_all_reduce(h);
  });
  ASSERT_EQ(f[0].size(), 1000u);
  EXPECT_EQ(std::memcmp(f[0].data(), f[1].data(), f[0].size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(d[0].data(), d[1].data(), d[0].size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(started[0].data(), started[1].data(), started[0].size() * sizeof(float)), 0);
  EXPECT_EQ(d[0][2], -6.0);
  EXPECT_EQ(d[0][1], 1e300);
  EXPECT_FLOAT_EQ(f[0][7], 7.0f * 3 / 7.0f);
  EXPECT_FLOAT_EQ(started[0][0], 1.0f);
}

TEST(NcclCommunicator, BroadcastFromEitherRank) {
  PF_REQUIRE_TWO_GPUS();
  uint64_t values[2] = {0, 0};
  two_ranks([&](NcclCommunicator& comm) {
    uint64_t v = comm.rank() == 1 ? 0x0123456789abcdefULL : 5;
    comm.broadcast(kWorld, 1, &v, sizeof v);
    values[comm.rank()] = v;
  });
  EXPECT_EQ(values[0], 0x0123456789abcdefULL);
  EXPECT_EQ(values[1], 0x0123456789abcdefULL);
}

// NCCL matches messages in the order sent: one posted out of that order is
// an error naming both tags, not bytes in the wrong buffer.
TEST(NcclCommunicator, AMessageOutOfOrderIsAnError) {
  PF_REQUIRE_TWO_GPUS();
  std::string error;
  two_ranks([&](NcclCommunicator& comm) {
    int64_t a = 1, b = 2;
    if (comm.rank() == 0) {
      comm.send(1, 10, &a, sizeof a);
      comm.send(1, 20, &b, sizeof b);
    } else {
      const int second = comm.post({0, 20, &b, sizeof b, "the second"});
      const int first = comm.post({0, 10, &a, sizeof a, "the first"});
      for (int h : {second, first}) {
        try {
          comm.wait(h);
        } catch (const Error& e) {
          if (error.empty()) error = e.message();
        }
      }
    }
    comm.barrier(kWorld);
  });
  EXPECT_NE(error.find("received the message tagged 10 (8 bytes) from rank 0 where it expected tag 20"),
            std::string::npos)
      << error;
}

// One rank's abort ends the other's wait, which reports the same failure.
TEST(NcclCommunicator, AbortEndsTheOtherRanksWait) {
  PF_REQUIRE_TWO_GPUS();
  std::string seen[2];
  bool aborted = false;
  two_ranks([&](NcclCommunicator& comm) {
    if (comm.rank() == 0) {
      std::this_thread::sleep_for(200ms);
      comm.abort("stage 0: injected");
    } else {
      float x = 0;
      DeviceBuffer buf(sizeof x);
      const int h = comm.post({0, 1, buf.get(), sizeof x, "stage 1 waits for the activations"});
      try {
        comm.wait(h);
      } catch (const CommAborted&) {
        aborted = true;
      }
    }
    seen[comm.rank()] = comm.error();
  });
  EXPECT_TRUE(aborted);
  EXPECT_EQ(seen[0], "stage 0: injected");
  EXPECT_EQ(seen[1], "stage 0: injected");
}

// Both ranks wait for messages that never come, nobody computes: the
// watchdog ends the waits after the timeout.
TEST(NcclCommunicator, AWaitWithNobodyComputingTimesOut) {
  PF_REQUIRE_TWO_GPUS();
  std::string messages[2];
  two_ranks(
      [&](NcclCommunicator& comm) {
        float x = 0;
        DeviceBuffer buf(sizeof x);
        const int peer = 1 - comm.rank();
        const int h = comm.post({peer, 1, buf.get(), sizeof x, fmt::format("rank {} waits for a lost message", comm.rank())});
        try {
          comm.wait(h);
        } catch (const CommTimeout& t) {
          messages[comm.rank()] = t.message;
        } catch (const CommAborted&) {
          messages[comm.rank()] = comm.error();
        }
      },
      /*timeout_s=*/1);
  EXPECT_NE(messages[0].find("timed out after 1 s with no rank computing"), std::string::npos) << messages[0];
  EXPECT_EQ(messages[0], messages[1]);
}

}  // namespace
}  // namespace pf
