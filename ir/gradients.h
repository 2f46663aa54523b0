// What differentiation leaves in a module, as data: which functions compute a
// program's gradients and how their arguments and results are laid out. The
// compiler writes it into a plan beside each stage's program; the runtime
// reads it to bind buffers without running a pass.
#pragma once

#include <string>
#include <vector>

namespace pf {

/// A differentiated graph. The graph returns its own results, then the
/// stash; the backward function `backward` takes the seeds (one per
/// differentiated result), then the stash, and returns the gradients of the
/// arguments `input_grads` names, then of every parameter in op order.
struct GradientProgram {
  std::string backward;                  // the backward function's name
  int original_results = 0;              // the graph's results before the stash
  std::vector<int> outputs;              // the differentiated results, increasing: one seed each
  std::vector<std::string> seeds;        // backward arguments, first
  std::vector<std::string> stash;        // forward values returned after the results; backward arguments after the seeds
  std::vector<std::string> input_grads;  // graph arguments whose gradients the backward returns first
  std::vector<std::string> params;       // backward results after the input gradients: one per parameter
  /// Forward values the backward computes again from the stash instead of
  /// keeping them (Recompute::layers), in the order it computes them.
  std::vector<std::string> recomputed;

  bool operator==(const GradientProgram&) const = default;
};

/// A backward function split in two, as zero-bubble schedules run it: the
/// input gradients (what the previous stage waits for) first, the
/// parameters' gradients later.
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

  bool operator==(const BackwardSplit&) const = default;
};

}  // namespace pf
