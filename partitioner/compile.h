// The compiler's last step: a verified model, cut into stages by cost, and
// written as a plan the runtime loads alone.
#pragma once

#include <string>
#include <vector>

#include "ir/module.h"
#include "partitioner/layout_search.h"
#include "partitioner/stage_search.h"
#include "passes/autodiff.h"
#include "passes/pass.h"
#include "plan/plan.h"

namespace pf {

struct CompileOptions {
  std::string devices = "cpu:4";   // "cpu:4", "h100:8", "a100:2,h100:2"; with data_parallel 0, every replica's
  int microbatches = 8;            // 0: chosen by cost (micro-batches of 1, 2, 4 or 8 samples)
  int data_parallel = 1;           // replicas of the pipeline, each on its own devices and 1/D of the batch; 0: chosen
  int tensor_parallel = 1;         // ranks per pipeline device (GPUs of one node), splitting each layer
  bool sequence_parallel = false;  // with tensor_parallel: norms and residuals on each rank's part of the tokens
  int expert_parallel = 1;         // replicas sharing the experts out (Plan::expert_parallel): divides data_parallel
  std::string schedule = "1f1b";   // gpipe | 1f1b | interleaved | zb1 | zbv | zbi | custom | auto (the fastest)
  /// For schedule "custom": a schedule file's text (read_schedule_text),
  /// which fixes the pipeline devices, micro-batches and chunks per device.
  std::string schedule_actions;
  /// With schedule "1f1b" or "zb1": this many more forwards before the first
  /// backward on every pipeline device but the last (with_extra_warmup),
  /// planned and run as the lists they make (schedule "custom"); with
  /// "auto", 1f1b and zb1 are also tried so.
  int extra_warmup = 0;
  int virtual_stages = 1;
  std::string precision;           // the roofline's matmul precision; empty: the dtype's (bf16 or fp32)
  std::string dtype = "f32";       // how the stages compute: f32, or bf16 (CUDA: values; CPU: products only)
  std::string profile;             // a measured profile (JSON) instead of the roofline
  std::string cluster;             // links inside and between nodes (JSON)
  int64_t memory_limit = 0;        // per device, overriding the profile's
  std::string optimizer = "adamw"; // sizes the optimizer state in the memory model
  /// The replicas of a stage share its optimizer state out between them
  /// (Plan::shard_optimizer): each holds 1/D of it. Needs data_parallel != 1.
  bool shard_optimizer = false;
  std::vector<int> split_layers;   // manual split: stage starts, as indices of layers
  /// Where stages may begin: "layers" (layer boundaries only), "any" (inside
  /// layers too, between ops), "products" (also inside a matmul by a weight,
  /// whose rows the two stages then share: product_split.h), or "auto":
  /// inside layers when that shortens the predicted period by at least
  /// kSubLayerGain, inside a product when that shortens it by kProductGain
  /// more.
  std::string cuts = "auto";
  /// What each stage's backward computes again instead of stashing: "none",
  /// "layers" (all but what crosses a layer boundary: less memory per
  /// micro-batch in flight, about one more forward of compute), "selective"
  /// (the same but the products' results: a part of the saving for a few
  /// percent of compute), or "auto" (selective, then layers, only when no
  /// plan fits the memory without).
  std::string recompute = "none";
  /// The fusions made before the model is cut into stages (PassContext::
  /// fusions): the ops of the others run as written.
  std::vector<std::string> fusions = all_fusions();
};

/// The Recompute `options.recompute` names ("auto" is decided by
/// compile_plan before this is asked); throws pf::Error("unknown
/// --recompute 'x'; use none, selective, layers or auto") for another.
Recompute recompute_of(const CompileOptions& options);

/// How much shorter (as a fraction) a period with cuts inside layers must be
/// for "auto" to choose it: a layer split between stages is harder to read
/// in a plan and sends what the layer's inside carries, so a gain within the
/// cost model's own error is not worth it.
inline constexpr double kSubLayerGain = 0.01;

/// The same for cutting inside a product: what the split adds (a pass over
/// its input, one over the two halves' sum, two GEMMs of a shorter inner
/// dimension instead of one) is invisible to the roofline. Measured on a
/// 2-core Zen 5, a 4-block GPT whose split was predicted 2.4 % faster ran
/// 2 % slower; an MLP whose split was predicted 3.2 % faster ran 5 % faster.
inline constexpr double kProductGain = 0.03;

struct CompileResult {
  Plan plan;
  PartitionResult chosen;
  PartitionResult equal_layers;
  PartitionResult equal_params;
  std::vector<std::string> layer_names;  // layers in model order
  /// The cut points the plan uses ("layers", "any" or "products"), and the best period at
  /// layer boundaries only (0 when none fits), to compare with.
  std::string cuts;
  double layer_cuts_period_s = 0;
  LayoutChoice layouts;                  // the layouts priced when some were left to choose, else empty
  /// With recompute "auto" where the plan recomputes: why it must
  /// (the first line of the search's message without it); else empty.
  std::string recompute_reason;
  /// With schedule "auto": each schedule compiled, in the order tried; the
  /// plan is the one of the shortest predicted step.
  struct ScheduleCandidate {
    std::string schedule;
    double step_s = 0, bubble = 0;
    int64_t device_memory_bytes = 0;  // the most any device holds
    std::string error;                // the first line of why it could not be compiled; "" if it was
  };
  std::vector<ScheduleCandidate> schedules;
  size_t chosen_schedule = 0;  // the plan's, of `schedules`
};

/// Compiles `model` (parsed; verified under `binding`, the full batch) from
/// file `source`: micro-batches of batch/m along the first input's leading
/// dimension, inline and shapes, the cost graph priced on the device
/// profile (for one GPU of a tensor-parallel group), the stage search and
/// its baselines, then each stage's forward and backward programs. With
/// data_parallel or microbatches 0, the layout is chosen first
/// (search_layouts). With schedule "auto", every schedule of
/// auto_schedules is compiled and the plan of the shortest predicted step
/// kept (the first on a tie); the first one's error is thrown if none can be.
CompileResult compile_plan(Module model, const DimBinding& binding, const std::string& source,
                           const CompileOptions& options);

/// The schedules "auto" compares: 1f1b, zb1, zbv and dualpipev (gpipe holds
/// more for the same bubble as 1f1b, loopedbfs more than interleaved), and
/// interleaved and zbi when `virtual_stages` > 1 asks for chunks. One that
/// cannot run the layout (dualpipev on fewer than 2 micro-batches per
/// device) is listed with its reason.
std::vector<std::string> auto_schedules(const CompileOptions& options);
/// What CompileOptions::schedule accepts: every schedule's name, and "auto".
std::vector<std::string> compile_schedule_names();

/// The binding of one micro-batch of one of `replicas` data-parallel
/// replicas: the batch dimension divided by replicas * `m`.
DimBinding microbatch_binding(const Module& model, const DimBinding& binding, int microbatches, int replicas = 1);

}  // namespace pf
