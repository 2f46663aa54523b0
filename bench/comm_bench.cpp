// What a hand-off between processes costs: one message of each size sent
// with GlooCommunicator over loopback TCP (two ranks, a rendezvous through a
// TcpStore, as `pipeforge launch` sets up), against a memcpy of the same
// bytes, which is what the threaded pipeline's hand-off costs at most (it
// lends the buffer: nothing is copied). Ping-pong: the one-way time is half
// the round trip. Prints one table.
//
//   scripts/build.sh --target comm_bench && build/bench/comm_bench [rounds]
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/median.h"
#include "comm/gloo_communicator.h"
#include "comm/tcp_store.h"

namespace {

using Clock = std::chrono::steady_clock;
using pf::bench::median;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Median one-way seconds of a `bytes` message between ranks 0 and 1.
double ping_pong(pf::Communicator& c, int64_t bytes, int rounds, int64_t tag) {
  std::vector<char> out(static_cast<size_t>(bytes), 1), in(static_cast<size_t>(bytes));
  const int peer = 1 - c.rank();
  const pf::CommGroup both{"both", {0, 1}};
  std::vector<double> one_way;
  for (int r = 0; r < rounds + 1; ++r) {  // round 0 warms the connection up
    const int64_t t = tag + 2 * r;
    const int h = c.post({peer, t + (c.rank() == 0 ? 1 : 0), in.data(), bytes, "the pong"});
    const Clock::time_point start = Clock::now();
    if (c.rank() == 0) {
      c.send(peer, t, out.data(), bytes);
      c.wait(h);
    } else {
      c.wait(h);
      c.send(peer, t + 1, out.data(), bytes);
    }
    if (r > 0) one_way.push_back(since(start) / 2);
    c.barrier(both);  // the sends are done with `out`
  }
  return median(one_way);
}

double memcpy_seconds(int64_t bytes, int rounds) {
  std::vector<char> a(static_cast<size_t>(bytes), 1), b(static_cast<size_t>(bytes), 2);
  std::vector<double> s;
  for (int r = 0; r < rounds + 1; ++r) {
    const Clock::time_point start = Clock::now();
    std::memcpy(b.data(), a.data(), a.size());
    if (r > 0) s.push_back(since(start));
  }
  return median(s);
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::stoi(argv[1]) : 20;
  const std::vector<int64_t> sizes = {4 << 10, 64 << 10, 1 << 20, 16 << 20, 64 << 20};
  std::vector<std::vector<double>> seconds(2, std::vector<double>(sizes.size()));
  pf::TcpStoreServer server(0);
  std::vector<std::thread> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      pf::TcpStore store("127.0.0.1", server.port(), std::chrono::seconds(30));
      pf::GlooCommunicator comm(store, r, 2, pf::GlooOptions{60, "127.0.0.1", 0.2, "bench"});
      for (size_t k = 0; k < sizes.size(); ++k)
        seconds[static_cast<size_t>(r)][k] = ping_pong(comm, sizes[k], rounds, static_cast<int64_t>(k) << 20);
    });
  for (auto& t : ranks) t.join();
  fmt::print("Gloo over loopback TCP, one way (half a ping-pong), median of {} rounds, against memcpy\n\n", rounds);
  fmt::print("| message | Gloo one way | Gloo GB/s | memcpy | memcpy GB/s | Gloo / memcpy |\n");
  fmt::print("|---:|---:|---:|---:|---:|---:|\n");
  for (size_t k = 0; k < sizes.size(); ++k) {
    const double gloo = seconds[0][k], copy = memcpy_seconds(sizes[k], rounds);
    const double bytes = static_cast<double>(sizes[k]);
    fmt::print("| {} KiB | {:.1f} us | {:.2f} | {:.1f} us | {:.2f} | {:.0f}x |\n", sizes[k] >> 10, gloo * 1e6,
               bytes / gloo / 1e9, copy * 1e6, bytes / copy / 1e9, gloo / copy);
  }
  return 0;
}
