// The communicator between processes (and hosts): Gloo's TCP transport for
// the messages, a shared Store for the rendezvous, the failures and each
// rank's heartbeat.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/store.h"

namespace pf {

struct GlooOptions {
  /// A wait ends with CommTimeout after this long without a message while
  /// no rank computes; a rank computing one thing longer, or silent (no
  /// heartbeat) this long, fails the job.
  double timeout_s = 60;
  /// The address other ranks reach this one at (an interface of this host):
  /// by default, the one this process reaches the store through.
  std::string address;
  /// How often each rank publishes its heartbeat and looks at the others'.
  double heartbeat_s = 0.2;
  /// Keys in the store start with this, so that jobs sharing one do not meet.
  std::string prefix = "pf";
  /// An all_reduce of at least this many bytes goes as a reduce-scatter and
  /// an all-gather between every pair of members (each member moving
  /// 2 (N - 1) / N of the bytes, the sums shared out), a smaller one
  /// through the group's first rank (fewer messages; that rank moves
  /// N - 1 times the bytes each way). The bits are the same either way;
  /// every rank must be given the same value. Over loopback on 2 cores,
  /// blocks win from about 4 MiB (bench/collective_bench); across hosts,
  /// where each rank has a link of its own, they would win sooner.
  int64_t blocks_from_bytes = int64_t{4} << 20;
};

/// Rank `rank` of `size` processes meeting through `store` (which must
/// outlive it): connects to every other rank (a full mesh, through Gloo's
/// rendezvous), then serves the Communicator interface. Messages are
/// Gloo unbound-buffer sends and receives matched by (sender, tag), so a
/// receive lands in the request's own buffer; a send to this rank itself is
/// lent. Gathers and reduce-scatters move each member's block straight to
/// the members that need it; all_reduce goes in blocks too or, when small,
/// through the group's first rank (see GlooOptions::blocks_from_bytes).
/// Every sum is in rank order, so every member gets the bits the in-process
/// communicator gives. A
/// background thread publishes this rank's heartbeat (and what it computes)
/// and ends this rank's wait when another rank aborted, went silent, or
/// computed one thing too long, or when the wait itself timed out.
class GlooCommunicator final : public Communicator {
 public:
  GlooCommunicator(Store& store, int rank, int size, GlooOptions options = {});
  ~GlooCommunicator() override;
  GlooCommunicator(const GlooCommunicator&) = delete;
  GlooCommunicator& operator=(const GlooCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  void send(int peer, int64_t tag, const void* data, int64_t bytes, void* context = nullptr) override;
  int post(RecvRequest request) override;
  Received wait(int handle) override;
  void all_reduce(const CommGroup& group, std::span<double> values) override;
  void all_reduce(const CommGroup& group, std::span<float> values) override;
  /// The members' values (or blocks) travel while every member computes
  /// on; they are summed when it finishes.
  int start_all_reduce(const CommGroup& group, std::span<float> values) override;
  void finish_all_reduce(int handle) override;
  void all_gather(const CommGroup& group, std::span<const float> part, std::span<float> whole,
                  std::span<const int64_t> counts) override;
  void all_gather(const CommGroup& group, std::span<const double> part, std::span<double> whole,
                  std::span<const int64_t> counts) override;
  void reduce_scatter(const CommGroup& group, std::span<const float> whole, std::span<float> part,
                      std::span<const int64_t> counts) override;
  void reduce_scatter(const CommGroup& group, std::span<const double> whole, std::span<double> part,
                      std::span<const int64_t> counts) override;
  void broadcast(const CommGroup& group, int root, void* data, int64_t bytes) override;
  void barrier(const CommGroup& group) override;
  void set_busy(const std::string& who, const std::string& what) override;
  void abort(const std::string& message) override;
  std::string error() const override;

  /// How its messages name each rank, e.g. "rank 1 (stage 1, replica 0)"
  /// once the plan is known; "rank 1" until then.
  void set_rank_names(std::vector<std::string> names);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf
