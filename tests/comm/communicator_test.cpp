// The in-process communicator: lent messages, collectives that give every
// rank the same bits, and waits that end on a failure or a stall.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <thread>
#include <vector>

#include "comm/local_communicator.h"
#include "ir/diagnostic.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using namespace std::chrono_literals;
using testing_support::error_of;

/// Runs fn(rank) on a thread per rank of `world`; returns once all returned.
void on_every_rank(LocalWorld& world, const std::function<void(Communicator&)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world.size(); ++r) threads.emplace_back([&, r] { fn(world.rank(r)); });
  for (auto& t : threads) t.join();
}

TEST(LocalCommunicator, AReceivePostedAheadGetsTheSendersBufferItself) {
  LocalWorld world(2, 5);
  const std::vector<float> sent = {1, 2, 3};
  int context = 7;
  Received got;
  on_every_rank(world, [&](Communicator& c) {
    if (c.rank() == 1) {
      const int handle = c.post({0, 42, nullptr, 12, "rank 1 waits for x"});
      got = c.wait(handle);
    } else {
      std::this_thread::sleep_for(20ms);  // the receive is posted and waiting first
      c.send(1, 42, sent.data(), 12, &context);
    }
  });
  EXPECT_EQ(got.data, sent.data());
  EXPECT_EQ(got.context, &context);
}

// A waiting rank does other work (packs weights) while ready() says the
// message has not come; in process it can tell.
TEST(LocalCommunicator, SaysWhetherAPostedMessageHasCome) {
  LocalWorld world(2, 5);
  const double x = 3;
  std::vector<bool> ready;
  const void* got = nullptr;
  on_every_rank(world, [&](Communicator& c) {
    if (c.rank() == 1) {
      const int handle = c.post({0, 5, nullptr, 8, "rank 1 waits for x"});
      ready.push_back(c.ready(handle));
      c.barrier(CommGroup::world(2));  // rank 0 sends only after this one
      c.barrier(CommGroup::world(2));  // and before this one
      ready.push_back(c.ready(handle));
      got = c.wait(handle).data;
    } else {
      c.barrier(CommGroup::world(2));
      c.send(1, 5, &x, 8);
      c.barrier(CommGroup::world(2));
    }
  });
  EXPECT_EQ(ready, (std::vector<bool>{false, true}));
  EXPECT_EQ(got, &x);
}

TEST(LocalCommunicator, MessagesAreMatchedByTagNotByOrder) {
  LocalWorld world(2, 5);
  const double a = 1, b = 2;
  const void* first = nullptr;
  const void* second = nullptr;
  on_every_rank(world, [&](Communicator& c) {
    if (c.rank() == 0) {
      c.send(1, 2, &b, 8);
      c.send(1, 1, &a, 8);
    } else {
      const int h1 = c.post({0, 1, nullptr, 8, ""});
      const int h2 = c.post({0, 2, nullptr, 8, ""});
      first = c.wait(h1).data;
      second = c.wait(h2).data;
    }
  });
  EXPECT_EQ(first, &a);
  EXPECT_EQ(second, &b);
}

// 1e8 + 1 - 1e8 is 0 in floats summed in rank order and 1 the other way:
// however late rank 0 arrives, every rank gets 0.
TEST(LocalCommunicator, AllReduceSumsInRankOrderOnEveryRank) {
  LocalWorld world(3, 5);
  const CommGroup all = CommGroup::world(3);
  std::vector<std::vector<float>> result(3);
  on_every_rank(world, [&](Communicator& c) {
    const float mine[] = {1e8f, 1.0f, -1e8f};
    std::vector<float> values = {mine[c.rank()], static_cast<float>(c.rank())};
    if (c.rank() == 0) std::this_thread::sleep_for(20ms);
    c.all_reduce(all, values);
    result[static_cast<size_t>(c.rank())] = values;
  });
  for (const auto& r : result) EXPECT_EQ(r, (std::vector<float>{0.0f, 3.0f}));
}

// Blocks of 1, 2 and 0 values: every rank gathers all of them in rank
// order; reduce-scattered, each keeps its block of the sum, with the bits of
// the all-reduce (1e8 + 1 - 1e8 is 0 in rank order).
TEST(LocalCommunicator, AllGatherAndReduceScatterMoveEachRanksBlock) {
  LocalWorld world(3, 5);
  const CommGroup all = CommGroup::world(3);
  const std::vector<int64_t> counts = {1, 2, 0};
  std::vector<std::vector<double>> gathered(3);
  std::vector<std::vector<float>> kept(3);
  on_every_rank(world, [&](Communicator& c) {
    const auto r = static_cast<size_t>(c.rank());
    const std::vector<std::vector<double>> parts = {{10}, {20, 21}, {}};
    std::vector<double> whole(3);
    c.all_gather(all, std::span<const double>(parts[r]), whole, counts);
    gathered[r] = whole;
    const float mine[] = {1e8f, 1.0f, -1e8f};
    const std::vector<float> sums = {mine[r], static_cast<float>(r), 1.0f};
    std::vector<float> part(static_cast<size_t>(counts[r]));
    c.reduce_scatter(all, std::span<const float>(sums), part, counts);
    kept[r] = part;
  });
  for (const auto& g : gathered) EXPECT_EQ(g, (std::vector<double>{10, 20, 21}));
  EXPECT_EQ(kept[0], (std::vector<float>{0.0f}));
  EXPECT_EQ(kept[1], (std::vector<float>{3.0f, 3.0f}));
  EXPECT_TRUE(kept[2].empty());
}

TEST(LocalCommunicator, GroupsRunCollectivesApartAndRoundAfterRound) {
  LocalWorld world(4, 5);
  const CommGroup low{"low", {0, 1}}, high{"high", {2, 3}}, all = CommGroup::world(4);
  std::vector<double> last(4);
  on_every_rank(world, [&](Communicator& c) {
    const CommGroup& mine = c.rank() < 2 ? low : high;
    double total = 0;
    for (int round = 0; round < 200; ++round) {
      std::vector<double> v = {static_cast<double>(c.rank() + round)};
      c.all_reduce(mine, v);
      total += v[0];
      if (round % 50 == 0) c.barrier(all);
    }
    last[static_cast<size_t>(c.rank())] = total;
  });
  // Per round: ranks 0+1 give 1 + 2 * round; ranks 2+3 give 5 + 2 * round.
  const double rounds = 200, sum_of_rounds = 199.0 * 200 / 2;
  EXPECT_EQ(last[0], 1 * rounds + 2 * sum_of_rounds);
  EXPECT_EQ(last[1], last[0]);
  EXPECT_EQ(last[2], 5 * rounds + 2 * sum_of_rounds);
  EXPECT_EQ(last[3], last[2]);
}

TEST(LocalCommunicator, BroadcastCopiesTheRootsBytes) {
  LocalWorld world(3, 5);
  const CommGroup all = CommGroup::world(3);
  std::vector<int> got(3);
  on_every_rank(world, [&](Communicator& c) {
    int value = c.rank() == 1 ? 99 : -1;
    c.broadcast(all, 1, &value, sizeof value);
    got[static_cast<size_t>(c.rank())] = value;
  });
  EXPECT_EQ(got, (std::vector<int>{99, 99, 99}));
}

TEST(LocalCommunicator, AbortEndsEveryWait) {
  LocalWorld world(3, 30);
  world.start_step();
  std::vector<int> aborted(3, 0);
  const CommGroup all = CommGroup::world(3);
  on_every_rank(world, [&](Communicator& c) {
    try {
      if (c.rank() == 0) {
        std::this_thread::sleep_for(20ms);
        c.abort("stage 0: injected");
        throw CommAborted{};
      }
      if (c.rank() == 1) c.wait(c.post({0, 5, nullptr, 4, "rank 1 waits"}));
      if (c.rank() == 2) c.barrier(all);
    } catch (const CommAborted&) {
      aborted[static_cast<size_t>(c.rank())] = 1;
    }
    world.finish(c.rank());
  });
  EXPECT_EQ(aborted, (std::vector<int>{1, 1, 1}));
  EXPECT_EQ(world.error(), "stage 0: injected");
}

// A stall: every rank waits for another. The wait times out and names every
// waiter in rank order.
TEST(LocalCommunicator, AStallTimesOutNamingTheWaiters) {
  LocalWorld world(3, 1);
  world.start_step();
  std::string timeout;
  on_every_rank(world, [&](Communicator& c) {
    const int from = (c.rank() + 2) % 3;
    try {
      c.wait(c.post({from, 1, nullptr, 4, fmt::format("stage {} waits for x from stage {}", c.rank(), from)}));
    } catch (const CommTimeout& t) {
      timeout = t.message;
    } catch (const CommAborted&) {
    }
    world.finish(c.rank());
  });
  EXPECT_EQ(timeout,
            "watchdog: no hand-off for 1 s: stage 0 waits for x from stage 2; stage 1 waits for x from stage 0; "
            "stage 2 waits for x from stage 1");
  EXPECT_EQ(world.error(), timeout);
}

// While a rank computes, what it computes may be what the others wait for:
// no wait times out, however long it takes.
TEST(LocalCommunicator, ABusyRankHoldsOffTheTimeout) {
  LocalWorld world(2, 0.1);
  world.start_step();
  const float x = 3;
  const void* got = nullptr;
  // Busy before any rank waits, however late its thread starts.
  world.rank(0).set_busy("stage 0", "the forward of micro-batch 0");
  on_every_rank(world, [&](Communicator& c) {
    if (c.rank() == 0) {
      std::this_thread::sleep_for(400ms);
      c.set_busy("stage 0", "");
      c.send(1, 1, &x, 4);
    } else {
      got = c.wait(c.post({0, 1, nullptr, 4, "stage 1 waits for x from stage 0"})).data;
    }
  });
  EXPECT_EQ(got, &x);
  EXPECT_EQ(world.error(), "");
}

TEST(LocalCommunicator, WatchFailsAComputationThatDoesNotReturn) {
  LocalWorld world(2, 0.1);
  world.start_step();
  std::thread rank0([&] {
    world.rank(0).set_busy("stage 0", "the forward of micro-batch 3");
    std::this_thread::sleep_for(500ms);
    world.finish(0);
  });
  std::thread rank1([&] { world.finish(1); });
  const std::vector<int> given_up = world.watch();
  rank0.join();
  rank1.join();
  EXPECT_EQ(given_up, std::vector<int>{0});
  EXPECT_EQ(world.error(),
            "watchdog: stage 0 has spent more than 0.1 s in the forward of micro-batch 3 and does not return");
}

TEST(LocalCommunicator, MisuseIsAnError) {
  LocalWorld world(2, 1);
  Communicator& c = world.rank(0);
  EXPECT_EQ(error_of([&] { c.send(-1, 1, nullptr, 0); }), "rank 0 cannot talk to rank -1 in a world of 2");
  EXPECT_EQ(error_of([&] { c.post({2, 1, nullptr, 0, ""}); }), "rank 0 cannot talk to rank 2 in a world of 2");
  EXPECT_EQ(error_of([&] { c.barrier({"other", {1}}); }), "rank 0 is not a member of group 'other'");
  const float x = 1;
  c.send(1, 9, &x, 4);
  EXPECT_EQ(error_of([&] { c.send(1, 9, &x, 4); }), "rank 0 sent message 9 to rank 1 twice before it was received");
  Communicator& d = world.rank(1);
  EXPECT_EQ(error_of([&] { d.wait(d.post({0, 9, nullptr, 8, ""})); }),
            "rank 1 expected 8 bytes in message 9 from rank 0, but 4 came");
  EXPECT_EQ(error_of([] { LocalWorld(0, 1); }), "a world needs at least one rank, not 0");
}

}  // namespace
}  // namespace pf
