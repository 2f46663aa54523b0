// How ranks talk: messages between two ranks and collectives over named
// groups. A rank is one worker walking its part of a plan; the pipeline's
// ranks are threads of one process today (LocalCommunicator), and the same
// worker code runs over a communicator between processes.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pf {

/// Ranks that take part in a collective together: the whole world, the
/// stages holding one tied parameter, the replicas of one stage. A group's
/// name is the same on every member, so that a communicator between
/// processes can set each group up once.
struct CommGroup {
  std::string name;        ///< "world", "tied:wte", ...
  std::vector<int> ranks;  ///< increasing

  /// Every rank of a world of `size`, named "world".
  static CommGroup world(int size);

  bool contains(int rank) const;
};

/// The members' blocks in a gather or a reduce-scatter: the k-th member's
/// covers [begin[k], begin[k + 1]) of the whole, and `place` is the rank's k.
struct GroupBlocks {
  std::vector<int64_t> begin;
  size_t place = 0;

  int64_t count(size_t k) const { return begin[k + 1] - begin[k]; }
};

/// The blocks of `counts` values each, checked: `rank` is a member, and the
/// counts tile a whole of `whole` values with `part` at the rank's place.
GroupBlocks group_blocks(const CommGroup& group, int rank, std::span<const int64_t> counts, size_t part,
                         size_t whole);

/// Thrown by a wait that another rank's failure (Communicator::abort) ended:
/// that failure is the step's error, so this one only unwinds the caller.
struct CommAborted {};

/// Thrown by a wait that timed out while no rank was computing: something
/// that should have been sent never will be. The message names every rank
/// waiting at that moment and what for.
struct CommTimeout {
  std::string message;
};

/// A receive posted ahead of its message (see Communicator::post).
struct RecvRequest {
  int peer = -1;           ///< the sender's rank
  int64_t tag = 0;         ///< one message: sender and receiver agree on it
  void* dst = nullptr;     ///< where the bytes go when they must be copied
  int64_t bytes = 0;
  /// For the watchdog's message: "stage 1 waits for the activations of
  /// micro-batch 3 from stage 0".
  std::string waiting;
};

/// What a receive got.
struct Received {
  /// Where the bytes are: the request's `dst`, or, when the communicator
  /// shares memory with the sender (in process), the sender's own buffer,
  /// read in place.
  const void* data = nullptr;
  /// What the sender attached to the message: in process, the object that
  /// knows how to reach its device's memory (a GPU stage's events); null
  /// between processes.
  void* context = nullptr;
};

/// One rank's end of a communicator. Waits (receives and collectives) end
/// early with CommAborted once any rank called abort(), and with
/// CommTimeout after `timeout_s` during which no rank was computing (see
/// set_busy). Every member of a collective gets the same bits whatever
/// order the ranks arrive in: the in-process and Gloo communicators sum in
/// rank order, NCCL in its own. One thread per rank.
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;

  /// Whether messages move between device memories by themselves (NCCL
  /// between GPU processes): a GPU stage then sends from and receives into
  /// its own device buffers, and a send's `context` is the device event
  /// after which its bytes are ready (a cudaEvent_t; null: ready now).
  virtual bool device_messages() const { return false; }

  /// Sends `bytes` at `data` to `peer` under `tag`, without waiting for the
  /// receiver (`peer` may be this rank: a device holding neighbouring
  /// interleaved stages). The buffer must stay unchanged until the next barrier of the
  /// world: in process it is lent to the receiver, who reads it in place.
  /// `context` goes to the receiver in process (see Received), and orders
  /// the transfer with device_messages().
  virtual void send(int peer, int64_t tag, const void* data, int64_t bytes, void* context = nullptr) = 0;
  /// Posts a receive ahead of its message; wait() completes it. Returns a
  /// handle for wait.
  virtual int post(RecvRequest request) = 0;
  /// Waits for the message of a posted receive.
  virtual Received wait(int handle) = 0;
  /// Whether wait(handle) would return at once, for a caller with other
  /// work to do meanwhile. One that cannot tell without waiting (Gloo's
  /// receives, NCCL's) says false: the caller then does that work first,
  /// which must be work it would have to do before long anyway (a rank
  /// packs the weights its next products read), and waits after.
  virtual bool ready(int handle);

  /// Sums `values` over the group's ranks, element by element; every member
  /// ends with the same sum (see the class comment for the order).
  virtual void all_reduce(const CommGroup& group, std::span<double> values) = 0;
  virtual void all_reduce(const CommGroup& group, std::span<float> values) = 0;
  /// Starts an all_reduce of `values` that finish_all_reduce(handle)
  /// completes, so that this rank computes on meanwhile where the
  /// communicator can move the bytes by itself (between processes);
  /// `values` stay untouched by the caller until then. A rank finishes its
  /// reductions in the order it started them, and starts them in the same
  /// order as the other members. By default the whole all_reduce happens
  /// here and finishing has nothing left to do.
  virtual int start_all_reduce(const CommGroup& group, std::span<float> values);
  virtual void finish_all_reduce(int handle);
  /// Gathers the members' parts: the k-th member's `counts[k]` values land
  /// in `whole` after those of the members before it, on every member;
  /// `part` is this rank's. By default through all_reduce: each part placed
  /// in a zeroed whole, which the sum fills in (twice the bytes of a ring).
  virtual void all_gather(const CommGroup& group, std::span<const float> part, std::span<float> whole,
                          std::span<const int64_t> counts);
  virtual void all_gather(const CommGroup& group, std::span<const double> part, std::span<double> whole,
                          std::span<const int64_t> counts);
  /// Sums `whole` over the members, each keeping its block in `part` (the
  /// k-th member's: `counts[k]` values after those of the members before
  /// it), with all_reduce's bits. By default through all_reduce of a copy.
  virtual void reduce_scatter(const CommGroup& group, std::span<const float> whole, std::span<float> part,
                              std::span<const int64_t> counts);
  virtual void reduce_scatter(const CommGroup& group, std::span<const double> whole, std::span<double> part,
                              std::span<const int64_t> counts);
  /// Copies `bytes` at `data` from the group's rank `root` to every member.
  virtual void broadcast(const CommGroup& group, int root, void* data, int64_t bytes) = 0;
  virtual void barrier(const CommGroup& group) = 0;

  /// For the watchdog: `who` (e.g. "stage 1") is computing `what` (e.g.
  /// "the forward of micro-batch 0"), or, with an empty `what`, no longer.
  /// While any rank computes, no wait times out: its result may be what the
  /// others wait for.
  virtual void set_busy(const std::string& who, const std::string& what) = 0;
  /// Ends every rank's waits with CommAborted; `message` says why (the
  /// first one given is kept).
  virtual void abort(const std::string& message) = 0;
  /// The message of the failure that ended the waits (this rank's abort or
  /// another's, or the watchdog's); empty while there is none.
  virtual std::string error() const = 0;
};

}  // namespace pf
