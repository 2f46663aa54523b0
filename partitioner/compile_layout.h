// How compile prices a model on a layout of GPUs: the devices and links it
// was given, each pipeline device a tensor-parallel group of them, the cost
// graph of one micro-batch for one GPU of a group, and the search over
// layouts that --data-parallel auto and --microbatches auto leave open.
#pragma once

#include <map>
#include <vector>

#include "ir/module.h"
#include "partitioner/compile.h"
#include "partitioner/device_profile.h"
#include "partitioner/layout_search.h"

namespace pf {

/// The GPUs compile plans for and what prices them.
struct Hardware {
  DeviceProfile profile;          // prices the ops
  std::vector<DeviceEntry> gpus;  // --devices, in order
  Cluster cluster;
};

/// The profile, --devices and cluster of `options`, checked against its
/// tensor parallelism: T >= 1 dividing the devices of a node and the device
/// count, and one kind of device when T > 1. Throws pf::Error otherwise.
Hardware load_hardware(const CompileOptions& options);

/// The partitioner's memory rule for a schedule and its virtual stages.
MemoryRule memory_rule_of(const std::string& schedule, int virtual_stages);

/// A model inlined and typed for one micro-batch, and its cost graph priced
/// for one GPU of a tensor-parallel group (apply_tensor_parallel).
struct PricedModel {
  Module module;
  CostGraph cost;                   // cut candidates at layer boundaries
  std::vector<int> inside_layers;  // the cut candidates inside layers too (CutPoints::any)
};

/// Verifies `model` under `micro`, runs the model pipeline and prices each op
/// on the profile (measured where it has the op, else the roofline; a
/// backward twice its forward).
PricedModel price_model(Module model, const DimBinding& micro, const Hardware& hardware, const CompileOptions& options);

/// `options` as `layout` runs them: with extra_warmup, schedule "custom"
/// and the lists of their schedule (1f1b or zb1) on its pipeline devices
/// and micro-batches with the forwards run ahead; otherwise `options` as
/// they are.
CompileOptions layout_schedule(const CompileOptions& options, const Layout& layout);

/// The partitioner's options for `layout`: pipeline device i is the group of
/// GPUs i T .. i T + T - 1 of `hardware.gpus` (named after its first one);
/// transfers between stages leave each group over its T GPUs' links at once;
/// a stage's gradient all-reduce runs as T rings, one per GPU of the group.
PartitionOptions layout_partition_options(const CompileOptions& options, const Hardware& hardware,
                                          const Layout& layout);
/// How the pipeline partitioned with `partition` (layout_partition_options)
/// runs a step, for predict_step.
StepOptions layout_step_options(const CompileOptions& options, const Hardware& hardware,
                                const PartitionOptions& partition);

/// The layout the options fix (P = devices / T, their D and m), or nullopt
/// when --data-parallel or --microbatches is auto (0).
std::optional<Layout> fixed_layout(const CompileOptions& options, const Hardware& hardware, int64_t batch);

/// The models search_layouts priced, by micro-batch size (samples).
using PricedModels = std::map<int64_t, PricedModel>;

/// Prices every layout the options leave open (candidate_layouts: with
/// --data-parallel auto the devices are all the GPUs, P x D x T of them) and
/// chooses one (choose_layout). `binding` is the whole batch's; the models
/// it priced are left in `priced`, for the chosen layout's plan. Throws
/// pf::Error when there is no layout to price.
LayoutChoice search_layouts(const Module& model, const DimBinding& binding, const Hardware& hardware,
                            const CompileOptions& options, PricedModels& priced);

}  // namespace pf
