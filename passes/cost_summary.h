// Costs of ops, summed per layer: what `check`, `stats` and the partitioner read.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"

namespace pf {

/// The op's FLOPs and bytes under `binding`; its values must be typed. An
/// expert's products (moe_matmul) count the slots a balanced route fills:
/// each expert takes N K / E of the N tokens' K choices, at most its
/// capacity (dropless, K / E of its slots). The route's moe_route is found
/// in `f` or, where `f` receives the route (a stage's backward), in another
/// function of `module`; without one every slot counts.
OpCost op_cost(const Function& f, const Op& op, const DimBinding& binding, const Module* module = nullptr);

struct LayerCost {
  std::string layer;           // the ops' `layer` tag; "(none)" for untagged ops
  int ops = 0;
  int64_t params = 0;          // parameter elements
  int64_t param_bytes = 0;
  int64_t flops = 0;           // forward, whole batch
  int64_t bytes = 0;           // forward bytes moved
  int64_t activation_bytes = 0;  // bytes of the values the layer's ops produce
};

struct ModelCost {
  std::vector<LayerCost> layers;  // in order of first appearance
  LayerCost total;
  /// The leading dimension of the graph's first argument: the batch that
  /// "per sample" figures divide by.
  int64_t batch = 1;
};

/// Sums the graph's op costs per layer; the graph must be verified.
ModelCost summarize_cost(const Function& graph, const DimBinding& binding);

}  // namespace pf
