// The communicator between processes: the TCP rendezvous store, and Gloo
// messages and collectives between ranks as threads and as processes, with
// the failures a job must survive to report.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "comm/gloo_communicator.h"
#include "comm/tcp_store.h"
#include "ir/diagnostic.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

using namespace std::chrono_literals;

TEST(TcpStore, SetsGetsChecksAndCounts) {
  TcpStoreServer server(0);
  TcpStore a("127.0.0.1", server.port(), 2s), b("127.0.0.1", server.port(), 2s);
  a.set("k", std::string("v\0w", 3));
  EXPECT_EQ(b.get("k"), std::string("v\0w", 3));
  EXPECT_TRUE(b.check({"k"}));
  EXPECT_FALSE(b.check({"k", "missing"}));
  EXPECT_EQ(a.add("n", 2), 2);
  EXPECT_EQ(b.add("n", 3), 5);
}

TEST(TcpStore, GetWaitsOnTheServerForAnotherClient) {
  TcpStoreServer server(0);
  TcpStore a("127.0.0.1", server.port(), 5s);
  std::thread late([&] {
    std::this_thread::sleep_for(50ms);
    TcpStore("127.0.0.1", server.port(), 5s).set("late", "here");
  });
  EXPECT_EQ(a.get("late"), "here");
  late.join();
}

TEST(TcpStore, SaysWhatItWaitedForAndWhere) {
  TcpStoreServer server(0);
  TcpStore a("127.0.0.1", server.port(), 100ms);
  EXPECT_EQ(error_of([&] { a.get("never"); }),
            fmt::format("rendezvous store at 127.0.0.1:{}: no value for 'never' after 0 s (has every rank started?)",
                        server.port()));
  int port = 0;
  {
    TcpStoreServer gone(0);
    port = gone.port();
  }
  EXPECT_EQ(error_of([&] { TcpStore("127.0.0.1", port, 200ms); }),
            fmt::format("cannot reach the rendezvous store at 127.0.0.1:{} after 0 s (Connection refused); is rank 0 "
                        "running there?",
                        port));
}

TEST(TcpStore, ADeadClientLeavesTheServerServing) {
  TcpStoreServer server(0);
  { TcpStore("127.0.0.1", server.port(), 1s).set("a", "1"); }
  TcpStore b("127.0.0.1", server.port(), 1s);
  EXPECT_EQ(b.get("a"), "1");
}

/// `size` ranks as threads, each with its own store client and communicator.
void on_ranks(int size, double timeout_s, const std::function<void(GlooCommunicator&)>& fn,
              int64_t blocks_from_bytes = GlooOptions{}.blocks_from_bytes) {
  TcpStoreServer server(0);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      TcpStore store("127.0.0.1", server.port(), 10s);
      GlooOptions options;
      options.timeout_s = timeout_s;
      options.heartbeat_s = 0.05;
      options.blocks_from_bytes = blocks_from_bytes;
      GlooCommunicator comm(store, r, size, options);
      fn(comm);
      try {
        comm.barrier(CommGroup::world(size));  // nobody leaves while another still talks
      } catch (const CommAborted&) {
        // a failed job: leaving is all that is left
      } catch (const CommTimeout&) {
      }
    });
  for (auto& t : threads) t.join();
}

TEST(GlooCommunicator, MessagesLandInTheReceiversBufferByTag) {
  std::vector<double> got(2, 0);
  on_ranks(2, 10, [&](GlooCommunicator& c) {
    const double a = 1.5, b = 2.5;
    if (c.rank() == 0) {
      c.send(1, 2, &b, 8);
      c.send(1, 1, &a, 8);
      c.barrier(CommGroup::world(2));
    } else {
      const int h1 = c.post({0, 1, &got[0], 8, "rank 1 waits for a"});
      const int h2 = c.post({0, 2, &got[1], 8, "rank 1 waits for b"});
      EXPECT_EQ(c.wait(h1).data, &got[0]);
      EXPECT_EQ(c.wait(h2).data, &got[1]);
      c.barrier(CommGroup::world(2));
    }
  });
  EXPECT_EQ(got, (std::vector<double>{1.5, 2.5}));
}

// Gloo cannot tell whether a receive's message has come without waiting
// for it: ready() says not yet, even when it has, so that a rank does its
// other work first (packs the weights its next products read) and waits
// after.
TEST(GlooCommunicator, CannotTellWhetherAMessageHasCome) {
  double got = 0;
  bool ready = true;
  on_ranks(2, 10, [&](GlooCommunicator& c) {
    const double x = 4.5;
    if (c.rank() == 0) {
      c.send(1, 3, &x, 8);
      c.barrier(CommGroup::world(2));
    } else {
      const int handle = c.post({0, 3, &got, 8, "rank 1 waits for x"});
      c.barrier(CommGroup::world(2));  // rank 0 has sent by now
      ready = c.ready(handle);
      c.wait(handle);
    }
  });
  EXPECT_FALSE(ready);
  EXPECT_EQ(got, 4.5);
}

TEST(GlooCommunicator, AMessageToItselfIsLent) {
  on_ranks(1, 10, [&](GlooCommunicator& c) {
    const float x = 3;
    c.send(0, 7, &x, 4);
    float dst = 0;
    EXPECT_EQ(c.wait(c.post({0, 7, &dst, 4, ""})).data, &x);
  });
}

constexpr int64_t kThroughTheRoot = int64_t{1} << 40;  // blocks_from_bytes: never in blocks
constexpr int64_t kInBlocks = 0;                       // always, where every block gets a value

// Floats summed in rank order: 1e8 + 1 - 1e8 is 0 and -1e8 + 1e8 + 1 is 1.
std::vector<float> rank_order_sum(const std::vector<std::vector<float>>& values) {
  std::vector<float> total = values.front();
  for (size_t r = 1; r < values.size(); ++r)
    for (size_t i = 0; i < total.size(); ++i) total[i] += values[r][i];
  return total;
}

// Every rank gets the in-process communicator's bits, the sum in rank order,
// whether the sum goes through the first rank or in blocks (7 values over 3
// ranks: blocks of 2, 2 and 3 values; 2 values: fewer than the ranks, so
// through the first rank whatever the size).
TEST(GlooCommunicator, AllReduceSumsInRankOrderOnEveryRank) {
  const float mine[] = {1e8f, 1.0f, -1e8f};
  for (const size_t n : {2u, 7u}) {
    std::vector<std::vector<float>> values(3, std::vector<float>(n));
    for (size_t r = 0; r < 3; ++r)
      for (size_t i = 0; i < n; ++i) values[r][i] = mine[(r + i) % 3];
    const std::vector<float> expected = rank_order_sum(values);
    for (const int64_t blocks_from : {kThroughTheRoot, kInBlocks}) {
      std::vector<std::vector<float>> result(3);
      on_ranks(
          3, 10,
          [&](GlooCommunicator& c) {
            std::vector<float> v = values[static_cast<size_t>(c.rank())];
            if (c.rank() == 0) std::this_thread::sleep_for(20ms);
            c.all_reduce(CommGroup::world(3), v);
            if (c.rank() > 0) {
              std::vector<double> one = {1.0, 2.0};
              c.all_reduce(CommGroup{"pair", {1, 2}}, one);  // a group apart from the world
              EXPECT_EQ(one, (std::vector<double>{2.0, 4.0}));
            }
            result[static_cast<size_t>(c.rank())] = v;
          },
          blocks_from);
      for (const auto& r : result) EXPECT_EQ(r, expected) << n << " values, blocks from " << blocks_from << " bytes";
    }
  }
  EXPECT_EQ(rank_order_sum({{1e8f}, {1.0f}, {-1e8f}}), (std::vector<float>{0.0f}));  // not 1: the order shows
}

// The gather and reduce-scatter of sequence parallelism through Gloo's sum:
// the in-process communicator's results (blocks of 1, 2 and 0 values).
TEST(GlooCommunicator, AllGatherAndReduceScatterMoveEachRanksBlock) {
  const std::vector<int64_t> counts = {1, 2, 0};
  std::vector<std::vector<float>> gathered(3), kept(3);
  on_ranks(3, 10, [&](GlooCommunicator& c) {
    const auto r = static_cast<size_t>(c.rank());
    const std::vector<std::vector<float>> parts = {{10}, {20, 21}, {}};
    std::vector<float> whole(3);
    c.all_gather(CommGroup::world(3), std::span<const float>(parts[r]), whole, counts);
    gathered[r] = whole;
    const float mine[] = {1e8f, 1.0f, -1e8f};
    const std::vector<float> sums = {mine[r], static_cast<float>(r), 1.0f};
    std::vector<float> part(static_cast<size_t>(counts[r]));
    c.reduce_scatter(CommGroup::world(3), std::span<const float>(sums), part, counts);
    kept[r] = part;
  });
  for (const auto& g : gathered) EXPECT_EQ(g, (std::vector<float>{10, 20, 21}));
  EXPECT_EQ(kept[0], (std::vector<float>{0.0f}));
  EXPECT_EQ(kept[1], (std::vector<float>{3.0f, 3.0f}));
  EXPECT_TRUE(kept[2].empty());
}

// Two sums of one group started before a message between the same ranks and
// a collective of the whole world: the members' values are on their way
// while the ranks go on, and each sum ends with the blocking one's bits,
// through the first rank or in blocks.
class StartedAllReduces : public testing::TestWithParam<int64_t> {};

TEST_P(StartedAllReduces, FinishAfterOtherTraffic) {
  std::vector<std::vector<float>> first(3), second(3);
  const auto rank = [&](GlooCommunicator& c) {
    const auto r = static_cast<size_t>(c.rank());
    const CommGroup pair{"pair", {0, 2}};
    if (c.rank() == 1) {
      std::vector<double> one = {1.0};
      c.all_reduce(CommGroup::world(3), one);
      return;
    }
    const float big[] = {1e8f, 0.0f, -1e8f};
    first[r] = {big[r], 0.5f};
    second[r] = {static_cast<float>(c.rank()), 3.0f};
    const int a = c.start_all_reduce(pair, first[r]);
    const int b = c.start_all_reduce(pair, second[r]);
    double x = 5;
    if (c.rank() == 0) c.send(2, 9, &x, sizeof x);
    if (c.rank() == 2) c.wait(c.post({0, 9, &x, sizeof x, "rank 2 waits"}));
    std::vector<double> one = {1.0};
    c.all_reduce(CommGroup::world(3), one);
    EXPECT_EQ(one[0], 3.0);
    c.finish_all_reduce(a);
    c.finish_all_reduce(b);
    EXPECT_THROW(c.finish_all_reduce(a), Error);
  };
  on_ranks(3, 10, rank, GetParam());
  for (size_t r : {0u, 2u}) {
    EXPECT_EQ(first[r], (std::vector<float>{0.0f, 1.0f}));
    EXPECT_EQ(second[r], (std::vector<float>{2.0f, 6.0f}));
  }
}

INSTANTIATE_TEST_SUITE_P(GlooCommunicator, StartedAllReduces, testing::Values(kThroughTheRoot, kInBlocks),
                         [](const testing::TestParamInfo<int64_t>& p) {
                           return p.param == kInBlocks ? std::string("InBlocks") : std::string("ThroughTheRoot");
                         });

TEST(GlooCommunicator, BroadcastsFromAnyRoot) {
  std::vector<int64_t> got(3, 0);
  on_ranks(3, 10, [&](GlooCommunicator& c) {
    int64_t v = c.rank() == 2 ? 42 : -1;
    c.broadcast(CommGroup::world(3), 2, &v, sizeof v);
    got[static_cast<size_t>(c.rank())] = v;
  });
  EXPECT_EQ(got, (std::vector<int64_t>{42, 42, 42}));
}

TEST(GlooCommunicator, ABarrierHoldsEveryRankUntilTheLastArrives) {
  std::atomic<bool> last_arrived{false};
  std::vector<int> saw(3, 0);
  on_ranks(3, 10, [&](GlooCommunicator& c) {
    if (c.rank() == 2) {
      std::this_thread::sleep_for(50ms);
      last_arrived = true;
    }
    c.barrier(CommGroup::world(3));
    saw[static_cast<size_t>(c.rank())] = last_arrived ? 1 : 0;
  });
  EXPECT_EQ(saw, (std::vector<int>{1, 1, 1}));
}

// Rank 1 computes one thing after another for longer than the timeout in
// all, each shorter than it: rank 0's wait for its result does not time out.
TEST(GlooCommunicator, ABusyRankHoldsOffTheTimeout) {
  std::string error = "(not waited)";
  on_ranks(2, 1, [&](GlooCommunicator& c) {
    double x = 0;
    if (c.rank() == 1) {
      for (int mb = 0; mb < 4; ++mb) {
        c.set_busy("stage 1", fmt::format("forward of micro-batch {}", mb));
        std::this_thread::sleep_for(350ms);
      }
      c.set_busy("stage 1", "");
      x = 4;
      try {
        c.send(0, 3, &x, 8);
      } catch (const CommAborted&) {
        // rank 0 timed out after all: its error says so below
      }
    } else {
      try {
        c.wait(c.post({1, 3, &x, 8, "stage 0 waits for stage 1"}));
        EXPECT_EQ(x, 4);
      } catch (const CommTimeout&) {
      } catch (const CommAborted&) {
      }
      error = c.error();
    }
  });
  EXPECT_EQ(error, "");
}

TEST(GlooCommunicator, AnAbortEndsEveryOtherRanksWait) {
  std::vector<std::string> errors(3);
  on_ranks(3, 10, [&](GlooCommunicator& c) {
    if (c.rank() == 1) {
      c.abort("stage 1: injected");
    } else {
      // Posting may already find the job failed (rank 1 gone after its
      // abort), or the wait ends it: either way the receive ends aborted.
      double x = 0;
      EXPECT_THROW(c.wait(c.post({1, 9, &x, 8, "waits for stage 1"})), CommAborted);
    }
    errors[static_cast<size_t>(c.rank())] = c.error();
    // A collective after it also ends at once.
    EXPECT_THROW(c.barrier(CommGroup::world(3)), CommAborted) << "rank " << c.rank();
  });
  for (const std::string& e : errors) EXPECT_EQ(e, "stage 1: injected");
}

// Both ranks wait for a message never sent, while neither computes: the
// first wait to time out fails the job with what it waited for, and the
// other rank's wait ends with that message.
TEST(GlooCommunicator, AMissingMessageTimesOutNamingTheWait) {
  std::vector<std::string> errors(2);
  std::vector<int> timeouts(2, 0);
  on_ranks(2, 1, [&](GlooCommunicator& c) {
    double x = 0;
    const int h = c.post({1 - c.rank(), 9, &x, 8, fmt::format("stage {} waits for micro-batch 0", c.rank())});
    try {
      c.wait(h);
      ADD_FAILURE() << "no timeout";
    } catch (const CommTimeout& t) {
      EXPECT_EQ(t.message, c.error());
      timeouts[static_cast<size_t>(c.rank())] = 1;
    } catch (const CommAborted&) {
    }
    errors[static_cast<size_t>(c.rank())] = c.error();
  });
  EXPECT_EQ(timeouts[0] + timeouts[1], 1);
  EXPECT_EQ(errors[0], errors[1]);
  const int first = timeouts[0] ? 0 : 1;
  EXPECT_EQ(errors[0],
            fmt::format("timed out after 1 s with no rank computing: stage {} waits for micro-batch 0", first));
}

// ---- Ranks as processes: this test program started again as rank 1.

std::string self_path() {
  char buffer[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof buffer - 1);
  return std::string(buffer, static_cast<size_t>(std::max<ssize_t>(n, 0)));
}

pid_t start_rank_one(int port, const char* mode) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("PF_TEST_STORE_PORT", std::to_string(port).c_str(), 1);
    ::setenv("PF_TEST_MODE", mode, 1);
    const std::string self = self_path();
    ::execl(self.c_str(), self.c_str(), "--gtest_filter=GlooChild.RankOne", nullptr);
    ::_exit(127);
  }
  return pid;
}

// Rank 1, when started by a test below (skipped otherwise).
TEST(GlooChild, RankOne) {
  const char* port = std::getenv("PF_TEST_STORE_PORT");
  if (!port) GTEST_SKIP() << "started by the process tests only";
  TcpStore store("127.0.0.1", std::atoi(port), 10s);
  GlooOptions options;
  options.timeout_s = 1;
  options.heartbeat_s = 0.05;
  GlooCommunicator comm(store, 1, 2, options);
  const double x = 7;
  comm.send(0, 5, &x, 8);
  if (std::string(std::getenv("PF_TEST_MODE")) == "hang") ::pause();  // until killed
  comm.barrier(CommGroup::world(2));
}

/// Rank 0 here, rank 1 a child process (see GlooChild.RankOne) whose first
/// message has arrived.
struct TwoProcesses {
  TcpStoreServer server{0};
  pid_t child;
  TcpStore store;
  GlooCommunicator comm;
  bool reaped = false;

  TwoProcesses(const char* mode, double timeout_s)
      : child(start_rank_one(server.port(), mode)),
        store("127.0.0.1", server.port(), 10s),
        comm(store, 0, 2, GlooOptions{timeout_s, "", 0.05, "pf"}) {
    double x = 0;
    comm.wait(comm.post({1, 5, &x, 8, "rank 0 waits"}));
    EXPECT_EQ(x, 7);
  }
  ~TwoProcesses() {
    if (!reaped) stop(SIGKILL);
  }
  /// Sends `signal` to the child; waits for it to end unless it only stops.
  /// Returns its wait status.
  int stop(int signal) {
    ::kill(child, signal);
    int status = 0;
    if (signal != SIGSTOP) {
      ::waitpid(child, &status, 0);
      reaped = true;
    }
    return status;
  }
};

TEST(GlooProcesses, TwoProcessesExchangeAMessage) {
  TwoProcesses job("talk", 5);
  job.comm.barrier(CommGroup::world(2));
  int status = 0;
  ::waitpid(job.child, &status, 0);
  job.reaped = true;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

// A rank killed with SIGKILL: the survivor stops within the timeout and
// names it.
TEST(GlooProcesses, AKilledRankIsNamed) {
  TwoProcesses job("hang", 1);
  job.stop(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_ANY_THROW(job.comm.barrier(CommGroup::world(2)));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  // Its connection breaks first; a rank that hangs instead is named by its
  // silence (see the heartbeat).
  EXPECT_EQ(job.comm.error(), "rank 1 is gone: a connection to it broke (its process died?)");
}

// A rank that stops (SIGSTOP) keeps its connections open but goes silent:
// its missing heartbeat names it within the timeout.
TEST(GlooProcesses, ASilentRankIsNamed) {
  TwoProcesses job("hang", 1);
  job.stop(SIGSTOP);
  EXPECT_ANY_THROW(job.comm.barrier(CommGroup::world(2)));
  EXPECT_EQ(job.comm.error(), "rank 1 stopped responding: no heartbeat for 1 s (its process died or is stopped)");
}

}  // namespace
}  // namespace pf
