// What the collectives between processes cost over Gloo: each rank a
// thread with its own GlooCommunicator over loopback TCP (as processes of
// `pipeforge launch` on one host are), every collective timed two ways in
// alternating rounds. all_reduce through the group's first rank against in
// blocks (a reduce-scatter, then an all-gather); all_gather and
// reduce_scatter moving only the blocks against through a sum of the whole
// (what a communicator without them does). Same bits either way. Prints one
// table: the median of rank 0's times, each call after a barrier.
//
//   scripts/build.sh --target collective_bench && build/bench/collective_bench [rounds]
#include <fmt/format.h>

#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "bench/median.h"
#include "comm/gloo_communicator.h"
#include "comm/tcp_store.h"

namespace {

using Clock = std::chrono::steady_clock;
using pf::bench::median;

constexpr int64_t kNeverInBlocks = int64_t{1} << 50;

struct Row {
  int ranks = 0;
  int64_t bytes = 0;  // of the whole
  std::string op, before, after;
  double before_s = 0, after_s = 0;
};

/// A collective as rank `rank` calls it, the way before or after, on a mesh
/// that goes through the first rank or one that goes in blocks.
using Collective = std::function<void(pf::GlooCommunicator& root, pf::GlooCommunicator& blocks, int rank, bool after)>;

/// `rounds` alternating timings of both ways on each of `ranks` threads;
/// rank 0's medians, before and after.
std::pair<double, double> time_both_ways(int ranks, int rounds, const Collective& collective) {
  pf::TcpStoreServer server(0);
  std::vector<double> b, a;
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      pf::TcpStore store("127.0.0.1", server.port(), std::chrono::seconds(30));
      // Two meshes: one never sums in blocks, one always does.
      pf::GlooOptions root_options{60, "127.0.0.1", 0.2, "root"};
      root_options.blocks_from_bytes = kNeverInBlocks;
      pf::GlooOptions block_options{60, "127.0.0.1", 0.2, "blocks"};
      block_options.blocks_from_bytes = 0;
      pf::GlooCommunicator root(store, r, ranks, root_options);
      pf::GlooCommunicator blocks(store, r, ranks, block_options);
      const pf::CommGroup world = pf::CommGroup::world(ranks);
      for (int round = 0; round < rounds + 1; ++round) {  // round 0 warms the connections up
        for (int which = 0; which < 2; ++which) {
          root.barrier(world);
          blocks.barrier(world);
          const Clock::time_point start = Clock::now();
          collective(root, blocks, r, which == 1);
          const double s = std::chrono::duration<double>(Clock::now() - start).count();
          if (r == 0 && round > 0) (which == 0 ? b : a).push_back(s);
        }
      }
      root.barrier(world);
      blocks.barrier(world);
    });
  for (auto& t : threads) t.join();
  return {median(b), median(a)};
}

std::vector<int64_t> even_counts(int ranks, int64_t n) {
  std::vector<int64_t> counts;
  for (int k = 0; k < ranks; ++k) counts.push_back(n * (k + 1) / ranks - n * k / ranks);
  return counts;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::stoi(argv[1]) : 15;
  std::vector<Row> rows;
  for (const int ranks : {2, 3, 4}) {
    for (const int64_t bytes : {int64_t{64} << 10, int64_t{1} << 20, int64_t{4} << 20, int64_t{16} << 20}) {
      const int64_t n = bytes / 4;
      const std::vector<int64_t> counts = even_counts(ranks, n);
      const pf::CommGroup world = pf::CommGroup::world(ranks);
      std::vector<std::vector<float>> whole(static_cast<size_t>(ranks), std::vector<float>(static_cast<size_t>(n), 1));
      std::vector<std::vector<float>> part(static_cast<size_t>(ranks));
      for (size_t r = 0; r < part.size(); ++r) part[r].assign(static_cast<size_t>(counts[r]), 1);
      const auto mine = [&](int r) -> std::vector<float>& { return whole[static_cast<size_t>(r)]; };
      const auto my_part = [&](int r) -> std::vector<float>& { return part[static_cast<size_t>(r)]; };

      auto [root_s, blocks_s] = time_both_ways(
          ranks, rounds, [&](pf::GlooCommunicator& root, pf::GlooCommunicator& blocks, int r, bool after) {
            (after ? blocks : root).all_reduce(world, mine(r));
          });
      rows.push_back({ranks, bytes, "all_reduce", "through rank 0", "in blocks", root_s, blocks_s});

      // Before: as a communicator without them gathers and reduce-scatters.
      auto [gather_sum_s, gather_s] =
          time_both_ways(ranks, rounds, [&](pf::GlooCommunicator& c, pf::GlooCommunicator&, int r, bool after) {
            const std::span<const float> p(my_part(r));
            after ? c.all_gather(world, p, mine(r), counts) : c.Communicator::all_gather(world, p, mine(r), counts);
          });
      rows.push_back({ranks, bytes, "all_gather", "through a sum", "blocks only", gather_sum_s, gather_s});

      auto [scatter_sum_s, scatter_s] =
          time_both_ways(ranks, rounds, [&](pf::GlooCommunicator& c, pf::GlooCommunicator&, int r, bool after) {
            const std::span<const float> w(mine(r));
            after ? c.reduce_scatter(world, w, my_part(r), counts)
                  : c.Communicator::reduce_scatter(world, w, my_part(r), counts);
          });
      rows.push_back({ranks, bytes, "reduce_scatter", "through a sum", "blocks only", scatter_sum_s, scatter_s});
    }
  }
  fmt::print("Gloo collectives over loopback TCP, ranks as threads, median of {} rounds (rank 0's time after a "
             "barrier)\n\n",
             rounds);
  fmt::print("| ranks | whole | collective | before | ms | after | ms | after / before |\n");
  fmt::print("|---:|---:|---|---|---:|---|---:|---:|\n");
  for (const Row& r : rows)
    fmt::print("| {} | {} KiB | {} | {} | {:.2f} | {} | {:.2f} | {:.2f} |\n", r.ranks, r.bytes >> 10, r.op, r.before,
               r.before_s * 1e3, r.after, r.after_s * 1e3, r.after_s / r.before_s);
  return 0;
}
