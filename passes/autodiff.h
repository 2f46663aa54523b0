// Reverse-mode automatic differentiation of a graph into a backward function.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/gradients.h"
#include "ir/module.h"

namespace pf {

/// Which forward values the backward computes again instead of keeping.
enum class Recompute {
  none,    // the backward reads every forward value it needs from the stash
  /// Only what crosses a layer boundary is kept (the graph's arguments, the
  /// values an op of another layer reads, its results, what a random op
  /// draws); the rest of a layer is computed again when its backward starts:
  /// one layer's activations live at a time instead of every layer's.
  layers,
  /// As layers, but the products (matmul, attention, conv2d) keep their
  /// results: only the cheap ops between them (norms, activations, adds,
  /// reshapes) are computed again, for a part of layers' saving at a few
  /// percent of its extra compute.
  selective,
};

/// "none", "layers" or "selective".
std::string_view recompute_name(Recompute recompute);
/// The Recompute a name gives, or nullopt.
std::optional<Recompute> parse_recompute(std::string_view name);

struct AutodiffOptions {
  /// Which results of the graph are differentiated; each gets a seed
  /// argument (its incoming gradient) in the backward function. A whole
  /// model differentiates its loss (result 0); a pipeline stage all the
  /// activations it sends.
  std::vector<int> outputs = {0};
  /// Graph arguments whose gradients are wanted too (what a pipeline stage
  /// received, so that it can send the gradient back).
  std::vector<std::string> wrt_inputs;
  Recompute recompute = Recompute::none;
};

/// Differentiates the module's graph, which must be inlined and verified
/// under `binding`, adding `@<graph>.backward` (see GradientProgram). Throws a located Error for an op without a gradient rule.
GradientProgram differentiate(Module& m, const DimBinding& binding, const AutodiffOptions& options = {});

/// Whether `kind` has a gradient rule: false for ops that take no float
/// input (sources) and for the backward ops themselves.
bool has_grad_rule(OpKind kind);

}  // namespace pf
