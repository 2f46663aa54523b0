// From an inlined, typed model graph to the partitioner's cost graph: one
// node per op, one tensor per value that may cross a cut.
#pragma once

#include <functional>

#include "ir/module.h"
#include "partitioner/cost_graph.h"
#include "partitioner/device_profile.h"

namespace pf {

/// Seconds one execution of an op takes, forward and backward, for one
/// micro-batch on a device of speed 1 (a roofline or a measured profile).
using OpTimer = std::function<OpTiming(const Function& graph, const Op& op, const OpCost& cost)>;

/// Builds the cost graph of `graph` (inlined and verified under `binding`).
/// Values made by ops without operands (parameters, constants, masks) never
/// cross a cut: every stage that uses them holds its own copy, a tied
/// parameter included. Stages may start only where the `layer` tag changes.
/// An op is charged the share of its backward time that belongs to operands
/// a gradient reaches (computed from a parameter): a model's first layer
/// computes no gradient of its input. `grad_args` names the graph's
/// arguments that carry a gradient too (a stage's received activations,
/// whose gradients it sends back).
CostGraph build_cost_graph(const Function& graph, const DimBinding& binding, const OpTimer& timer,
                           const std::vector<std::string>& grad_args = {});

/// Whether an op is copied into every stage that uses its value instead of
/// sending it: it has no operands.
bool is_replicated_source(const Op& op);

}  // namespace pf
