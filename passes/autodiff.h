// Reverse-mode automatic differentiation of a graph into a backward function.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"

namespace pf {

struct AutodiffOptions {
  /// Which results of the graph are differentiated; each gets a seed
  /// argument (its incoming gradient) in the backward function. A whole
  /// model differentiates its loss (result 0); a pipeline stage all the
  /// activations it sends.
  std::vector<int> outputs = {0};
  /// Graph arguments whose gradients are wanted too (what a pipeline stage
  /// received, so that it can send the gradient back).
  std::vector<std::string> wrt_inputs;
};

/// What differentiation produced. The graph now also returns the values its
/// backward needs (the stash), after its own results; the backward function
/// `@<graph>.backward` takes the seeds, then the stash, and returns the
/// gradients of the chosen inputs, then of every parameter in op order.
struct GradientProgram {
  std::string backward;                 // the backward function's name
  int original_results = 0;             // the graph's results before the stash
  std::vector<std::string> seeds;       // backward arguments, first
  std::vector<std::string> stash;       // forward values returned after the results; backward arguments after the seeds
  std::vector<std::string> input_grads; // backward results, first: one per wrt input
  std::vector<std::string> params;      // backward results after the input gradients: one per parameter
};

/// Differentiates the module's graph, which must be inlined and verified
/// under `binding`. Throws a located Error for an op without a gradient rule.
GradientProgram differentiate(Module& m, const DimBinding& binding, const AutodiffOptions& options = {});

/// Whether `kind` has a gradient rule: false for ops that take no float
/// input (sources) and for the backward ops themselves.
bool has_grad_rule(OpKind kind);

}  // namespace pf
