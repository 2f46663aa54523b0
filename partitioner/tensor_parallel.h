// Tensor parallelism as the cost model sees it: Megatron-LM's split of each
// layer's matmuls over the GPUs of one node, priced as the tensor-parallel
// pass writes each rank's program.
#pragma once

#include <cstdint>
#include <vector>

#include "ir/module.h"
#include "partitioner/cost_graph.h"
#include "partitioner/device_profile.h"
#include "partitioner/stage_search.h"

namespace pf {

/// A pipeline device made of `degree` GPUs of one node.
struct TensorParallel {
  int degree = 1;
  LinkSpec link;               // between the GPUs of the group (inside a node)
  int64_t element_bytes = 4;   // bytes an all-reduce moves per element: the compute dtype's
  bool sequence = false;       // sequence parallelism on top (tensor_parallel_layout)
  /// Under it, the graph's arguments and results (a stage's) that arrive
  /// and leave in each GPU's part of the tokens.
  std::vector<std::string> hand_offs_in_parts = {};
};

/// Where Megatron's split (tensor_parallel_layout, which the tensor-parallel
/// pass executes) puts each value of a graph, and its all-reduces: a
/// column-parallel product's input gradient is summed over the group in the
/// backward, a row-parallel product's partial output in the forward. In a GPT
/// block that is Megatron's two all-reduces of the (b, s, h) activation in
/// the forward (after attention's and the MLP's output projections) and two
/// in the backward (the gradients at the inputs of the QKV and first MLP
/// projections). A token table cut by vocabulary rows sums its lookups in
/// the forward, and a loss over each GPU's classes exchanges 3 floats per
/// position (the row's maximum, then its two parts). Under sequence
/// parallelism each of those all-reduces becomes a reduce-scatter, and a
/// column product's input is all-gathered in the forward and again in the
/// backward, its gradient reduce-scattered: each priced as a ring moves it,
/// half an all-reduce (NCCL's own collectives; the in-process communicator
/// moves only the parts too, while Pipeforge's Gloo and NCCL communicators
/// still go through their sum).
struct TensorParallelSplit {
  std::vector<bool> sharded;               // per value: each GPU holds 1/degree of it
  std::vector<bool> tokens;                // per value: ... as its part of the tokens (sequence parallel)
  std::vector<bool> divided;               // per op: each GPU does 1/degree of its work
  std::vector<int64_t> forward_reduced;    // per op: elements all-reduced after its forward
  std::vector<int64_t> backward_reduced;   // per op: elements all-reduced in its backward
  std::vector<int64_t> forward_gathered;   // per op: elements all-gathered or reduce-scattered (sequence parallel)
  std::vector<int64_t> backward_gathered;
};

/// The split of `graph` (inlined and typed, one op per cost-graph node) over
/// `degree` GPUs; its first `whole_results` results (all when negative) are
/// whole, and so are the parameters in `whole_params` (tensor_parallel_layout).
TensorParallelSplit tensor_parallel_split(const Function& graph, int degree, int whole_results = -1,
                                          const std::vector<std::string>& whole_params = {}, bool sequence = false,
                                          const std::vector<std::string>& hand_offs_in_parts = {});

/// The positions of `candidates` (cuts before op i, as CostGraph's; empty
/// meaning 1..n-1) where no share crosses from one stage to the next: the
/// tensor-parallel pass splits each stage's program alone, so a region of
/// the split stays within a stage. Throws if none is left.
std::vector<int> cuts_between_shares(const Function& graph, const TensorParallelSplit& split,
                                     std::vector<int> candidates);

/// A ring all-reduce of `bytes` over `ranks` ranks joined by `link`
/// (RingAllReduce). Zero for one rank or no bytes.
double ring_all_reduce_s(double bytes, int ranks, const LinkSpec& link);

/// Prices `cg` (built from `graph`, node i = op i) for one GPU of a group of
/// `tp.degree`: a divided op's forward and backward times, and a sharded
/// value's stash or parameter bytes, are divided by the degree; each op's
/// all-reduces (ring over `tp.link`, in `tp.element_bytes` per element) are
/// added to its forward or backward time. FLOPs are left whole (they are the
/// model's). Tensors crossing a cut are whole: every GPU of the group holds
/// the activation it receives. Degree 1 changes nothing. Returns the split
/// it priced (tensor_parallel_split with `whole_results` and `whole_params`;
/// empty for degree 1).
TensorParallelSplit apply_tensor_parallel(CostGraph& cg, const Function& graph, const TensorParallel& tp,
                                          int whole_results = -1, const std::vector<std::string>& whole_params = {});

/// `cluster` seen as groups of `degree` devices: a node holds
/// devices_per_node / degree of them (degree must divide it), and each link's
/// bandwidth is multiplied by `bandwidth_scale` (the group's `degree` GPUs
/// each sending their part at once).
Cluster grouped_cluster(const Cluster& cluster, int degree, double bandwidth_scale);

}  // namespace pf
