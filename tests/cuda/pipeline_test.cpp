// Pipelines with stages on CUDA devices: the numbers of one CPU device for every schedule (recomputing layers too), hand-offs between CPU and GPU stages, bf16 plans, and plans naming GPUs where none is visible.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "ir/diagnostic.h"
#include "plan/plan.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/runtime/pipeline_equivalence.h"

namespace pf {
namespace {

using namespace equivalence;

// TF32 stays off (PipelineOptions::allow_tf32): f32 kernels on the GPU differ
// from the CPU's by summation order only.
constexpr double kGpuTolerance = 1e-4;

/// Stage s on the GPU of its device: device d of the pipeline is GPU d % visible.
Placement on_gpus() {
  Placement setup;
  setup.tolerance = kGpuTolerance;
  setup.gpu_of = [](int, int device) { return device % cuda::device_count(); };
  return setup;
}

class CudaEquivalence : public ::testing::TestWithParam<const Model*> {};

TEST_P(CudaEquivalence, EveryScheduleOnGpusMatchesOneCpuDevice) {
  PF_REQUIRE_CUDA();
  const Model& model = *GetParam();
  const Reference ref = single_device(model);
  for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::zb_h1,
                            ScheduleKind::interleaved, ScheduleKind::zb_v, ScheduleKind::zb_interleaved})
    for (int devices : {1, 2, 4})
      for (int micro : {1, 4})
        for (int virt : {1, 2}) {
          if ((virt == 2) != (kind == ScheduleKind::interleaved || kind == ScheduleKind::zb_v ||
                              kind == ScheduleKind::zb_interleaved))
            continue;
          expect_same(ref, model, kind, devices, micro, virt, on_gpus());
        }
}

// Layers recomputed in the backward on the GPU (the backward programs hold
// forward ops again; the GEMM epilogues and fused softmax see other chains).
TEST_P(CudaEquivalence, RecomputingLayersOnGpusMatchesOneCpuDevice) {
  PF_REQUIRE_CUDA();
  const Model& model = *GetParam();
  const Reference ref = single_device(model);
  Placement setup = on_gpus();
  setup.recompute = Recompute::layers;
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1, ScheduleKind::interleaved})
    expect_same(ref, model, kind, 2, 4, kind == ScheduleKind::interleaved ? 2 : 1, setup);
}

TEST_P(CudaEquivalence, CpuAndGpuStagesHandOverBothWays) {
  PF_REQUIRE_CUDA();
  const Model& model = *GetParam();
  const Reference ref = single_device(model);
  // Even stages on the CPU, odd ones on GPU 0: every boundary crosses the bus.
  Placement mixed;
  mixed.tolerance = kGpuTolerance;
  mixed.gpu_of = [](int stage, int) { return stage % 2 == 0 ? -1 : 0; };
  for (ScheduleKind kind : {ScheduleKind::one_f_one_b, ScheduleKind::zb_h1})
    for (int devices : {2, 4}) expect_same(ref, model, kind, devices, 4, 1, mixed);
  // GPU first: the loss stage on the CPU reads the GPU's activations.
  mixed.gpu_of = [](int stage, int) { return stage % 2 == 0 ? 0 : -1; };
  expect_same(ref, model, ScheduleKind::one_f_one_b, 2, 4, 1, mixed);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaEquivalence, ::testing::Values(&kMlp, &kGpt, &kTables),
                         [](const ::testing::TestParamInfo<const Model*>& p) {
                           return std::string(p.param == &kMlp ? "mlp" : p.param == &kGpt ? "gpt" : "tables");
                         });

TEST(CudaPipeline, Bf16TrainsTheTinyGptCloseToF32) {
  PF_REQUIRE_CUDA();
  const Reference ref = single_device(kGpt);
  Placement bf16 = on_gpus();
  bf16.dtype = DType::bf16;
  auto pipeline = make_pipeline(kGpt, ScheduleKind::one_f_one_b, 2, 4, 1, bf16);
  Module full = load(kGpt);
  verify_module(full, bind(full, kGpt, kBatch));
  for (int step = 0; step < kSteps; ++step) {
    const Batch batch = make_batch(full.graph(), step);
    const double loss = pipeline->train_step(batch.named).loss;
    EXPECT_NEAR(loss, ref.losses[step], 2e-2 * std::fabs(ref.losses[step])) << "step " << step;
  }
}

TEST(CudaPipeline, Bf16RefusesToHandFloatsToACpuStage) {
  PF_REQUIRE_CUDA();
  Placement mixed;
  mixed.dtype = DType::bf16;
  mixed.gpu_of = [](int stage, int) { return stage == 0 ? 0 : -1; };
  try {
    make_pipeline(kMlp, ScheduleKind::one_f_one_b, 2, 4, 1, mixed);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "stages 0 and 1 would hand over floats as bf16 and f32: a bf16 plan computes in bf16 on CUDA devices "
              "and in f32 on CPU devices; place both on the same kind of device or compile the plan with --dtype f32");
  }
}

// Found by the GPU's kernel, reported when the stage's stream is waited for.
TEST(CudaPipeline, ABadTokenOnAGpuNamesTheStageAndTheOp) {
  PF_REQUIRE_CUDA();
  expect_bad_token_reported(on_gpus());
}

// The tiny MLP compiled for two H100s.
Plan gpu_plan() {
  Module m = load(kMlp);
  const DimBinding b = bind(m, kMlp, kBatch);
  CompileOptions co;
  co.devices = "h100:2";
  co.microbatches = 4;
  return compile_plan(std::move(m), b, "mlp.pf", co).plan;
}

// Runs without a GPU (CI): the plan names GPUs and none is visible.
TEST(CudaPlacement, APlanOnGpusNeedsAVisibleGpu) {
  if (cuda::cuda_available()) GTEST_SKIP() << "a CUDA device is visible: the plan runs on it (next test)";
  const Plan plan = gpu_plan();
  try {
    Pipeline::from_plan(plan, PipelineOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "plan stage 0 is on h100:0 but no CUDA device is visible; compile the plan for cpu devices or run on a "
              "machine with a GPU");
  }
  PipelineOptions cpu;
  cpu.cpu_only = true;
  EXPECT_NO_THROW(Pipeline::from_plan(plan, cpu));
}

TEST(CudaPlacement, APlanOnGpusRunsOnThemAsOnTheCpu) {
  PF_REQUIRE_CUDA();
  const Plan plan = gpu_plan();
  PipelineOptions options;
  options.train = sgd();
  auto gpu = Pipeline::from_plan(plan, options);
  options.cpu_only = true;
  auto cpu = Pipeline::from_plan(plan, options);
  Module full = load(kMlp);
  verify_module(full, bind(full, kMlp, kBatch));
  for (Pipeline* p : {gpu.get(), cpu.get()}) {
    p->initialize(7);
    p->start();
  }
  for (int step = 0; step < kSteps; ++step) {
    const Batch batch = make_batch(full.graph(), step);
    const double want = cpu->train_step(batch.named).loss;
    EXPECT_NEAR(gpu->train_step(batch.named).loss, want, kGpuTolerance * std::fabs(want)) << "step " << step;
  }
}

}  // namespace
}  // namespace pf
