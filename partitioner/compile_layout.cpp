// The hardware, cost graphs and partitioner options of compile, per layout.
#include "partitioner/compile_layout.h"

#include <fmt/format.h>

#include <map>

#include "ir/batch.h"
#include "ir/diagnostic.h"
#include "ir/verifier.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/tensor_parallel.h"
#include "passes/pipeline.h"
#include "plan/plan.h"
#include "runtime/schedule.h"
#include "runtime/schedule_warmup.h"

namespace pf {

Hardware load_hardware(const CompileOptions& options) {
  Hardware hw;
  const std::string precision =
      !options.precision.empty() ? options.precision : options.dtype == "bf16" ? "bf16" : "fp32";
  hw.profile = options.profile.empty() ? builtin_profile(options.devices.substr(0, options.devices.find(':')), precision)
                                       : load_profile(options.profile);
  if (!options.profile.empty()) check_profile_dtype(hw.profile, options.profile, options.dtype, "compile");
  hw.gpus = parse_device_entries(options.devices, hw.profile);
  hw.cluster = options.cluster.empty() ? default_cluster(hw.profile.kind) : load_cluster(options.cluster);
  const int t = options.tensor_parallel;
  if (t < 1) throw Error(fmt::format("--tensor-parallel must be at least 1, not {}", t));
  if (options.sequence_parallel && t == 1)
    throw Error("--sequence-parallel cuts the tokens over a tensor-parallel group; add --tensor-parallel 2 or more");
  if (t == 1) return hw;
  if (hw.cluster.devices_per_node % t != 0)
    throw Error(fmt::format("--tensor-parallel {} does not divide the {} devices of a node; a tensor-parallel group "
                            "stays inside one node",
                            t, hw.cluster.devices_per_node));
  if (hw.gpus.size() % t != 0)
    throw Error(fmt::format("--tensor-parallel {} does not divide the {} devices of --devices {}", t, hw.gpus.size(),
                            options.devices));
  for (const DeviceEntry& e : hw.gpus)
    if (e.profile.name != hw.gpus[0].profile.name)
      throw Error(fmt::format("--tensor-parallel needs devices of one kind; --devices {} mixes {} and {}",
                              options.devices, hw.gpus[0].profile.name, e.profile.name));
  return hw;
}

MemoryRule memory_rule_of(const std::string& schedule, int virtual_stages) {
  if (schedule == "gpipe" || schedule == "loopedbfs") return MemoryRule::gpipe;
  if (schedule == "zb1") return MemoryRule::zero_bubble;
  if (schedule == "zbv") return MemoryRule::zero_bubble_v;
  if (schedule == "zbi") return MemoryRule::zero_bubble_interleaved;
  if (schedule == "dualpipev") return MemoryRule::dual_pipe_v;
  if (schedule == "interleaved" && virtual_stages > 1) return MemoryRule::interleaved;
  if (schedule == "1f1b" || schedule == "interleaved") return MemoryRule::one_f_one_b;
  if (schedule == "custom") return MemoryRule::written;
  throw Error(fmt::format("unknown schedule '{}'; use {}", schedule, schedule_kind_choices()));
}

PricedModel price_model(Module model, const DimBinding& micro, const Hardware& hardware,
                        const CompileOptions& options) {
  PassContext ctx{micro};
  ctx.fusions = options.fusions;
  verify_module(model, micro, VerifyOptions{true});
  run_pipeline(model, PassPipeline::model, ctx);
  const Function& graph = model.graph();
  const DeviceProfile& profile = hardware.profile;
  OpTimer timer = [&](const Function& f, const Op& op, const OpCost& cost) {
    return estimate_op_timing(profile, f, op, micro, cost);
  };
  // Activations as the stages hold them: what the backward reads, in the
  // dtype the stages store (bf16 on CUDA stages computing in it).
  CostGraphOptions cgo;
  BackwardReads reads = backward_reads(model, micro, recompute_of(options));
  cgo.stashed = std::move(reads.stashed);
  cgo.recomputed = std::move(reads.recomputed);
  cgo.split_backward = schedule_splits_backward(options.schedule, options.schedule_actions);
  const DType compute = parse_compute_dtype(options.dtype, "--dtype");
  if (compute == DType::bf16 && profile.kind == "cuda") cgo.float_activation_bytes = dtype_size(DType::bf16);
  CostGraph cg = build_cost_graph(graph, micro, timer, cgo);
  TensorParallel tp;
  tp.degree = options.tensor_parallel;
  tp.link = hardware.cluster.intra;
  tp.element_bytes = dtype_size(compute);
  tp.sequence = options.sequence_parallel;
  const TensorParallelSplit split = apply_tensor_parallel(cg, graph, tp);
  std::vector<int> inside = cut_candidates(graph, CutPoints::any);
  if (tp.degree > 1) {
    // Each stage's program is split alone: no share may cross a cut.
    cg.cut_candidates = cuts_between_shares(graph, split, std::move(cg.cut_candidates));
    inside = cuts_between_shares(graph, split, std::move(inside));
  }
  return {std::move(model), std::move(cg), std::move(inside)};
}

CompileOptions layout_schedule(const CompileOptions& options, const Layout& layout) {
  if (options.extra_warmup == 0) return options;
  CompileOptions eager = options;
  eager.schedule = "custom";
  eager.schedule_actions = write_schedule_text(with_extra_warmup(
      make_schedule(*parse_schedule_kind(options.schedule), layout.pipeline, layout.microbatches),
      options.extra_warmup));
  return eager;
}

PartitionOptions layout_partition_options(const CompileOptions& options, const Hardware& hardware,
                                          const Layout& layout) {
  const int t = layout.tensor, p = layout.pipeline;
  PartitionOptions po;
  po.virtual_stages = options.virtual_stages;
  po.stages = p * options.virtual_stages;
  po.microbatches = layout.microbatches;
  po.rule = memory_rule_of(options.schedule, options.virtual_stages);
  po.placement = stage_placement(parse_schedule_kind(options.schedule).value());
  if (po.rule == MemoryRule::written) {
    const Schedule written = read_schedule_text(options.schedule_actions, "the custom schedule");
    if (written.devices != p)
      throw Error(fmt::format("the schedule file has lists for {} devices, and the layout runs a pipeline of {} ({} "
                              "devices{}{}): give --devices for a pipeline of {}",
                              written.devices, p, layout.gpus(),
                              layout.data > 1 ? fmt::format(" over {} replicas", layout.data) : "",
                              t > 1 ? fmt::format(" in tensor-parallel groups of {}", t) : "", written.devices));
    po.placement = written.placement;
    po.written_stashed = simulate(written).peak_stashed;
    po.written_split = written.split_backward;
  }
  for (int i = 0; i < p; ++i) {
    DeviceSpec spec = hardware.gpus.at(static_cast<size_t>(i) * t).spec;
    if (options.memory_limit > 0) spec.memory_bytes = options.memory_limit;
    po.devices.push_back(spec);
  }
  po.link = pipeline_link(grouped_cluster(hardware.cluster, t, t), p);
  po.data_parallel = layout.data;
  po.expert_parallel = options.expert_parallel;
  po.replica_link = replica_link(grouped_cluster(hardware.cluster, t, 1), p, layout.data);
  // A sharded optimizer's state: 1/D of it on each replica, and 1/(D/X) of
  // a replica's own experts', which only the replicas holding them share.
  const double copies = options.optimizer == "sgd" ? 1.0 : 2.0;
  po.optimizer_state_factor = copies / (options.shard_optimizer ? layout.data : 1);
  po.own_optimizer_state_factor =
      copies / (options.shard_optimizer ? layout.data / std::max(1, options.expert_parallel) : 1);
  return po;
}

StepOptions layout_step_options(const CompileOptions& options, const Hardware& hardware,
                                const PartitionOptions& partition) {
  StepOptions so;
  std::optional<ScheduleKind> kind = parse_schedule_kind(options.schedule);
  if (!kind) throw Error(fmt::format("unknown schedule '{}'; use {}", options.schedule, schedule_kind_choices()));
  so.schedule = *kind;
  so.schedule_actions = options.schedule_actions;
  so.microbatches = partition.microbatches;
  so.virtual_stages = partition.virtual_stages;
  so.data_parallel = partition.data_parallel;
  so.expert_parallel = partition.expert_parallel;
  so.shard_optimizer = options.shard_optimizer && partition.data_parallel > 1;
  so.replica_link = partition.replica_link;
  so.optimizer_state_factor = partition.optimizer_state_factor;
  so.own_optimizer_state_factor = partition.own_optimizer_state_factor;
  so.memory_bandwidth = hardware.profile.bandwidth;
  so.update_s_per_param = measured_update_rate(hardware.profile, options.optimizer).value_or(0.0);
  return so;
}

std::optional<Layout> fixed_layout(const CompileOptions& options, const Hardware& hardware, int64_t batch) {
  if (options.data_parallel == 0 || options.microbatches == 0) return std::nullopt;
  Layout l;
  l.tensor = options.tensor_parallel;
  l.pipeline = static_cast<int>(hardware.gpus.size()) / l.tensor;
  l.data = options.data_parallel;
  l.microbatches = options.microbatches;
  l.microbatch_size = batch / (int64_t{l.data} * l.microbatches);
  return l;
}

LayoutChoice search_layouts(const Module& model, const DimBinding& binding, const Hardware& hardware,
                            const CompileOptions& options, PricedModels& priced) {
  const int64_t gpus = static_cast<int64_t>(hardware.gpus.size());
  LayoutSpace space;
  space.tensor = options.tensor_parallel;
  space.gpus = options.data_parallel == 0 ? gpus : gpus * options.data_parallel;
  space.data = options.data_parallel;
  space.microbatches = options.microbatches;
  if (const std::optional<ScheduleKind> kind = parse_schedule_kind(options.schedule))
    space.microbatches_per_device = microbatches_per_device(*kind);
  const std::string batch_dim = batch_dimension(model.graph());
  space.batch = binding.at(batch_dim);
  check_cluster_size(hardware.cluster, space.gpus);

  // One priced model per micro-batch size; the layouts share them.
  auto priced_for = [&](int64_t size) -> const PricedModel& {
    auto it = priced.find(size);
    if (it != priced.end()) return it->second;
    DimBinding micro = binding;
    micro[batch_dim] = size;
    return priced.emplace(size, price_model(model, micro, hardware, options)).first->second;
  };
  // The most stages the model can be cut into, from any micro-batch size.
  space.max_pipeline = 1 << 20;
  // What the schedule asks of m, for the messages below.
  const std::string per_device =
      space.microbatches_per_device > 0 ? fmt::format(", m at least {} per pipeline device ({} needs them)",
                                                      space.microbatches_per_device, options.schedule)
                                        : "";
  std::vector<Layout> layouts = candidate_layouts(space);
  if (layouts.empty())
    throw Error(fmt::format("no layout of {} devices as P x D x {} (tensor parallel) splits the batch {}={} into D "
                            "replicas of m micro-batches{}",
                            space.gpus, space.tensor, batch_dim, space.batch, per_device));
  const int pieces = static_cast<int>(priced_for(layouts[0].microbatch_size).cost.cut_candidates.size()) + 1;
  space.max_pipeline = pieces / options.virtual_stages;
  layouts = candidate_layouts(space);
  if (layouts.empty())
    throw Error(fmt::format("no layout of {} devices as P x D x {} (tensor parallel) with at most {} pipeline "
                            "devices (one layer each) splits the batch {}={} into D replicas of m micro-batches{}",
                            space.gpus, space.tensor, space.max_pipeline, batch_dim, space.batch, per_device));
  std::vector<LayoutCandidate> candidates;
  for (const Layout& layout : layouts) {
    const PricedModel& pm = priced_for(layout.microbatch_size);
    const CompileOptions scheduled = layout_schedule(options, layout);
    const PartitionOptions po = layout_partition_options(scheduled, hardware, layout);
    candidates.push_back(
        price_layout(layout, pm.cost, po, layout_step_options(scheduled, hardware, po), hardware.profile.flops));
  }
  return choose_layout(std::move(candidates));
}

}  // namespace pf
