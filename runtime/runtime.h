// The Pipeforge runtime as a library: load a compiled plan, train it step by step across its devices, checkpoint it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ir/types.h"
#include "runtime/step_result.h"
#include "runtime/train_options.h"

namespace pf {

class Communicator;
struct Plan;
struct Module;

/// How a Runtime trains (TrainingOptions) and runs.
struct RuntimeOptions {
  TrainingOptions train;
  /// The watchdog: a stage that waits longer than this for a peer's
  /// activations or gradients stops the step with an error naming both.
  double timeout_s = 60;
  /// Record every action of every step (last_step().trace) for a
  /// Chrome/Perfetto trace (see trace_json).
  bool trace = false;
  /// Threads of each CPU device's kernels: 0 (the default) takes each
  /// device's from the plan (`compile --devices cpu:2x4` gives every device
  /// 4); n > 0 gives every CPU device n.
  int threads = 0;
  /// Each CPU stage's weights kept packed for its products through a step.
  PackWeights pack_weights = PackWeights::automatic;
  /// With `comm`: this process runs rank `rank` of the plan alone, and the
  /// other ranks, in other processes (or hosts), run the same plan with the
  /// same options; `comm` (its end of their communicator) must outlive the
  /// runtime. Every call is then collective: each process makes the same
  /// calls in the same order. Without: every rank here, as threads.
  int rank = -1;
  Communicator* comm = nullptr;
};

/// What a caller keeps beside the weights in a checkpoint, as text by key
/// (`pipeforge run` keeps its place in the data set: "data.epoch",
/// "data.batch"). A key may not be one of the index's own ("format",
/// "version", "model", "step", "optimizer", "optimizer.step", "shards").
using CheckpointNotes = std::map<std::string, std::string>;

/// A plan loaded for training in this process: one worker thread per device
/// walks the plan's schedule, each stage on the CPU or, where the plan names
/// a GPU, on a CUDA device; gradients of all micro-batches are accumulated,
/// then the optimizer steps once per batch.
///
/// Errors are pf::Error (ir/diagnostic.h) with one message saying what is
/// wrong and where ("stage 1: cross_entropy: target 12 at position 3 is out
/// of range [0, 10)"). A failed call leaves the runtime as it was: weights,
/// optimizer state and step count. Not thread-safe: one caller at a time.
///
///     pf::Runtime rt = pf::Runtime::load("plan.json");
///     rt.initialize();
///     for (...) double loss = rt.train_step({{{"x", x}, {"labels", labels}}});
///     rt.save_checkpoint("ck");  // a folder
class Runtime {
 public:
  /// Loads and validates a plan (pipeforge compile's output), builds every
  /// stage's programs and one worker per device, and sets the CPU kernels'
  /// threads (RuntimeOptions::threads). The weights are unset until initialize(),
  /// load_weights() or load_checkpoint().
  static Runtime load(const std::string& plan_path, const RuntimeOptions& options = {});
  /// The same for a plan compiled in this process (a model trained on one
  /// device compiles a one-stage plan in memory): it is checked as loading
  /// checks a file, and `what` names it in errors.
  static Runtime from_plan(Plan plan, const std::string& what, const RuntimeOptions& options = {});

  Runtime(Runtime&&) noexcept;
  Runtime& operator=(Runtime&&) noexcept;
  ~Runtime();

  /// Fresh weights from every parameter's initializer under `seed` (or
  /// TrainingOptions::seed), fresh optimizer state, step 0. A parameter's
  /// values depend only on the seed and its name, so any split of a model
  /// starts from the same numbers.
  void initialize();
  void initialize(uint64_t seed);
  /// Weights from a safetensors file holding every parameter by name, or
  /// from a checkpoint folder (other tensors, such as optimizer state, are
  /// ignored); fresh optimizer state, step 0. Checks every tensor before
  /// changing anything.
  void load_weights(const std::string& safetensors_path);
  /// Every parameter's current values, by name, in one safetensors file
  /// (between processes, rank 0 writes it).
  void save_weights(const std::string& safetensors_path) const;
  /// The gradients of the last train_step (tied parameters' summed, after
  /// clipping), by parameter name (between processes, rank 0 writes them).
  void save_gradients(const std::string& safetensors_path) const;

  /// Every parameter this process holds, once (a tied one is held by
  /// several stages), by name, with its type (always f32), in stage order.
  std::vector<std::pair<std::string, TensorType>> parameters() const;
  /// Copies the current values of each named parameter into its buffer
  /// (its type's elements, row-major). The values live in the stages (on
  /// the device for a CUDA stage), so this is a copy. Throws Error naming
  /// an unknown parameter before copying anything.
  void read_parameters(const std::vector<std::pair<std::string, float*>>& out) const;
  /// Where every parameter's values lie, by name, when all the stages here
  /// compute on the CPU (empty otherwise): the weights themselves, not a
  /// copy, valid while the runtime lives and changed by every step and
  /// load. A tied parameter's first copy.
  std::vector<std::pair<std::string, const float*>> host_parameters() const;
  /// Sets every parameter from a buffer of its type's elements, as
  /// load_weights does from a file: every parameter once and nothing else,
  /// checked before anything changes; fresh optimizer state, step 0.
  void load_parameters(const std::vector<std::pair<std::string, const float*>>& values);

  /// One whole batch: each model input by name, pointing at its bytes
  /// (little-endian, row-major, of the type batch_inputs() gives: every
  /// micro-batch back to back along the first axis). Not copied.
  struct Batch {
    std::vector<std::pair<std::string, const void*>> inputs;
  };
  /// The inputs a Batch must hold, with their whole-batch types.
  std::vector<std::pair<std::string, TensorType>> batch_inputs() const;

  /// Forward and backward of every micro-batch in schedule order, then one
  /// optimizer step (skipped when the gradient norm is not finite). Returns
  /// the loss, the mean over micro-batches; last_step() has the rest.
  double train_step(const Batch& batch);
  /// The loss of `batch` without gradients or an update (evaluation).
  double forward(const Batch& batch);
  /// The details of the last train_step or forward.
  const PipelineStepResult& last_step() const;
  /// Training steps taken since initialize() or load_weights(), or restored
  /// by load_checkpoint().
  int64_t step() const;

  /// Writes weights, optimizer state and step into the folder `path`: a
  /// safetensors shard per stage (its parameters and their optimizer state,
  /// by name; between processes, each written by the rank holding the stage
  /// in replica 0, into a folder all of them see) and an index.json naming
  /// them, written last by rename, so that a crash leaves the previous
  /// checkpoint whole (runtime/checkpoint.h).
  /// The weights are stored under the parameter names, so a checkpoint is
  /// also a weights file, and a plan of the same model with another number
  /// of stages loads it. `notes` go into the index.
  void save_checkpoint(const std::string& path, const CheckpointNotes& notes = {}) const;
  /// Restores what save_checkpoint wrote, all or nothing: the index, its
  /// model, optimizer kind and step, and every tensor's name, dtype and
  /// shape are checked before anything changes. Training on from here gives
  /// bit for bit the numbers of a run that never stopped. Returns the notes
  /// save_checkpoint was given.
  CheckpointNotes load_checkpoint(const std::string& path);

  /// The plan as loaded (include "plan/plan.h" to read it).
  const Plan& plan() const;
  int stages() const;
  int devices() const;
  /// The most that one stage run here holds of weights packed for its
  /// products (RuntimeOptions::pack_weights); 0 where none keeps them.
  int64_t packed_weight_bytes() const;

 private:
  struct Impl;
  explicit Runtime(std::unique_ptr<Impl> impl);
  static Runtime start(Plan plan, std::vector<Module> programs, const RuntimeOptions& options,
                       const std::string& what);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pf
