// Pipelined training against one CPU device: the tiny models, batches,
// single-device reference and comparison that the CPU and CUDA pipeline
// tests share.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ir/module.h"
#include "passes/autodiff.h"
#include "runtime/pipeline.h"
#include "runtime/random_batch.h"
#include "tests/oracle/trainer.h"

namespace pf::equivalence {

inline constexpr int kBatch = 24;  // divisible by every micro-batch count tested
inline constexpr int kSteps = 3;

struct Model {
  const char* file;  // from the repository's root
  DimBinding overrides;
  /// Its loss couples the samples of a micro-batch (a load balancing loss
  /// over the tokens' choices of experts): one device computes a pipeline's
  /// numbers only by taking the batch as the same micro-batches, and
  /// expect_same compares with that instead of the whole batch at once.
  bool couples_samples = false;
};

/// Tiny bindings of examples/mlp.pf, examples/gpt.pf, examples/llama.pf and
/// examples/moe.pf (a mixture of 4 experts, 2 per token, none dropped, its
/// load balancing loss weighed 0.5), and
/// tests/runtime/models/tables.pf, whose inputs include tables without the
/// batch dimension (one read by its first layer, one by its sixth).
extern const Model kMlp;
extern const Model kGpt;
extern const Model kLlama;
extern const Model kMoe;
extern const Model kTables;

Module load(const Model& model);
DimBinding bind(const Module& m, const Model& model, int batch);

/// A deterministic batch of kBatch samples for the model's inputs.
using Batch = RandomBatch;
Batch make_batch(const Function& g, int step);

/// SGD with momentum over kSteps steps.
TrainingOptions sgd();

/// Losses, first-step gradients and final weights of kSteps single-device steps.
struct Reference {
  std::vector<double> losses;
  std::map<std::string, std::vector<float>> first_grads, weights;
};
Reference single_device(const Model& model);
/// The same from a plan of one stage taking the batch as `micro`
/// micro-batches, their gradients summed: one device's numbers for a loss
/// that couples the samples of a micro-batch.
Reference one_device_accumulating(const Model& model, int micro);

/// How the pipeline under test is placed, and how close it must come.
struct Placement {
  /// The GPU of stage `stage`, which the plan places on pipeline device
  /// `device`; -1: the CPU. Empty: every stage on the CPU.
  std::function<int(int stage, int device)> gpu_of;
  DType dtype = DType::f32;
  /// Data-parallel replicas of the pipeline, each on devices of its own and
  /// 1/replicas of the batch.
  int replicas = 1;
  /// The replicas share each stage's optimizer state out (Plan::shard_optimizer).
  bool shard_optimizer = false;
  /// Each device a tensor-parallel group of this many ranks, each running
  /// its part of the device's stages.
  int tensor = 1;
  /// ... and the ops between its split products on each rank's part of the tokens.
  bool sequence = false;
  /// Groups of this many replicas share each stage's experts out (Plan::expert_parallel).
  int experts = 1;
  /// What each stage's backward computes again instead of stashing.
  Recompute recompute = Recompute::none;
  /// A schedule file the plan runs (schedule custom) instead of the kind's
  /// lists: it places the stages and splits the backward (or not) itself.
  std::string schedule_actions;
  /// Loss, every gradient and every final weight, relative to the largest
  /// magnitude of the reference tensor.
  double tolerance = 1e-5;
};

/// The plan of the model cut into devices * virt stages of (about) equal
/// layer counts.
Plan make_plan(const Model& model, ScheduleKind kind, int devices, int micro, int virt, const Placement& setup = {});

/// The pipeline of make_plan's plan, initialised with seed 7 and started.
std::unique_ptr<Pipeline> make_pipeline(const Model& model, ScheduleKind kind, int devices, int micro, int virt,
                                        const Placement& setup = {});

/// Every weight (or, with `grads`, gradient) of `pipeline` against `want`,
/// relative to the largest magnitude of each reference tensor.
void expect_tensors(Pipeline& pipeline, const std::map<std::string, std::vector<float>>& want, bool grads,
                    double tolerance, const std::string& what);

/// Trains kSteps steps and compares the losses, the first step's gradients,
/// the final weights and each stage's peak micro-batches in flight with the
/// reference (GoogleTest failures, with the configuration in their trace);
/// for a model that couples samples, with one_device_accumulating over the
/// pipeline's micro-batches (every replica's) instead.
void expect_same(const Reference& ref, const Model& model, ScheduleKind kind, int devices, int micro, int virt,
                 const Placement& setup = {});

/// An out-of-range token id in the last micro-batch makes stage 0's
/// embedding fail mid-step: the step throws one message naming the stage and
/// the op, and the pipeline trains again on a good batch.
void expect_bad_token_reported(const Placement& setup = {});

}  // namespace pf::equivalence
