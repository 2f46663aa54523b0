// Compiling a model into a plan.
#include "partitioner/compile.h"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <map>
#include <optional>

#include "ir/batch.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "partitioner/compile_layout.h"
#include "partitioner/expert_parallel.h"
#include "partitioner/plan_stages.h"
#include "partitioner/product_split.h"
#include "partitioner/stage_split.h"
#include "partitioner/step_time.h"
#include "runtime/schedule.h"

namespace pf {

namespace {

uint64_t text_hash(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : text) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ULL;
  return h;
}

// The split: at layer boundaries (the cut candidates `cg` comes with), or
// inside layers (`inside`) as --cuts says; "auto" keeps the layer cuts
// unless cutting inside layers is clearly faster or the only split that
// fits. Fills result.chosen, cuts, layer_cuts_period_s and the baselines;
// leaves `cg` with its layer cut candidates.
void choose_cuts(CostGraph& cg, const std::vector<int>& inside, PartitionOptions po, const CompileOptions& options,
                 int tensor, CompileResult& result) {
  if (options.cuts != "auto" && options.cuts != "layers" && options.cuts != "any" && options.cuts != "products")
    throw Error(fmt::format("unknown --cuts '{}'; use layers, any, products or auto", options.cuts));
  const bool inside_only = options.cuts == "any" || options.cuts == "products";
  const std::vector<int> at_layers = cg.cut_candidates;
  const int layers = static_cast<int>(at_layers.size()) + 1;
  const int v = options.virtual_stages;
  const bool manual = !options.split_layers.empty();
  if (manual) {
    for (int l : options.split_layers) {
      if (l < 1 || l >= layers) throw Error(fmt::format("--split: layer index {} is not in 1..{}", l, layers - 1));
      po.fixed_cuts.push_back(at_layers[l - 1]);
    }
  }
  const bool layers_only = manual || options.cuts == "layers";
  if (layers_only && po.stages > layers)
    throw Error(fmt::format("cannot cut {} layers into {} stages; use at most {} devices{}{}", layers, po.stages,
                            layers / v * tensor, v > 1 ? " or fewer virtual stages" : "",
                            manual ? "" : ", or --cuts any to cut inside layers"));
  std::optional<PartitionResult> by_layers;
  std::exception_ptr layers_error;  // rethrown as it was (a DoesNotFit stays one)
  if (!inside_only && po.stages <= layers) {
    try {
      by_layers = partition(cg, po);
      result.layer_cuts_period_s = by_layers->period_s;
    } catch (const Error&) {
      if (layers_only) throw;
      layers_error = std::current_exception();
    }
  }
  result.cuts = "layers";
  if (layers_only) {
    result.chosen = std::move(*by_layers);
  } else {
    const int pieces = static_cast<int>(inside.size()) + 1;
    if (po.stages > pieces)
      throw Error(fmt::format("cannot cut {} layers into {} stages, even inside layers; use at most {} devices", layers,
                              po.stages, pieces / v * tensor));
    cg.cut_candidates = inside;
    std::optional<PartitionResult> any;
    try {
      any = partition(cg, po);
    } catch (const Error&) {
      if (layers_error) std::rethrow_exception(layers_error);
      throw;
    }
    if (!by_layers || inside_only || any->period_s < (1 - kSubLayerGain) * by_layers->period_s) {
      result.chosen = std::move(*any);
      result.cuts = "any";
    } else {
      result.chosen = std::move(*by_layers);
    }
    cg.cut_candidates = at_layers;
  }
  // The baselines split at layer boundaries, as their users would; with
  // more stages than layers they have nothing to offer.
  if (po.stages <= layers) {
    result.equal_layers = equal_layers(cg, po);
    result.equal_params = equal_params(cg, po);
  }
}

// Splits a product's weight between two stages (product_split.h) while one
// more split shortens the period (by kProductGain for "auto"), at most once
// per stage boundary: cuts between whole ops leave a model of few large
// layers uneven.
void split_products(PricedModel& priced, const DimBinding& micro, const Hardware& hardware,
                    const PartitionOptions& po, const CompileOptions& options, CompileResult& result) {
  CompileOptions inside = options;
  inside.cuts = "any";  // a split product pays only with a cut inside it
  const double gain = options.cuts == "auto" ? kProductGain : 0;
  for (int round = 0; round + 1 < po.stages; ++round) {
    std::optional<std::pair<PricedModel, CompileResult>> best;
    for (const ProductSplit& p : propose_product_splits(priced.module.graph(), priced.cost, result.chosen)) {
      Module trial = priced.module;
      if (!split_product_rows(trial.graph(), p.op, p.rows)) continue;
      PricedModel candidate = price_model(std::move(trial), micro, hardware, inside);
      CompileResult r;
      try {
        choose_cuts(candidate.cost, candidate.inside_layers, po, inside, 1, r);
      } catch (const Error&) {
        continue;  // it does not fit where the split would put it
      }
      const double to_beat = best ? best->second.chosen.period_s : (1 - gain) * result.chosen.period_s;
      if (r.chosen.period_s < to_beat) best.emplace(std::move(candidate), std::move(r));
    }
    if (!best) return;
    priced = std::move(best->first);
    result.chosen = std::move(best->second.chosen);
    result.cuts = "products";
  }
}

}  // namespace

Recompute recompute_of(const CompileOptions& options) {
  if (const std::optional<Recompute> r = parse_recompute(options.recompute)) return *r;
  throw Error(fmt::format("unknown --recompute '{}'; use none, selective, layers or auto", options.recompute));
}

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

namespace {

/// What --expert-parallel needs: as many replicas, no other split of the
/// experts, and experts to share.
void check_expert_parallel(const Module& model, const CompileOptions& options) {
  const int x = options.expert_parallel;
  if (x < 1) throw Error(fmt::format("--expert-parallel must be at least 1, not {}", x));
  if (x == 1) return;
  if (options.data_parallel < x || options.data_parallel % x != 0)
    throw Error(fmt::format("--expert-parallel {} shares the experts out over groups of {} data-parallel replicas, a "
                            "block each, and needs --data-parallel a multiple of {}{}",
                            x, x, x,
                            options.data_parallel == 0 ? " (given, not auto)"
                                                       : fmt::format(", not {}", options.data_parallel)));
  if (options.tensor_parallel > 1)
    throw Error(fmt::format("--expert-parallel with --tensor-parallel {}: the tensor-parallel ranks cut the experts "
                            "already; use one of them",
                            options.tensor_parallel));
  const bool routes = std::any_of(model.functions.begin(), model.functions.end(), [](const Function& f) {
    return std::any_of(f.ops.begin(), f.ops.end(), [](const Op& op) { return op.kind == OpKind::moe_route; });
  });
  if (!routes)
    throw Error(fmt::format("--expert-parallel shares a mixture of experts out, and @{} routes to none (it has no "
                            "moe_route); drop --expert-parallel",
                            model.graph().name));
}

/// After the cost model shared them out over groups of `x` replicas: that
/// some layer's experts were (a route among fewer experts than replicas
/// keeps them whole on every replica, which plain data parallelism does).
void check_experts_shared(const Function& graph, const CostGraph& cg, int x) {
  if (std::any_of(cg.nodes.begin(), cg.nodes.end(), [](const CostNode& n) { return n.own_param_bytes > 0; })) return;
  int64_t fewest = 0;
  for (const Op& op : graph.ops)
    if (op.kind == OpKind::moe_route) {
      const int64_t experts = graph.type_of(op.operands[0]).shape.back();
      fewest = fewest == 0 ? experts : std::min(fewest, experts);
    }
  throw Error(fmt::format("--expert-parallel {} gives each replica a block of every layer's experts, and @{}'s routes "
                          "choose among {}: fewer than the replicas of a group; use --expert-parallel {} or fewer",
                          x, graph.name, fewest, fewest));
}

// One compile with options.recompute "none", "selective" or "layers".
CompileResult compile_once(Module model, const DimBinding& binding, const std::string& source,
                           const CompileOptions& options) {
  CompileResult result;
  const DType dtype = parse_compute_dtype(options.dtype, "--dtype");
  if (options.data_parallel < 0)
    throw Error(fmt::format("--data-parallel must be at least 1, not {}", options.data_parallel));
  if (options.shard_optimizer && options.data_parallel == 1)
    throw Error("--shard-optimizer shares the optimizer state out between data-parallel replicas, and this plan has "
                "one; give --data-parallel 2 or more (or auto)");
  check_expert_parallel(model, options);
  const Hardware hardware = load_hardware(options);
  // The layout: as given, or the best the cost model finds.
  std::optional<Layout> given = fixed_layout(options, hardware, binding.at(batch_dimension(model.graph())));
  PricedModels searched;  // the models the search priced, by micro-batch size
  if (!given) {
    result.layouts = search_layouts(model, binding, hardware, options, searched);
    if (result.layouts.best < 0)
      throw DoesNotFit("no layout fits in memory:\n" + render_layout_table(result.layouts));
  }
  const Layout layout = given ? *given : result.layouts.candidates[result.layouts.best].layout;
  check_cluster_size(hardware.cluster, layout.gpus());
  DimBinding micro = microbatch_binding(model, binding, layout.microbatches, layout.data);
  const std::vector<std::string> unsplit = whole_inputs(model.graph());  // before shapes become concrete
  auto found = searched.find(layout.microbatch_size);
  PricedModel priced =
      found != searched.end() ? std::move(found->second) : price_model(std::move(model), micro, hardware, options);
  // The lists the layout runs, where the options leave them to it.
  const CompileOptions scheduled = layout_schedule(options, layout);
  PartitionOptions po = layout_partition_options(scheduled, hardware, layout);
  if (options.expert_parallel > 1) {
    // Each replica holds a block of the experts; a stage's program is split alone.
    const ExpertParallel ep{options.expert_parallel, po.replica_link, dtype_size(dtype)};
    const Function& graph = priced.module.graph();
    const TensorParallelSplit split = apply_expert_parallel(priced.cost, graph, ep);
    check_experts_shared(graph, priced.cost, options.expert_parallel);
    priced.cost.cut_candidates = cuts_between_shares(graph, split, std::move(priced.cost.cut_candidates));
    priced.inside_layers = cuts_between_shares(graph, split, std::move(priced.inside_layers));
  }
  const int devices = layout.pipeline;
  choose_cuts(priced.cost, priced.inside_layers, po, options, layout.tensor, result);
  if ((options.cuts == "auto" || options.cuts == "products") && options.split_layers.empty() && layout.tensor == 1)
    split_products(priced, micro, hardware, po, options, result);
  model = std::move(priced.module);
  const Function& graph = model.graph();
  CostGraph& cg = priced.cost;
  for (size_t i = 0; i < graph.ops.size(); ++i) {
    std::string layer = graph.ops[i].layer();
    if (result.layer_names.empty() || result.layer_names.back() != layer) result.layer_names.push_back(layer);
  }

  // The plan: every stage's programs and tables.
  Plan& plan = result.plan;
  plan.model_name = graph.name;
  plan.model_source = source;
  plan.model_hash = model.source ? fmt::format("{:016x}", text_hash(model.source->text())) : "";
  plan.binding = micro;
  // Replica k runs on devices k * devices ..: each device of the list once
  // per replica, numbered on by kind ("cpu:4" for replica 1 of cpu:4). A
  // tensor-parallel device is named after the first GPU of its group.
  for (int k = 0; k < layout.data; ++k)
    for (int i = 0; i < devices; ++i) {
      const DeviceEntry& e = hardware.gpus[static_cast<size_t>(i) * layout.tensor];
      const std::string kind = e.spec.name.substr(0, e.spec.name.find(':'));
      const int index = std::stoi(e.spec.name.substr(kind.size() + 1)) + k * devices * layout.tensor;
      plan.devices.push_back({fmt::format("{}:{}", kind, index), e.profile.kind, po.devices[i].memory_bytes, e.threads});
    }
  plan.schedule = scheduled.schedule;
  plan.schedule_actions = scheduled.schedule_actions;
  plan.microbatches = layout.microbatches;
  plan.tensor_parallel = layout.tensor;
  plan.sequence_parallel = options.sequence_parallel;
  plan.expert_parallel = options.expert_parallel;
  plan.virtual_stages = options.virtual_stages;
  plan.dtype = dtype;
  plan.recompute = std::string(recompute_name(recompute_of(options)));
  plan.shard_optimizer = options.shard_optimizer && layout.data > 1;
  plan.loss_stage_output = graph.values[graph.returns[0]].name;

  std::vector<int> device_of;
  for (const StagePlan& cost : result.chosen.stages) device_of.push_back(cost.device);
  const bool split_backward = schedule_splits_backward(scheduled.schedule, scheduled.schedule_actions);
  plan.stages = plan_stages(split_into_stages(model, result.chosen.cuts, unsplit), micro, device_of,
                            /*training=*/true, split_backward, recompute_of(options), layout.tensor,
                            options.sequence_parallel, options.expert_parallel);
  plan.ranks = replicated_ranks(plan.stages, devices, layout.data, layout.tensor);
  const std::vector<StageTime> times = stage_times(cg, result.chosen);
  // How a split backward divides between B and W, from the stages' own
  // split programs: the zbi order is chosen on it, here and at run time.
  // The prediction takes the share back from the plan's seconds, as the
  // runtime will, so that both choose on the same bits.
  StepOptions step_options = layout_step_options(scheduled, hardware, po);
  const std::vector<double> shares = split_backward ? weight_shares(plan, hardware.profile) : std::vector<double>{};
  for (size_t s = 0; s < plan.stages.size(); ++s) {
    PlanStage& ps = plan.stages[s];
    const StagePlan& cost = result.chosen.stages[s];
    ps.predicted.forward_s = times[s].forward_s;
    ps.predicted.backward_s = times[s].backward_s;
    if (!shares.empty()) ps.predicted.backward_weight_s = times[s].backward_s * shares[s];
    step_options.weight_shares.push_back(ps.predicted.weight_share());
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
  // The step: the schedule simulated on the stage costs, the all-reduce it
  // leaves exposed, the optimizer; utilisation of the model's arithmetic.
  const StepPrediction step = predict_step(cg, result.chosen, step_options);
  plan.predicted.bubble_fraction = step.bubble_fraction;
  plan.predicted.step_s = step.step_s;
  plan.predicted.mfu = flop_utilisation(graph_flops(cg) * layout.microbatches * layout.data, step.step_s, layout.gpus(),
                                        hardware.profile.flops);
  return result;
}

}  // namespace

std::vector<std::string> auto_schedules(const CompileOptions& options) {
  std::vector<std::string> out = {"1f1b", "zb1", "zbv", "dualpipev"};
  if (options.virtual_stages > 1) {
    out.push_back("interleaved");
    out.push_back("zbi");
  }
  return out;
}

std::vector<std::string> compile_schedule_names() {
  std::vector<std::string> names = schedule_kind_names();
  names.push_back("auto");
  return names;
}

namespace {

int64_t busiest_device_memory(const Plan& plan) {
  std::map<int, int64_t> held;
  for (const PlanStage& s : plan.stages) held[s.device] += s.predicted.memory_bytes;
  int64_t most = 0;
  for (const auto& [device, bytes] : held) most = std::max(most, bytes);
  return most;
}

CompileResult compile_fastest_schedule(const Module& model, const DimBinding& binding, const std::string& source,
                                       const CompileOptions& options) {
  std::optional<CompileResult> best;
  std::vector<CompileResult::ScheduleCandidate> tried;
  size_t chosen = 0;
  std::exception_ptr first_error;
  auto attempt = [&](const CompileOptions& o, const std::string& name) {
    try {
      CompileResult r = compile_plan(model, binding, source, o);
      const Plan::Summary& p = r.plan.predicted;
      tried.push_back({name, p.step_s, p.bubble_fraction, busiest_device_memory(r.plan), ""});
      if (!best || p.step_s < best->plan.predicted.step_s) {
        best = std::move(r);
        chosen = tried.size() - 1;
      }
    } catch (const Error& e) {
      const std::string& why = e.message();
      tried.push_back({name, 0, 0, 0, why.substr(0, why.find('\n'))});
      if (!first_error) first_error = std::current_exception();
    }
  };
  for (const std::string& schedule : auto_schedules(options)) {
    CompileOptions o = options;
    o.schedule = schedule;
    o.extra_warmup = 0;
    if (schedule != "interleaved" && schedule != "zbi") o.virtual_stages = 1;
    attempt(o, schedule);
    // After its schedule, so that a tie keeps the one holding less.
    if (options.extra_warmup > 0 && (schedule == "1f1b" || schedule == "zb1")) {
      o.extra_warmup = options.extra_warmup;
      attempt(o, fmt::format("{} +{}", schedule, options.extra_warmup));
    }
  }
  if (!best) std::rethrow_exception(first_error);
  best->schedules = std::move(tried);
  best->chosen_schedule = chosen;
  return std::move(*best);
}

}  // namespace

CompileResult compile_plan(Module model, const DimBinding& binding, const std::string& source,
                           const CompileOptions& given) {
  if (given.extra_warmup != 0 && given.schedule != "1f1b" && given.schedule != "zb1" && given.schedule != "auto")
    throw Error(fmt::format("--extra-warmup runs forwards ahead in 1f1b or zb1, and the schedule is {}: give "
                            "--schedule 1f1b, zb1 or auto, or drop the flag",
                            given.schedule));
  if (given.schedule == "auto") return compile_fastest_schedule(model, binding, source, given);
  CompileOptions options = given;
  if (std::optional<ScheduleKind> kind = parse_schedule_kind(options.schedule))
    options.virtual_stages = chunks_per_device(*kind, options.virtual_stages);
  if (options.schedule == "custom") {
    // The file fixes the chunks and micro-batches; the pipeline's devices are checked with the layout.
    const Schedule written = read_schedule_text(options.schedule_actions, "the custom schedule");
    options.virtual_stages = written.virtual_stages;
    options.microbatches = written.microbatches;
    if (options.data_parallel == 0)
      throw Error("a schedule file fixes the pipeline's devices: give --data-parallel (1 by default) rather than auto");
  }
  if (options.recompute != "none" && options.recompute != "auto")
    return compile_once(std::move(model), binding, source, options);
  // Stash everything the backward reads when that fits. When it does not,
  // auto recomputes the cheap ops between products, then whole layers;
  // none says which of them would fit.
  CompileOptions kept = options;
  kept.recompute = "none";
  try {
    return compile_once(model, binding, source, kept);
  } catch (const DoesNotFit& e) {
    for (const char* recompute : {"selective", "layers"}) {
      CompileOptions recomputed = options;
      recomputed.recompute = recompute;
      std::optional<CompileResult> r;
      try {
        r = compile_once(model, binding, source, recomputed);
      } catch (const DoesNotFit&) {
        continue;
      }
      if (options.recompute == "none")
        throw DoesNotFit(fmt::format("{}\nit fits with --recompute {} (each stage computes {} again in the backward "
                                     "instead of keeping them)",
                                     e.message(), recompute,
                                     std::string_view(recompute) == "layers"
                                         ? "its layers' activations"
                                         : "the activations between its layers' products"));
      const std::string& why = e.message();
      r->recompute_reason = why.substr(0, why.find('\n'));
      return std::move(*r);
    }
    throw;
  }
}

}  // namespace pf
