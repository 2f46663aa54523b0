// From an inlined, typed model graph to the partitioner's cost graph: one
// node per op, one tensor per value that may cross a cut.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ir/module.h"
#include "passes/autodiff.h"
#include "partitioner/cost_graph.h"
#include "partitioner/device_profile.h"

namespace pf {

/// Seconds one execution of an op takes, forward and backward, for one
/// micro-batch on a device of speed 1 (a roofline or a measured profile).
using OpTimer = std::function<OpTiming(const Function& graph, const Op& op, const OpCost& cost)>;

/// Where stages may begin.
enum class CutPoints {
  layers,  ///< only where the `layer` tag changes
  any,     ///< before any op, inside layers too (but never between a parameter,
           ///< constant or mask and the op after it, which would separate nothing)
};

/// Builds the cost graph of `graph` (inlined and verified under `binding`).
/// Values made by ops without operands (parameters, constants, masks) never
/// cross a cut: every stage that uses them holds its own copy, a tied
/// parameter included; a parameter's bytes are charged to the node of its
/// first reader, the stage that holds it wherever it is declared. An op is
/// charged the share of its backward time that belongs to operands a
/// gradient reaches (computed from a parameter): a model's first layer
/// computes no gradient of its input. `cut_candidates` follows `options.cuts`.
struct CostGraphOptions {
  CutPoints cuts = CutPoints::layers;
  /// Per value of the graph: whether the backward reads it, so that a stage
  /// holds it per micro-batch in flight (backward_reads). Empty: every
  /// activation, an upper bound.
  std::vector<bool> stashed;
  /// Per value: whether the backward computes it again (Recompute), so that
  /// its op's forward time is the backward's too.
  std::vector<bool> recomputed;
  /// Bytes per element of a float activation as the stages store and send
  /// it (2 for CUDA stages computing in bf16); 0: as the graph types it.
  int64_t float_activation_bytes = 0;
  /// Graph arguments that carry a gradient too (a stage's received
  /// activations, whose gradients it sends back).
  std::vector<std::string> grad_args;
  /// The schedule splits each backward (zero bubble): a product or lookup
  /// reading a parameter holds its output's gradient from B to W
  /// (CostNode::deferred_bytes).
  bool split_backward = false;
};
CostGraph build_cost_graph(const Function& graph, const DimBinding& binding, const OpTimer& timer,
                           const CostGraphOptions& options = {});

/// Per value of `graph`: whether `names` names it (names it lacks are skipped).
std::vector<bool> values_named(const Function& graph, const std::vector<std::string>& names);

/// What the backward of `model`'s graph (inlined, verified under `binding`,
/// its result 0 the loss) takes from its forward, per value: the stash
/// autodiff keeps, and what it computes again under `recompute`.
struct BackwardReads {
  std::vector<bool> stashed, recomputed;
};
BackwardReads backward_reads(const Module& model, const DimBinding& binding, Recompute recompute = Recompute::none);

/// The node build_cost_graph charges parameter op `param` (op `index` of a
/// graph whose users() are `users`) to: its first reader, or itself when
/// nothing reads it.
size_t parameter_holder(const std::vector<std::vector<int>>& users, const Op& param, int index);

/// The cut candidates of `graph` under `cuts` (what build_cost_graph puts in
/// CostGraph::cut_candidates).
std::vector<int> cut_candidates(const Function& graph, CutPoints cuts);

/// Per value of `graph`: whether the backward pass carries a gradient to it
/// (a parameter, an argument named in `grad_args`, or a value computed from one).
std::vector<bool> gradient_carriers(const Function& graph, const std::vector<std::string>& grad_args = {});

/// Whether an op is copied into every stage that uses its value instead of
/// sending it: it has no operands.
bool is_replicated_source(const Op& op);

}  // namespace pf
