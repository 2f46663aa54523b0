// Measures every op of a model on the real backend, forward and backward, so
// that the partitioner can price stages by measurement instead of roofline.
#pragma once

#include <functional>
#include <string>

#include "ir/module.h"
#include "partitioner/device_profile.h"

namespace pf {

struct ProfileOptions {
  int repeats = 5;  // timed runs per op after one warm-up; the median is kept
  /// Cores busy at once: each op runs on this many threads together, each
  /// on buffers of its own, so that its time includes what the pipeline's
  /// stages cost each other when they compute side by side (shared
  /// last-level cache and memory bandwidth). 1 times it alone.
  int concurrent = 1;
  /// Times the products as a stage of a --dtype bf16 plan runs them
  /// (cpu::Bf16Products); the profile's precision is then "bf16".
  bool bf16_products = false;
  /// The micro-batches of a step. With two or more, a product reads its
  /// weight packed as a pipeline stage does (PackWeights): the op is timed
  /// as its runs on the packed weight plus 1/m of one packing.
  int microbatches = 1;
  /// Drops the op's inputs, weights and packed weights from the caches
  /// before every timed run: a step whose layers' weights and stashed
  /// activations outgrow the caches finds them cold each micro-batch, while
  /// an op timed again and again on the same buffers finds them warm.
  bool cold_caches = false;
};

/// Times each op of `model` (inlined and verified under `binding`, the
/// shapes the partitioner will price: one micro-batch) alone on the CPU:
/// forward as the op itself, backward as the backward program of
/// sum(op(...)) minus that of sum alone (see ProfileOptions::concurrent for
/// the load around it). Ops with the same timing key are
/// measured as one, in two sweeps over the model, the faster time of each
/// kept (a machine's transient slowdowns do not price an op); with
/// `concurrent` cores, each copy's thread held on a CPU of its own. The returned profile is the CPU roofline with these
/// measurements and the seconds per parameter of an AdamW and an SGD step
/// (update_s_per_param); `progress` is told each op as it is measured.
DeviceProfile profile_model(const Module& model, const DimBinding& binding, const ProfileOptions& options,
                            const std::function<void(const std::string& key, const OpTiming&)>& progress = {});

}  // namespace pf
