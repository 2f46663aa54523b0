// Pipelined training against one CPU device: the shared models, reference and comparison.
#include "tests/runtime/pipeline_equivalence.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "ir/batch.h"
#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/model_cost_graph.h"
#include "partitioner/plan_stages.h"
#include "passes/pass.h"

namespace pf::equivalence {

const Model kMlp = {"examples/mlp.pf", {{"I", 6}, {"H", 8}, {"L", 6}, {"K", 5}}};
const Model kGpt = {"examples/gpt.pf", {{"T", 4}, {"S", 4}, {"C", 8}, {"H", 2}, {"L", 6}, {"V", 14}}};
const Model kLlama = {"examples/llama.pf", {{"T", 4}, {"C", 8}, {"H", 4}, {"R", 2}, {"F", 12}, {"L", 6}, {"V", 14}}};
const Model kMoe = {
    "examples/moe.pf",
    {{"T", 4}, {"C", 8}, {"H", 4}, {"R", 2}, {"F", 12}, {"L", 6}, {"V", 14}, {"E", 4}, {"K", 2}, {"A", 50}},
    true};
const Model kTables = {"tests/runtime/models/tables.pf", {}};

Module load(const Model& model) {
  return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/" + model.file));
}

DimBinding bind(const Module& m, const Model& model, int batch) {
  DimBinding overrides = model.overrides;
  overrides["B"] = batch;
  return m.binding(overrides);
}

Batch make_batch(const Function& g, int step) { return random_batch(g, static_cast<uint32_t>(100 + step), 5); }

TrainingOptions sgd() {
  TrainingOptions o;
  o.optimizer = "sgd";
  o.lr = 0.1;
  o.momentum = 0.9;
  o.steps = kSteps;
  return o;
}

Reference single_device(const Model& model) {
  Module m = load(model);
  DimBinding b = bind(m, model, kBatch);
  Trainer trainer(std::move(m), b, sgd());
  trainer.params().initialize(7);
  trainer.start();
  Reference ref;
  for (int step = 0; step < kSteps; ++step) {
    Batch batch = make_batch(trainer.graph(), step);
    StepResult r = trainer.compute_gradients(batch.pointers);
    if (step == 0)
      for (auto& e : trainer.params().entries()) ref.first_grads[e.name] = e.grad;
    trainer.apply(r);
    ref.losses.push_back(r.loss);
  }
  for (auto& e : trainer.params().entries()) ref.weights[e.name] = e.value;
  return ref;
}

Reference one_device_accumulating(const Model& model, int micro) {
  // A suite asks for the same few references once per configuration: each is computed once per process.
  static std::map<std::string, Reference> computed;
  std::string key = fmt::format("{} m={}", model.file, micro);
  for (const auto& [name, value] : model.overrides) key += fmt::format(" {}={}", name, value);
  if (const auto it = computed.find(key); it != computed.end()) return it->second;
  auto pipeline = make_pipeline(model, ScheduleKind::one_f_one_b, 1, micro, 1);
  Module full = load(model);
  verify_module(full, bind(full, model, kBatch));
  Reference ref;
  auto tensors = [&](bool grads) {
    std::map<std::string, std::vector<float>> named;
    for (ParameterSet* set : pipeline->parameter_sets())
      for (auto& e : set->entries()) named[e.name] = grads ? e.grad : e.value;
    return named;
  };
  for (int step = 0; step < kSteps; ++step) {
    ref.losses.push_back(pipeline->train_step(make_batch(full.graph(), step).named).loss);
    if (step == 0) ref.first_grads = tensors(true);
  }
  ref.weights = tensors(false);
  return computed[key] = ref;
}

Plan make_plan(const Model& model, ScheduleKind kind, int devices, int micro, int virt, const Placement& setup) {
  Module m = load(model);
  DimBinding b = bind(m, model, kBatch / (micro * setup.replicas));
  const std::vector<std::string> whole = whole_inputs(m.graph());
  PassContext ctx{b};
  verify_module(m, b, VerifyOptions{true});
  run_passes(m, {"inline", "shape"}, ctx);
  CostGraph cg = build_cost_graph(m.graph(), b, [](const Function&, const Op&, const OpCost&) { return OpTiming{}; });
  int stages = devices * virt;
  std::vector<int> cuts;
  const auto& c = cg.cut_candidates;
  for (int k = 1; k < stages; ++k) cuts.push_back(c[(static_cast<size_t>(k) * (c.size() + 1)) / stages - 1]);
  const Schedule schedule = setup.schedule_actions.empty() ? make_schedule(kind, devices, micro, virt)
                                                           : read_schedule_text(setup.schedule_actions, "lists");
  Plan plan = plan_for_cuts(m, b, cuts, whole, schedule, setup.dtype, setup.recompute, setup.tensor, setup.sequence,
                            setup.replicas, setup.experts);
  plan.shard_optimizer = setup.shard_optimizer;
  return plan;
}

std::unique_ptr<Pipeline> make_pipeline(const Model& model, ScheduleKind kind, int devices, int micro, int virt,
                                        const Placement& setup) {
  const Plan plan = make_plan(model, kind, devices, micro, virt, setup);
  const int stages = devices * virt;
  PipelineOptions options;
  options.train = sgd();
  options.timeout_s = 20;
  options.cpu_only = !setup.gpu_of;
  if (setup.gpu_of)
    for (int s = 0; s < stages; ++s)
      options.stage_gpus.push_back(setup.gpu_of(s, plan.stages[static_cast<size_t>(s)].device));
  auto p = Pipeline::from_plan(plan, options);
  p->initialize(7);
  p->start();
  return p;
}

namespace {

double rel(float a, float b, double scale) { return std::fabs(a - b) / std::max(scale, 1e-6); }

double largest(const std::vector<float>& v) {
  double scale = 0;
  for (float x : v) scale = std::max(scale, static_cast<double>(std::fabs(x)));
  return scale;
}

}  // namespace

void expect_tensors(Pipeline& pipeline, const std::map<std::string, std::vector<float>>& want, bool grads,
                    double tolerance, const std::string& what) {
  pipeline.copy_to_host();  // CUDA stages'
  for (ParameterSet* set : pipeline.parameter_sets())
    for (auto& e : set->entries()) {
      // A rank's block of a split parameter: the block of the whole.
      std::vector<float> expected = want.at(e.piece ? e.piece->whole : e.name);
      if (e.piece) {
        std::vector<float> block(static_cast<size_t>(e.type.numel()));
        e.piece->cut(e.type, reinterpret_cast<const std::byte*>(expected.data()),
                     reinterpret_cast<std::byte*>(block.data()), sizeof(float));
        expected = std::move(block);
      }
      const std::vector<float>& got = grads ? e.grad : e.value;
      const double scale = largest(expected);
      for (size_t i = 0; i < expected.size(); ++i)
        ASSERT_LT(rel(got[i], expected[i], scale), tolerance) << what << " " << e.name << "[" << i << "]";
    }
}

void expect_same(const Reference& given, const Model& model, ScheduleKind kind, int devices, int micro, int virt,
                 const Placement& setup) {
  SCOPED_TRACE(fmt::format("{} {} p={} m={} v={} d={} t={}{}{} recompute {}{}", model.file, schedule_kind_name(kind),
                           devices, micro, virt, setup.replicas, setup.tensor,
                           setup.shard_optimizer ? " (optimizer sharded)" : "",
                           setup.experts > 1 ? fmt::format(" (experts over {})", setup.experts) : "",
                           recompute_name(setup.recompute),
                           setup.schedule_actions.empty() ? "" : ", lists written:\n" + setup.schedule_actions));
  const Reference& want = model.couples_samples ? one_device_accumulating(model, micro * setup.replicas) : given;
  auto pipeline = make_pipeline(model, kind, devices, micro, virt, setup);
  Module full = load(model);
  DimBinding b = bind(full, model, kBatch);
  verify_module(full, b);
  const double tol = setup.tolerance;
  for (int step = 0; step < kSteps; ++step) {
    Batch batch = make_batch(full.graph(), step);
    PipelineStepResult r = pipeline->train_step(batch.named);
    EXPECT_NEAR(r.loss, want.losses[step], tol * std::fabs(want.losses[step])) << "step " << step;
    if (step == 0) {
      expect_tensors(*pipeline, want.first_grads, true, tol, "gradient of");
      // Theory of the activations a stage holds at once; a written list's
      // are what the simulator counts on it.
      const Schedule& s = pipeline->schedule();
      const std::vector<int> simulated = simulate(s).peak_inflight;
      for (int st = 0; st < pipeline->stages() && virt == 1; ++st) {
        const bool holds_all = kind == ScheduleKind::gpipe || kind == ScheduleKind::looped_bfs;
        const int expect = !setup.schedule_actions.empty() ? simulated[static_cast<size_t>(st)]
                           : holds_all                     ? micro
                                                           : std::min(devices - st, micro);
        EXPECT_EQ(r.peak_inflight[st], expect) << "stage " << st << " of " << s.devices;
      }
    }
  }
  expect_tensors(*pipeline, want.weights, false, tol, fmt::format("after {} steps, weight", kSteps));
}

void expect_bad_token_reported(const Placement& setup) {
  auto pipeline = make_pipeline(kGpt, ScheduleKind::one_f_one_b, 3, 4, 1, setup);
  Module full = load(kGpt);
  verify_module(full, bind(full, kGpt, kBatch));
  Batch batch = make_batch(full.graph(), 0);
  reinterpret_cast<int32_t*>(batch.data[0].data())[kBatch * 4 - 1] = 99;
  try {
    pipeline->train_step(batch.named);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("stage 0: running %tok = embedding %wte, %tokens"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("index 99"), std::string::npos) << e.message();
  }
  const Batch good = make_batch(full.graph(), 0);
  EXPECT_NO_THROW(pipeline->train_step(good.named));
}

}  // namespace pf::equivalence
