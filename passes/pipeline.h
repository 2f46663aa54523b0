// The compiler's pass pipelines: which passes a model and a pipeline stage go
// through, and in what order.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "passes/pass.h"

namespace pf {

enum class PassPipeline {
  /// A verified model into the graph that is cut into stages, trained and timed.
  model,
  /// A stage's graph (or a whole model's) into a forward that returns the
  /// stash and @<graph>.backward.
  stage,
  /// `stage`, with the backward in the two parts zero-bubble schedules run.
  zero_bubble_stage,
};

/// The passes of `pipeline`, in the order they run.
std::vector<std::string> pipeline_passes(PassPipeline pipeline);

/// Runs `pipeline` over `m` with run_passes (so verified after each pass,
/// unless `options` says otherwise), without the fuse-X passes whose X
/// `ctx.fusions` leaves out; returns the passes that changed it. The
/// stage pipelines leave what they made in `ctx.gradients` and `ctx.split`.
std::vector<std::string> run_pipeline(Module& m, PassPipeline pipeline, PassContext& ctx,
                                      const PassRunOptions& options = {});

struct PassPipelineInfo {
  std::string_view name;
  PassPipeline pipeline;
};

/// Every pipeline the command line knows (`opt --pipeline`), sorted by name.
const std::vector<PassPipelineInfo>& known_pipelines();

}  // namespace pf
