// The partitioner's input: an abstract DAG of costed nodes in topological order.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace pf {

/// One node of the cost graph: an op, or a group of ops, with its cost for one
/// micro-batch on a device of speed 1.
struct CostNode {
  std::string name;
  std::string layer;  // the layer it belongs to, "" for none (read by the equal-layers baseline)
  double forward_s = 0;
  double backward_s = 0;
  int64_t param_bytes = 0;
  int64_t stash_bytes = 0;  // activations the backward pass needs, per micro-batch
  double flops = 0;         // arithmetic of its forward and backward, per micro-batch (for utilisation)
  /// With the backward split (zero bubble): what its input-gradient part
  /// computes and its weight-gradient part reads (a product's output
  /// gradient), held from one to the other, per micro-batch. Only a stage
  /// after the first holds it: the first has no input gradient, so its
  /// weight part does its whole backward.
  int64_t deferred_bytes = 0;
  /// Of param_bytes, what a data-parallel replica holds alone (its block of
  /// the experts under expert parallelism): never all-reduced.
  int64_t own_param_bytes = 0;
};

/// A tensor flowing between nodes, per micro-batch. A graph input (producer
/// -1) is available on every stage and never transferred.
struct CostTensor {
  int producer = -1;
  std::vector<int> consumers;  // node indices, all after the producer
  int64_t bytes = 0;
  std::string name;
};

/// A parameter read by several nodes (a tied embedding and its head): every
/// stage holding one of them holds a copy, with its gradient and optimizer
/// state. Its bytes are in the first reader's `param_bytes`; the copies of
/// later stages are added by RangeCosts::param_bytes.
struct SharedParam {
  int param = -1;            // the node of the parameter itself
  int64_t bytes = 0;
  std::vector<int> readers;  // node indices, increasing, at least two
};

/// A stage is a contiguous range [begin, end) of `nodes`; it may start only at
/// a position listed in `cut_candidates` (1..n-1, increasing), or anywhere
/// when that list is empty.
struct CostGraph {
  std::vector<CostNode> nodes;
  std::vector<CostTensor> tensors;
  std::vector<int> cut_candidates;
  std::vector<SharedParam> shared_params;
};

/// Throws pf::Error naming the first node, tensor or candidate that breaks the
/// rules above (negative or non-finite costs, consumers not after producers,
/// candidates out of range or not increasing).
void validate(const CostGraph& graph);

/// The positions where stages may begin or end, increasing: 0, the cut
/// candidates (or 1..n-1 when there are none), and n.
std::vector<int> stage_boundaries(const CostGraph& graph);

/// Prefix sums over the nodes, and the tensors live across every boundary,
/// so that every quantity of a node range [begin, end) costs O(1).
class RangeCosts {
 public:
  explicit RangeCosts(const CostGraph& graph);

  int nodes() const { return static_cast<int>(work_.size()) - 1; }
  /// Forward plus backward seconds of the nodes in [begin, end), at speed 1.
  double work_s(int begin, int end) const { return work_[end] - work_[begin]; }
  /// The parameters a stage of [begin, end) holds: those whose first reader
  /// is in it, and a copy of each shared one first read before it and read
  /// in it again.
  int64_t param_bytes(int begin, int end) const {
    int64_t bytes = params_[end] - params_[begin];
    for (const SharedParam& p : shared_params_)
      if (p.readers.front() < begin) {
        auto next = std::lower_bound(p.readers.begin(), p.readers.end(), begin);
        if (next != p.readers.end() && *next < end) bytes += p.bytes;
      }
    return bytes;
  }
  /// Of param_bytes(begin, end), what the replicas hold alone (CostNode::own_param_bytes).
  int64_t own_param_bytes(int begin, int end) const { return own_params_[end] - own_params_[begin]; }
  int64_t stash_bytes(int begin, int end) const { return stash_[end] - stash_[begin]; }
  int64_t deferred_bytes(int begin, int end) const { return deferred_[end] - deferred_[begin]; }
  /// Bytes of the tensors produced before `boundary` and consumed at or after
  /// it: what a stage beginning there receives and a stage ending there sends.
  /// A tensor that skips several stages crosses each boundary in between,
  /// because a linear pipeline relays it stage by stage.
  int64_t crossing_bytes(int boundary) const { return crossing_bytes_[boundary]; }
  /// How many distinct tensors cross `boundary` (one transfer each).
  int crossing_tensors(int boundary) const { return crossing_tensors_[boundary]; }

 private:
  std::vector<double> work_;             // (n + 1) prefix sums
  std::vector<int64_t> params_;          // (n + 1)
  std::vector<int64_t> own_params_;      // (n + 1)
  std::vector<int64_t> stash_;           // (n + 1)
  std::vector<int64_t> deferred_;        // (n + 1)
  std::vector<SharedParam> shared_params_;
  std::vector<int64_t> crossing_bytes_;  // (n + 1), indexed by boundary
  std::vector<int> crossing_tensors_;    // (n + 1)
};

}  // namespace pf
