// The communicator between GPU processes: NCCL moves the bytes from device to
// device; the rendezvous store carries the unique ids, the first failure and
// each rank's heartbeat, as between CPU processes.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/job_watch.h"
#include "comm/store.h"

namespace pf {

struct NcclOptions {
  int device = 0;  ///< the CUDA device this rank computes on
  /// The timeout, heartbeat and key prefix, as between CPU processes.
  WatchOptions watch;
};

/// Rank `rank` of `size` processes, one GPU each (NCCL refuses two ranks of
/// one communicator on one GPU), meeting through `store` (which must outlive
/// it): rank 0 publishes the world's ncclUniqueId there, every rank joins,
/// and each ordered pair of ranks gets a two-rank communicator of its own
/// (ncclCommSplit) on a stream of its own, carrying only that direction's
/// messages. So the receives posted ahead wait on their stream without
/// holding up this rank's sends, which a single stream (or one communicator
/// per pair, both ways) would queue behind them.
///
/// NCCL has no tags: the messages from one rank to another are matched in
/// the order they are sent, which must be the order their receiver posted
/// them (the runtime posts in its senders' order: receive_order in
/// runtime/schedule.h). Each message is preceded by a
/// 16-byte header (tag and size) that wait() checks, so that a mismatch is
/// an error naming both tags rather than bytes in the wrong buffer.
///
/// Buffers may be device memory (sent and received in place) or host memory
/// (staged through pinned and device blocks kept for reuse). A send waits,
/// on the device, for the event its `context` gives (a cudaEvent_t: the
/// sender's work that wrote the bytes); a wait returns once the bytes are
/// in place, so work the caller queues afterwards reads them.
///
/// Collectives run on the group's own communicator: the world's, or one
/// made when a group is first used (its first rank publishes the unique id
/// in the store); every member of a group calls its collectives in the same
/// order. all_reduce is ncclAllReduce: every member gets the same bits
/// (NCCL reduces each element once and copies the result to every rank, in
/// ring, tree or NVLS alike), but in NCCL's order, not rank order, so the
/// sums may differ in their last bits from the in-process and Gloo ones.
///
/// Waits poll (cudaEventQuery, ncclCommGetAsyncError) under a JobWatch, so
/// they end as Gloo's do: another rank's abort, a silent or stuck rank, or
/// the timeout with no rank computing. A failure aborts every NCCL
/// communicator of this rank (ncclCommAbort), which ends its kernels; the
/// communicator is then unusable. Every call, abort() included, comes from
/// the rank's one thread.
class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Store& store, int rank, int size, NcclOptions options = {});
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int size() const override;
  bool device_messages() const override { return true; }
  void send(int peer, int64_t tag, const void* data, int64_t bytes, void* context = nullptr) override;
  int post(RecvRequest request) override;
  Received wait(int handle) override;
  void all_reduce(const CommGroup& group, std::span<double> values) override;
  void all_reduce(const CommGroup& group, std::span<float> values) override;
  /// Queues the reduction on the group's stream; finishing waits for it.
  int start_all_reduce(const CommGroup& group, std::span<float> values) override;
  void finish_all_reduce(int handle) override;
  void broadcast(const CommGroup& group, int root, void* data, int64_t bytes) override;
  void barrier(const CommGroup& group) override;
  void set_busy(const std::string& who, const std::string& what) override;
  void abort(const std::string& message) override;
  std::string error() const override;

  /// How its messages name each rank (see GlooCommunicator::set_rank_names).
  void set_rank_names(std::vector<std::string> names);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf
