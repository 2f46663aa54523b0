// Pipelined training computes the numbers of one device: every schedule,
// stage count and micro-batch count, over several steps; and each stage keeps
// as many micro-batches in flight as its schedule's theory says.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <string>
#include <utility>

#include "plan/plan.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "tests/runtime/pipeline_equivalence.h"

namespace pf {
namespace {

using namespace equivalence;

class Equivalence : public testing::TestWithParam<const Model*> {};

TEST_P(Equivalence, EveryScheduleMatchesOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved})
    for (int devices : {1, 2, 3, 4})
      for (int micro : {1, 2, 3, 4, 8})
        for (int virt : {1, 2}) {
          if (virt == 2 && kind != ScheduleKind::interleaved) continue;
          expect_same(ref, model, kind, devices, micro, virt);
        }
}

// Replicas of the pipeline, each on 1/d of the batch, averaging their
// gradients: still the numbers of one device, for every schedule.
TEST_P(Equivalence, DataParallelReplicasMatchOneDevice) {
  const Model& model = *GetParam();
  Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved})
    for (int replicas : {2, 3})
      for (int devices : {1, 2})
        for (int micro : {1, 4}) {
          const int virt = kind == ScheduleKind::interleaved ? 2 : 1;
          Placement setup;
          setup.replicas = replicas;
          expect_same(ref, model, kind, devices, micro, virt, setup);
        }
}

INSTANTIATE_TEST_SUITE_P(Models, Equivalence, testing::Values(&kMlp, &kGpt, &kTables),
                         [](const testing::TestParamInfo<const Model*>& p) {
                           return std::string(p.param == &kMlp ? "mlp" : p.param == &kGpt ? "gpt" : "tables");
                         });

TEST(PipelineFailure, AStageErrorStopsEveryWorkerWithOneMessage) { expect_bad_token_reported(); }

// A pipeline from `plan` loses what one device loses on `model`, step by step.
void expect_plan_matches_one_device(const Plan& plan, const Model& model, bool cpu_only) {
  PipelineOptions options;
  options.train = sgd();
  options.cpu_only = cpu_only;
  auto pipeline = Pipeline::from_plan(plan, options);
  pipeline->initialize(7);
  pipeline->start();
  Reference ref = single_device(model);
  Module full = load(model);
  verify_module(full, bind(full, model, kBatch));
  for (int step = 0; step < kSteps; ++step) {
    Batch batch = make_batch(full.graph(), step);
    EXPECT_NEAR(pipeline->train_step(batch.named).loss, ref.losses[step], 1e-5 * std::fabs(ref.losses[step]));
  }
}

// A plan compiled for GPUs runs every stage on the CPU when asked to, and
// computes there what one device computes.
TEST(PipelinePlacement, CpuOnlyRunsAGpuPlanOnTheCpu) {
  Module m = load(kMlp);
  DimBinding b = bind(m, kMlp, kBatch);
  CompileOptions co;
  co.devices = "h100:2";
  co.microbatches = 4;
  Plan plan = compile_plan(std::move(m), b, "mlp.pf", co).plan;
  ASSERT_EQ(plan.devices.at(0).kind, "cuda");
  expect_plan_matches_one_device(plan, kMlp, /*cpu_only=*/true);
}

// A model with tables that do not carry the batch: its plan marks them whole
// (and keeps the mark through JSON), and the pipeline built from the plan
// hands them whole to every micro-batch, computing what one device computes.
TEST(PipelineFromPlan, TablesReachEveryMicroBatchWhole) {
  Module m = load(kTables);
  DimBinding b = bind(m, kTables, kBatch);
  CompileOptions co;
  co.devices = "cpu:3";
  co.microbatches = 4;
  const Plan plan =
      plan_from_json(plan_to_json(compile_plan(std::move(m), b, "tables.pf", co).plan), "tables.json");
  std::map<std::string, std::pair<bool, std::string>> inputs;  // name -> whole, type as the stage reads it
  for (const PlanStage& stage : plan.stages)
    for (const PlanTensor& t : stage.inputs) inputs[t.name] = {t.whole, t.type.str()};
  using Input = std::pair<bool, std::string>;
  EXPECT_EQ(inputs, (std::map<std::string, Input>{{"x", {false, "f32[6,6]"}},
                                                   {"scale", {true, "f32[6,8]"}},
                                                   {"shift", {true, "f32[8]"}},
                                                   {"y", {false, "i32[6]"}}}));
  expect_plan_matches_one_device(plan, kTables, /*cpu_only=*/false);
}

}  // namespace
}  // namespace pf
