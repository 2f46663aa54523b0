// The cost model of one stage, shared by the search, evaluation and baselines
// so that all of them price a split identically.
#pragma once

#include <cstdint>
#include <vector>

#include "partitioner/cost_graph.h"
#include "partitioner/stage_search.h"

namespace pf {

/// Where stage s runs and what it may use.
struct StageSlot {
  int device = 0;
  int chunk = 0;             // which of the device's virtual stages
  double inv_speed = 1.0;    // 1 / device speed: the search multiplies rather than divides
  int inflight = 1;          // micro-batches stashed at the peak
  int64_t memory_limit = 0;  // floor(device memory / v)
  bool holds_deferred = false;  // a stage after the first under a split backward (CostNode::deferred_bytes)
  /// The previous (next) stage runs on the same device, so what crosses
  /// that boundary is handed over in memory, not sent: zbv's turn, or
  /// every boundary of chunks on one device.
  bool local_in = false, local_out = false;
};

/// Checks `options` against `graph` (device count, speeds, memories, link,
/// stage count against the positions available) and returns one slot per
/// stage. Throws pf::Error on the first problem.
std::vector<StageSlot> stage_slots(const CostGraph& graph, const PartitionOptions& options);

/// Slots for `devices` identical devices of `memory_bytes` and speed 1, with
/// the schedule of `options`: used to tell how many devices would be enough.
std::vector<StageSlot> uniform_slots(const PartitionOptions& options, int devices, int64_t memory_bytes);

/// Prices a node range on a slot in O(1).
class StageCosts {
 public:
  /// Prices with the link, optimizer and replicas of `options`.
  StageCosts(const CostGraph& graph, const PartitionOptions& options);

  const RangeCosts& ranges() const { return ranges_; }

  /// Transfer time across a boundary, paid by the stage on each side of it.
  double comm_s(int boundary) const { return comm_[boundary]; }
  /// Per micro-batch: the range's share of the gradient all-reduce across
  /// data-parallel replicas (0 with one replica or no parameters), and of
  /// the all-reduce of the replicas' blocks of the experts over the replicas
  /// holding each.
  double sync_s(int begin, int end) const {
    const int64_t own = ranges_.own_param_bytes(begin, end), shared = ranges_.param_bytes(begin, end) - own;
    return (shared > 0 ? static_cast<double>(shared) * sync_per_byte_s_ + sync_fixed_s_ : 0.0) +
           (own > 0 ? static_cast<double>(own) * own_sync_per_byte_s_ + own_sync_fixed_s_ : 0.0);
  }
  /// The work of one micro-batch on the slot's device: forward, backward and
  /// the gradient all-reduce's share. It only grows as `begin` moves left,
  /// which the search's early exits rely on.
  double compute_s(const StageSlot& slot, int begin, int end) const {
    return ranges_.work_s(begin, end) * slot.inv_speed + sync_s(begin, end);
  }
  /// The transfers the slot's stage pays: each boundary's, unless the stage
  /// on the other side shares its device.
  double transfer_s(const StageSlot& slot, int begin, int end) const {
    return (slot.local_in ? 0.0 : comm_s(begin)) + (slot.local_out ? 0.0 : comm_s(end));
  }
  double time_s(const StageSlot& slot, int begin, int end) const {
    return compute_s(slot, begin, end) + transfer_s(slot, begin, end);
  }
  /// Weights, their gradients and the optimizer state (`own` of `params`
  /// a replica's own experts), rounded to the nearest byte (by truncating
  /// x + 0.5, as x >= 0: llround is a library call, and this runs in the
  /// search's innermost loop).
  int64_t weight_bytes(int64_t params, int64_t own) const {
    return 2 * params + static_cast<int64_t>(static_cast<double>(params - own) * optimizer_state_factor_ +
                                             static_cast<double>(own) * own_optimizer_state_factor_ + 0.5);
  }
  /// The memory of the range's own nodes; it only grows as `begin` moves
  /// left, which lets the search stop early.
  int64_t own_memory(const StageSlot& slot, int begin, int end) const {
    const int64_t slot_bytes =
        ranges_.stash_bytes(begin, end) + (slot.holds_deferred ? ranges_.deferred_bytes(begin, end) : 0);
    return weight_bytes(ranges_.param_bytes(begin, end), ranges_.own_param_bytes(begin, end)) +
           slot_bytes * slot.inflight;
  }
  /// own_memory plus the received activations, which are stashed too.
  int64_t memory_bytes(const StageSlot& slot, int begin, int end) const {
    return own_memory(slot, begin, end) + ranges_.crossing_bytes(begin) * slot.inflight;
  }

 private:
  RangeCosts ranges_;
  std::vector<double> comm_;  // (n + 1), per boundary
  double optimizer_state_factor_, own_optimizer_state_factor_;
  double sync_per_byte_s_ = 0, sync_fixed_s_ = 0;          // per micro-batch
  double own_sync_per_byte_s_ = 0, own_sync_fixed_s_ = 0;  // the experts' blocks', per micro-batch
};

}  // namespace pf
