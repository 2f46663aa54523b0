// Compiling a model into a plan.
#include "partitioner/compile.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "ir/batch.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "partitioner/device_profile.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/plan_stages.h"
#include "partitioner/stage_split.h"
#include "passes/pipeline.h"

namespace pf {

namespace {

MemoryRule memory_rule_of(const std::string& schedule, int virtual_stages) {
  if (schedule == "gpipe") return MemoryRule::gpipe;
  if (schedule == "zb1") return MemoryRule::zero_bubble;
  if (schedule == "interleaved" && virtual_stages > 1) return MemoryRule::interleaved;
  if (schedule == "1f1b" || schedule == "interleaved") return MemoryRule::one_f_one_b;
  throw Error(fmt::format("unknown schedule '{}'; use gpipe, 1f1b, interleaved or zb1", schedule));
}

uint64_t text_hash(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

}  // namespace

DimBinding microbatch_binding(const Module& model, const DimBinding& binding, int microbatches, int replicas) {
  const std::string batch = batch_dimension(model.graph());
  int64_t size = binding.at(batch);
  const int64_t parts = static_cast<int64_t>(microbatches) * replicas;
  if (microbatches < 1 || replicas < 1 || size % parts != 0) {
    if (replicas == 1)
      throw Error(fmt::format("the batch {}={} does not split into {} micro-batches; choose a batch divisible by {}",
                              batch, size, microbatches, microbatches));
    throw Error(fmt::format("the batch {}={} does not split into {} replicas of {} micro-batches; choose a batch "
                            "divisible by {}",
                            batch, size, replicas, microbatches, parts));
  }
  DimBinding micro = binding;
  micro[batch] = size / parts;
  return micro;
}

CompileResult compile_plan(Module model, const DimBinding& binding, const std::string& source,
                           const CompileOptions& options) {
  CompileResult result;
  const DType dtype = parse_compute_dtype(options.dtype, "--dtype");
  if (options.data_parallel < 1)
    throw Error(fmt::format("--data-parallel must be at least 1, not {}", options.data_parallel));
  DimBinding micro = microbatch_binding(model, binding, options.microbatches, options.data_parallel);
  const std::vector<std::string> unsplit = whole_inputs(model.graph());  // before shapes become concrete
  PassContext ctx{micro};
  verify_module(model, micro, VerifyOptions{true});
  run_pipeline(model, PassPipeline::model, ctx);
  const Function& graph = model.graph();

  DeviceProfile profile =
      options.profile.empty() ? builtin_profile(options.devices.substr(0, options.devices.find(':')), options.precision)
                              : load_profile(options.profile);
  std::vector<DeviceEntry> entries = parse_device_entries(options.devices, profile);
  int devices = static_cast<int>(entries.size());
  Cluster cluster = options.cluster.empty() ? default_cluster(profile.kind) : load_cluster(options.cluster);

  // Each op priced on the profile: measured where the profile has it, else
  // the roofline; a backward costs about twice its forward.
  OpTimer timer = [&](const Function& f, const Op& op, const OpCost& cost) {
    return estimate_timing(profile, op_timing_key(f, op, micro), cost, OpCost{2 * cost.flops, 2 * cost.bytes});
  };
  if (options.cuts != "auto" && options.cuts != "layers" && options.cuts != "any")
    throw Error(fmt::format("unknown --cuts '{}'; use layers, any or auto", options.cuts));
  CostGraph cg = build_cost_graph(graph, micro, timer, CutPoints::any);
  const std::vector<int> inside = cg.cut_candidates;
  const std::vector<int> at_layers = cut_candidates(graph, CutPoints::layers);
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    std::string layer = graph.ops[i].layer();
    if (result.layer_names.empty() || result.layer_names.back() != layer) result.layer_names.push_back(layer);
  }

  PartitionOptions po;
  po.virtual_stages = options.virtual_stages;
  po.stages = devices * options.virtual_stages;
  po.microbatches = options.microbatches;
  po.rule = memory_rule_of(options.schedule, options.virtual_stages);
  for (DeviceEntry& e : entries) {
    if (options.memory_limit > 0) e.spec.memory_bytes = options.memory_limit;
    po.devices.push_back(e.spec);
  }
  po.link = pipeline_link(cluster, devices);
  po.data_parallel = options.data_parallel;
  po.replica_link = replica_link(cluster, devices, options.data_parallel);
  po.optimizer_state_factor = options.optimizer == "sgd" ? 1.0 : 2.0;
  const int layers = static_cast<int>(at_layers.size()) + 1;
  const bool manual = !options.split_layers.empty();
  if (manual) {
    for (int l : options.split_layers) {
      if (l < 1 || l >= layers) throw Error(fmt::format("--split: layer index {} is not in 1..{}", l, layers - 1));
      po.fixed_cuts.push_back(at_layers[l - 1]);
    }
  }
  if ((manual || options.cuts == "layers") && po.stages > layers)
    throw Error(fmt::format("cannot cut {} layers into {} stages; use at most {} devices{}{}", layers, po.stages,
                            layers / options.virtual_stages,
                            options.virtual_stages > 1 ? " or fewer virtual stages" : "",
                            manual ? "" : ", or --cuts any to cut inside layers"));
  // The search at layer boundaries, then (unless told otherwise) inside
  // layers too: "auto" keeps the layer cuts unless cutting inside layers is
  // clearly faster, or is the only split that fits.
  const bool layers_only = manual || options.cuts == "layers";
  std::optional<PartitionResult> by_layers;
  std::optional<Error> layers_error;
  cg.cut_candidates = at_layers;
  if (options.cuts != "any" && po.stages <= layers) {
    try {
      by_layers = partition(cg, po);
      result.layer_cuts_period_s = by_layers->period_s;
    } catch (const Error& e) {
      if (layers_only) throw;
      layers_error = e;
    }
  }
  result.cuts = "layers";
  if (layers_only) {
    result.chosen = *by_layers;
  } else {
    if (po.stages > static_cast<int>(inside.size()) + 1)
      throw Error(fmt::format("cannot cut {} layers into {} stages, even inside layers; use at most {} devices", layers,
                              po.stages, (static_cast<int>(inside.size()) + 1) / options.virtual_stages));
    cg.cut_candidates = inside;
    std::optional<PartitionResult> any;
    try {
      any = partition(cg, po);
    } catch (const Error&) {
      if (layers_error) throw *layers_error;
      throw;
    }
    if (!by_layers || options.cuts == "any" || any->period_s < (1 - kSubLayerGain) * by_layers->period_s) {
      result.chosen = std::move(*any);
      result.cuts = "any";
    } else {
      result.chosen = std::move(*by_layers);
    }
  }
  // The baselines split at layer boundaries, as their users would; with
  // more stages than layers they have nothing to offer.
  cg.cut_candidates = at_layers;
  if (po.stages <= layers) {
    result.equal_layers = equal_layers(cg, po);
    result.equal_params = equal_params(cg, po);
  }

  // The plan: every stage's programs and tables.
  Plan& plan = result.plan;
  plan.model_name = graph.name;
  plan.model_source = source;
  plan.model_hash = model.source ? fmt::format("{:016x}", text_hash(model.source->text())) : "";
  plan.binding = micro;
  // Replica k runs on devices k * devices ..: each device of the list once
  // per replica, numbered on by kind ("cpu:4" for replica 1 of cpu:4).
  for (int k = 0; k < options.data_parallel; ++k)
    for (const DeviceEntry& e : entries) {
      const std::string kind = e.spec.name.substr(0, e.spec.name.find(':'));
      const int index = std::stoi(e.spec.name.substr(kind.size() + 1)) + k * devices;
      plan.devices.push_back({fmt::format("{}:{}", kind, index), e.profile.kind, e.spec.memory_bytes, 1});
    }
  plan.schedule = options.schedule;
  plan.microbatches = options.microbatches;
  plan.virtual_stages = options.virtual_stages;
  plan.dtype = dtype;
  plan.loss_stage_output = graph.values[graph.returns[0]].name;

  std::vector<int> device_of;
  for (const StagePlan& cost : result.chosen.stages) device_of.push_back(cost.device);
  plan.stages = plan_stages(split_into_stages(model, result.chosen.cuts, unsplit), micro, device_of,
                            /*training=*/true, schedule_splits_backward(options.schedule));
  plan.ranks = replicated_ranks(plan.stages, devices, options.data_parallel);
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    PlanStage& ps = plan.stages[s];
    const StagePlan& cost = result.chosen.stages[s];
    ps.predicted.forward_s = 0;
    for (int i = cost.begin; i < cost.end; ++i) {
      ps.predicted.forward_s += cg.nodes[i].forward_s;
      ps.predicted.backward_s += cg.nodes[i].backward_s;
    }
    ps.predicted.comm_s = cost.comm_s;
    ps.predicted.sync_s = cost.sync_s;
    ps.predicted.time_s = cost.time_s;
    ps.predicted.param_bytes = cost.param_bytes;
    ps.predicted.stash_bytes = cost.stash_bytes;
    ps.predicted.memory_bytes = cost.memory_bytes;
    ps.predicted.bytes_sent = cost.sent_bytes;
  }
  plan.predicted.period_s = result.chosen.period_s;
  plan.predicted.imbalance_pct = result.chosen.imbalance_pct;
  auto speedup = [&](const PartitionResult& base) {
    return result.chosen.period_s > 0 && base.fits_memory ? base.period_s / result.chosen.period_s : 0.0;
  };
  plan.predicted.speedup_vs_equal_layers = speedup(result.equal_layers);
  plan.predicted.speedup_vs_equal_params = speedup(result.equal_params);
  int m = options.microbatches, p = devices;
  plan.predicted.bubble_fraction = static_cast<double>(p - 1) / (m * options.virtual_stages + p - 1);
  return result;
}

}  // namespace pf
