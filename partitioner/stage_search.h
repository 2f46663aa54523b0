// Stage search: cut a cost graph into contiguous pipeline stages that
// minimise the pipeline period within every device's memory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "partitioner/cost_graph.h"
#include "partitioner/memory_rule.h"
#include "runtime/schedule.h"

namespace pf {

/// One device of the pipeline. A stage's compute time is divided by `speed`;
/// its transfers are not.
struct DeviceSpec {
  std::string name;
  double speed = 1.0;
  int64_t memory_bytes = 0;
};

/// The link between neighbouring stages (one kind for the whole pipeline).
struct LinkSpec {
  double bandwidth_bytes_per_s = 0;
  double latency_s = 0;
};

/// A ring all-reduce over `replicas` copies joined by `link`: each copy sends
/// and receives 2 (d - 1) / d of the bytes, in 2 (d - 1) latency-bound steps.
struct RingAllReduce {
  double per_byte_s = 0;
  double fixed_s = 0;

  RingAllReduce() = default;
  RingAllReduce(int replicas, const LinkSpec& link)
      : per_byte_s(replicas > 1 ? 2.0 * (replicas - 1) / replicas / link.bandwidth_bytes_per_s : 0.0),
        fixed_s(replicas > 1 ? 2.0 * (replicas - 1) * link.latency_s : 0.0) {}
  /// Seconds to sum `bytes` of gradients; 0 without bytes or replicas.
  double seconds(double bytes) const {
    return bytes > 0 && per_byte_s + fixed_s > 0 ? bytes * per_byte_s + fixed_s : 0.0;
  }
};

/// What to partition for.
///
/// `stages` counts stages including virtual ones: with `virtual_stages` v,
/// `devices` holds p = stages / v devices and `placement` says which device
/// runs each stage: round robin (Megatron: stage s on device s % p), for
/// zbv a V (stages d and 2p - 1 - d on device d), or a schedule file's.
struct PartitionOptions {
  int stages = 1;
  int microbatches = 1;
  MemoryRule rule = MemoryRule::one_f_one_b;
  int virtual_stages = 1;
  StagePlacement placement;
  /// Under MemoryRule::written (a schedule file's lists): each stage's peak
  /// of stashed micro-batches, read off the lists, and whether they split
  /// the backward.
  std::vector<int> written_stashed;
  bool written_split = false;
  std::vector<DeviceSpec> devices;
  LinkSpec link;
  /// Bytes of optimizer state per parameter byte: 1 for SGD with momentum, 2 for AdamW.
  double optimizer_state_factor = 2.0;
  /// The same per byte of a replica's own experts (CostNode::own_param_bytes):
  /// optimizer_state_factor, unless the state is sharded, over the replicas
  /// holding the block (data_parallel / expert_parallel) instead of all.
  double own_optimizer_state_factor = 2.0;
  /// Data-parallel replicas of the whole pipeline: after each step every
  /// stage averages its gradients with its copies in the other replicas, a
  /// ring all-reduce over `replica_link` (the slowest link between copies).
  /// Its time is charged to the stage, 1/microbatches of it per micro-batch.
  int data_parallel = 1;
  LinkSpec replica_link;
  /// The replicas form groups of this many sharing the experts out
  /// (Plan::expert_parallel): a block's gradients (CostNode::own_param_bytes)
  /// are summed over the data_parallel / expert_parallel replicas holding it.
  int expert_parallel = 1;
  /// Manual split: exactly stages - 1 increasing positions (stage starts),
  /// each a cut candidate. When given, partition() only evaluates and places
  /// them, with no search, and fails if a device's stages together exceed its
  /// memory.
  std::vector<int> fixed_cuts;
};

/// One stage of a plan and what the cost model predicts for it.
struct StagePlan {
  int begin = 0;  // node range [begin, end)
  int end = 0;
  int device = 0;        // index into PartitionOptions::devices
  int chunk = 0;         // which of the device's virtual stages (0 when v = 1)
  double compute_s = 0;  // forward + backward of one micro-batch, scaled by device speed
  double sync_s = 0;     // its share of the step's gradient all-reduce across replicas
  double comm_s = 0;     // activations in and out, and their gradients back
  double time_s = 0;     // compute_s + sync_s + comm_s
  int64_t param_bytes = 0;
  int64_t stash_bytes = 0;     // activations of its own nodes, per micro-batch
  int64_t received_bytes = 0;  // per micro-batch, forward direction
  int64_t sent_bytes = 0;
  int received_tensors = 0;
  int sent_tensors = 0;
  int inflight = 0;          // micro-batches stashed at the peak (MemoryRule)
  int64_t memory_bytes = 0;  // weights + grads + optimizer state + stashed activations
  int64_t memory_limit = 0;  // the device's memory / v: this stage's share, which search respects
  int64_t own_param_bytes = 0;  // of param_bytes, its replica's alone (CostNode::own_param_bytes)
};

/// Everything placed on one device.
struct DevicePlan {
  std::string name;
  double busy_s = 0;         // sum of its stages' times: its work per micro-batch
  int64_t memory_bytes = 0;  // sum of its stages' memory
  int64_t memory_limit = 0;
  bool fits = true;
};

/// A partition and its predicted cost.
struct PartitionResult {
  std::string method;     // "dp", "fixed", "equal-layers" or "equal-params"
  std::vector<int> cuts;  // stages - 1 increasing positions: stage s + 1 begins at cuts[s]
  std::vector<StagePlan> stages;
  std::vector<DevicePlan> devices;
  /// Steady-state time per micro-batch: v * the slowest stage's time (see partition()).
  double period_s = 0;
  /// (slowest - mean) / mean of the stage times, in percent.
  double imbalance_pct = 0;
  /// Every device's stages fit its memory. Always true for partition();
  /// the baselines report false instead of failing.
  bool fits_memory = true;
  double search_s = 0;  // wall time spent planning
};

/// The error of a search in which no split fits the devices' memory (the
/// message says how much is needed); `--recompute auto` catches it to try
/// again with less stashed.
class DoesNotFit : public Error {
 public:
  using Error::Error;
};

/// Finds the cuts that minimise the period, exactly, by dynamic programming
/// over (stage, boundary) in O(K^2 * stages) for K stage boundaries. Among
/// the splits with that period it returns one whose stage times add up to
/// least (a second exact DP): the same throughput with the least traffic and
/// the shortest pipeline fill and drain.
///
/// Cost of stage s = [i, j) on device d (v virtual stages per device):
///   time   = work(i, j) / speed(d) + comm(i) + comm(j)
///   comm(b) = 2 * crossing_bytes(b) / bandwidth + 2 * latency * crossing_tensors(b)
///             (activations forward and their gradients backward; see
///             RangeCosts for what crosses a boundary)
///   memory = param_bytes * (2 + optimizer_state_factor)   (weights, grads, state;
///                                                          rounded to the byte;
///                                                          own experts' bytes at
///                                                          own_optimizer_state_factor)
///          + (stash_bytes + received_bytes) * inflight(s)  (see MemoryRule)
/// Both depend on (i, j) only, which is what makes the DP exact.
///
/// Objective: period = v * max over stages of time, subject to every stage's
/// memory <= floor(memory(d) / v). With v = 1 this is the plain steady-state
/// period under each device's memory. With v > 1 (interleaved), each device
/// runs its v chunks in turn in lock step with its neighbours, so each of the
/// v slots lasts as long as the slowest chunk; this bounds every device's
/// busy time from above and equals it when chunks are balanced. The memory
/// share makes the device constraint separable per chunk (a device's chunks
/// together never exceed its memory) at the price of excluding splits that
/// fit only by giving one chunk more than its share.
///
/// Throws pf::Error on invalid input, on more stages than positions to cut
/// ("cannot cut 12 layers into 16 stages"), and when no split fits, with how
/// much memory per device the best split would need and how many devices of
/// the largest given size would be enough.
PartitionResult partition(const CostGraph& graph, const PartitionOptions& options);

/// Evaluates given cuts with the same cost model, without searching and
/// without failing on memory (see PartitionResult::fits_memory).
PartitionResult evaluate(const CostGraph& graph, const PartitionOptions& options, const std::vector<int>& cuts);

/// Baseline: every stage gets the same number of layers (DeepSpeed's
/// "uniform"). A layer is a maximal run of consecutive nodes with the same
/// `layer` name; a node without one is a layer of its own. Cuts snap to the
/// nearest cut candidate.
PartitionResult equal_layers(const CostGraph& graph, const PartitionOptions& options);

/// Baseline: stage k ends at the cut candidate where the running parameter
/// count comes closest to k / stages of the total.
PartitionResult equal_params(const CostGraph& graph, const PartitionOptions& options);

}  // namespace pf
