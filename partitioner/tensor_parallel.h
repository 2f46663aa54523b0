// Tensor parallelism as the cost model sees it: Megatron-LM's split of each
// layer's matmuls over the GPUs of one node. Modelled, never executed.
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
};

/// Where Megatron's split puts each value of a graph, and its all-reduces.
///
/// A matmul whose second operand is a parameter (a weight) is split along
/// the weight: column-parallel when its activation operand is whole (each GPU
/// computes a slice of the output columns; the output is sharded), and
/// row-parallel when that operand is already sharded (each GPU computes a
/// partial sum of the whole output, which an all-reduce completes). An
/// embedding of a parameter table is vocabulary-parallel: each GPU looks up
/// its rows and an all-reduce completes the output. Every other op's result
/// is sharded when one of its operands is, and whole otherwise (layer norms,
/// residual adds, a row-parallel layer's bias). A parameter is sharded when
/// a split matmul or embedding uses it, or when it joins a sharded value (a
/// column-parallel layer's bias). In a GPT block that is Megatron's two
/// all-reduces of the (b, s, h) activation in the forward (after attention's
/// and the MLP's output projections) and two in the backward (the gradients
/// at the inputs of the QKV and first MLP projections).
struct TensorParallelSplit {
  std::vector<bool> sharded;               // per value: each GPU holds 1/degree of it
  std::vector<bool> divided;               // per op: each GPU does 1/degree of its work
  std::vector<int64_t> forward_reduced;    // per op: elements all-reduced after its forward
  std::vector<int64_t> backward_reduced;   // per op: elements all-reduced in its backward
};

/// The split of `graph` (inlined and typed, one op per cost-graph node).
/// `sharded_args` (empty, or one flag per value) marks the values that
/// arrive sharded: a stage's inputs that the split of the stages before it
/// holds so, such as the output of a column-parallel product cut from the
/// row-parallel one that reads it.
TensorParallelSplit tensor_parallel_split(const Function& graph, const std::vector<bool>& sharded_args = {});

/// A ring all-reduce of `bytes` over `ranks` ranks joined by `link`
/// (RingAllReduce). Zero for one rank or no bytes.
double ring_all_reduce_s(double bytes, int ranks, const LinkSpec& link);

/// Prices `cg` (built from `graph`, node i = op i) for one GPU of a group of
/// `tp.degree`: a divided op's forward and backward times, and a sharded
/// value's stash or parameter bytes, are divided by the degree; each op's
/// all-reduces (ring over `tp.link`, in `tp.element_bytes` per element) are
/// added to its forward or backward time. FLOPs are left whole (they are the
/// model's). Tensors crossing a cut keep their whole size: every GPU of the
/// group holds the activation it receives. Degree 1 changes nothing.
void apply_tensor_parallel(CostGraph& cg, const Function& graph, const TensorParallel& tp,
                           const std::vector<bool>& sharded_args = {});

/// `cluster` seen as groups of `degree` devices: a node holds
/// devices_per_node / degree of them (degree must divide it), and each link's
/// bandwidth is multiplied by `bandwidth_scale` (the group's `degree` GPUs
/// each sending their part at once).
Cluster grouped_cluster(const Cluster& cluster, int degree, double bandwidth_scale);

}  // namespace pf
