// Passes over the IR and the manager that runs them in a named order.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/module.h"
#include "passes/autodiff.h"
#include "passes/split_backward.h"

namespace pf {

/// The fusions the model pipeline knows: "attention" (fuse-attention) and
/// "swiglu" (fuse-swiglu).
inline std::vector<std::string> all_fusions() { return {"attention", "swiglu"}; }

/// What `--fusion` may name: "all", "none", or one of all_fusions().
std::vector<std::string> fusion_choices();
/// The fusions a `--fusion` choice names. Throws pf::Error for another.
std::vector<std::string> fusions_named(std::string_view choice);

/// What every pass may read: the dimension binding that types are computed
/// under (the model's declared defaults, overridden by --bind), and what to
/// differentiate; and what the stage passes leave for their caller.
struct PassContext {
  DimBinding binding;
  /// Graph arguments whose gradients autodiff also returns, first (what a
  /// pipeline stage received); split-backward reads the same list.
  std::vector<std::string> wrt_inputs = {};
  /// The graph results autodiff differentiates for a pipeline stage: every
  /// float value it sends, and its loss if it has one. Unset for a model,
  /// which differentiates its loss and must have one.
  std::optional<std::vector<int>> outputs = {};
  /// What autodiff computes again in the backward instead of stashing.
  Recompute recompute = Recompute::none;
  /// What autodiff and split-backward made, for the caller: the stash a
  /// stage keeps per micro-batch, the values deferred from B to W.
  std::optional<GradientProgram> gradients = {};
  std::optional<BackwardSplit> split = {};
  /// The tensor-parallel group the tensor-parallel pass writes one rank's
  /// program for: its size, and the rank.
  int tensor_parallel = 1;
  int tensor_parallel_rank = 0;
  /// Parameters the tensor-parallel pass keeps whole (tied to another
  /// stage's copy).
  std::vector<std::string> tensor_parallel_whole = {};
  /// Sequence parallelism on top: the ops between the group's row- and
  /// column-parallel products run on each rank's part of the tokens.
  bool sequence_parallel = false;
  /// Under sequence parallelism, the graph's arguments and results (by name)
  /// that a stage receives or sends as each rank's part of their tokens.
  std::vector<std::string> hand_offs_in_parts = {};
  /// The data-parallel replicas the expert-parallel pass shares a stage's
  /// experts out over: how many, and the replica it writes the program of.
  int expert_parallel = 1;
  int expert_parallel_rank = 0;
  /// The positions the decode-step pass sizes its caches of keys and values
  /// for (a language model's context); 0 when not set.
  int64_t decode_context = 0;
  /// The fusions the model pipeline makes: its pass fuse-X runs when X is
  /// listed. The ops of the others run as written (`compile --fusion`: for
  /// comparing, and for debugging a fusion).
  std::vector<std::string> fusions = all_fusions();
};

/// A transformation of a module. `run` returns whether it changed anything;
/// errors are thrown as located pf::Error.
class Pass {
 public:
  virtual ~Pass() = default;
  /// The stable kebab-case name used on the command line.
  virtual std::string_view name() const = 0;
  virtual std::string_view summary() const = 0;
  virtual bool run(Module& m, PassContext& ctx) = 0;
};

std::unique_ptr<Pass> make_autodiff_pass();
std::unique_ptr<Pass> make_inline_pass();
std::unique_ptr<Pass> make_shape_pass();
std::unique_ptr<Pass> make_dce_pass();
std::unique_ptr<Pass> make_cse_pass();
std::unique_ptr<Pass> make_cost_pass();
std::unique_ptr<Pass> make_fuse_attention_pass();
std::unique_ptr<Pass> make_fuse_swiglu_pass();
std::unique_ptr<Pass> make_split_backward_pass();
std::unique_ptr<Pass> make_tensor_parallel_pass();
std::unique_ptr<Pass> make_expert_parallel_pass();
std::unique_ptr<Pass> make_decode_step_pass();

struct PassInfo {
  std::string_view name;
  std::unique_ptr<Pass> (*make)();
};

/// Every pass the command line knows, sorted by name.
const std::vector<PassInfo>& known_passes();

struct PassRunOptions {
  /// Verify the module after every pass, so that a pass that breaks the IR is
  /// caught where it happens.
  bool verify_each = true;
  /// Called after each pass with its name and whether it changed the module
  /// (`opt --print-changed`), before the module is verified.
  std::function<void(std::string_view pass, bool changed)> after_each = {};
};

/// Runs passes by name in the given order (`inline,shape,cost`); an unknown
/// name is an error listing the known ones. Returns the names of the passes
/// that changed the module.
std::vector<std::string> run_passes(Module& m, const std::vector<std::string>& names, PassContext& ctx,
                                    const PassRunOptions& options = {});

/// Splits "inline,shape,cost" into names (empty items are errors).
std::vector<std::string> split_pass_list(std::string_view list);

}  // namespace pf
