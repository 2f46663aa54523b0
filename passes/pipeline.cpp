// The pass pipelines, each step with the reason it is there. Every command
// that compiles a model or a stage runs them from here.
#include "passes/pipeline.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

namespace pf {

std::vector<std::string> pipeline_passes(PassPipeline pipeline) {
  switch (pipeline) {
    case PassPipeline::model:
      return {
          // The partitioner, autodiff and the executors read a call-free
          // graph; the layer each inlined op is tagged with is where a stage
          // may start.
          "inline",
          // Types in numbers under the binding (one micro-batch's when
          // compiling a plan): the backward that autodiff writes is concrete,
          // and the forward printed beside it must read back alike.
          "shape",
          // One attention op in place of q k^T, scale, causal mask, softmax
          // and p v: no T x T scores in memory, and a backward (added by
          // autodiff, which comes after this on each stage) that recomputes
          // them instead of stashing them. After shape, so the scale and the
          // mask's size are numbers.
          "fuse-attention",
          // silu(gate) * up as one op: one pass over memory forward and
          // back, silu(gate) not stashed, and over an expert's slots only
          // those in use (a dropless route fills K of every E).
          "fuse-swiglu",
      };
    case PassPipeline::stage:
      return {
          // The forward returns what its backward reads (the stash a stage
          // keeps per micro-batch in flight); @<graph>.backward returns the
          // gradients of what the stage received and of its parameters.
          "autodiff",
      };
    case PassPipeline::zero_bubble_stage:
      return {
          "autodiff",
          // B (the input gradients, which the previous stage waits for) and
          // W (the parameters' gradients, run later in a bubble).
          "split-backward",
      };
  }
  return {};
}

std::vector<std::string> fusion_choices() {
  std::vector<std::string> choices = {"all", "none"};
  for (const std::string& f : all_fusions()) choices.push_back(f);
  return choices;
}

std::vector<std::string> fusions_named(std::string_view choice) {
  if (choice == "all") return all_fusions();
  if (choice == "none") return {};
  for (const std::string& f : all_fusions())
    if (f == choice) return {f};
  throw Error(fmt::format("--fusion: unknown fusion '{}'; use {}", choice, fmt::join(fusion_choices(), ", ")));
}

std::vector<std::string> run_pipeline(Module& m, PassPipeline pipeline, PassContext& ctx,
                                      const PassRunOptions& options) {
  std::vector<std::string> passes = pipeline_passes(pipeline);
  std::erase_if(passes, [&](const std::string& name) {
    return name.starts_with("fuse-") &&
           std::find(ctx.fusions.begin(), ctx.fusions.end(), name.substr(5)) == ctx.fusions.end();
  });
  return run_passes(m, passes, ctx, options);
}

const std::vector<PassPipelineInfo>& known_pipelines() {
  static const std::vector<PassPipelineInfo> pipelines = {
      {"model", PassPipeline::model},
      {"stage", PassPipeline::stage},
      {"zero-bubble-stage", PassPipeline::zero_bubble_stage},
  };
  return pipelines;
}

}  // namespace pf
