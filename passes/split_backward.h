// Splits a backward function into its input-gradient part and its weight-gradient part, as zero-bubble pipeline
// schedules run them: B (what the previous stage waits for) now, W (the parameters' gradients) later, in a bubble.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"
#include "passes/autodiff.h"

namespace pf {

/// The two functions split_backward adds next to the backward function.
struct BackwardSplit {
  /// `@<backward>_input`: the backward's arguments (seeds, then stash);
  /// returns the input gradients, then `deferred`. Only the ops that the
  /// input gradients need.
  std::string input;
  /// `@<backward>_weight`: the backward's arguments, then `deferred`; returns
  /// the parameter gradients. Only the ops that they need and the input part
  /// did not already compute (a `param` or `constant` is declared again
  /// rather than carried over).
  std::string weight;
  /// Values the input part computes and the weight part reads (typically the
  /// gradient at each linear layer's output): held per micro-batch from B to W.
  std::vector<std::string> deferred;
};

/// Splits `gradients.backward` of `m` (its first `gradients.input_grads.size()`
/// results are input gradients, the rest parameter gradients) and adds the two
/// functions to `m`, leaving the backward itself in place. Running the input
/// part, then the weight part on the same arguments and the deferred values,
/// computes exactly what the backward computes, op for op.
BackwardSplit split_backward(Module& m, const GradientProgram& gradients, const DimBinding& binding);

}  // namespace pf
