// One rank of a pipeline: walks its device's action list with its own stages
// and its communicator, then sums tied gradients, takes the gradient norm and
// steps its optimizers through collectives. It reads and writes nothing of
// another rank's; everything between ranks goes through the communicator.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_stage.h"
#include "runtime/schedule.h"
#include "runtime/step_result.h"

namespace pf {

/// A parameter held by several stages: the ranks holding it sum its
/// gradient over `group` (only this rank's stages when the group is it alone).
struct TiedParam {
  std::string name;
  CommGroup group;
  std::vector<float> buffer, part;  // kept from step to step (first touch of fresh pages is slow)
};

/// What one step asks of every rank.
struct RankStep {
  std::vector<std::pair<std::string, const void*>> inputs;  // the batch, by model input
  bool backward = true;  // false: the forward actions only (evaluation)
  bool update = true;    // step the optimizers (with `backward`)
  double lr = 0;         // of this step's update
  double clip = 0;       // clip gradients to this global norm; 0: off
  bool trace = false;    // record every action, not only the computations
  double timeout_s = 60;
  PipelineOptions::Fault fault;
  std::chrono::steady_clock::time_point start;  // of the step, for the trace
};

/// What one rank reports of a step (the loss and the norm are every rank's).
struct RankOutcome {
  double loss = 0;  // mean over the micro-batches
  double grad_norm = 0;
  double walked_s = 0;  // since the step's start: its actions done (a GPU's queued work too)
  std::vector<TraceEvent> trace;
};

class RankWorker {
 public:
  /// Rank `rank` walks `actions` (its device's list) on `stages` (its own,
  /// by increasing index; every stage of the pipeline in `all_stages` only
  /// to map stage indices to its own) with `microbatches` per step. `tied`:
  /// the tied parameters it holds; `norm_params[k]`: the parameters of its
  /// k-th stage that it counts in the global norm (a tied one once).
  RankWorker(int rank, int microbatches, std::vector<Action> actions, std::vector<PipelineStage*> stages,
             Communicator& comm, CommGroup world, std::vector<TiedParam> tied,
             std::vector<std::vector<Param>> norm_params);

  /// One step. Never throws: a failure aborts the communicator with a
  /// message naming the stage ("stage 1: ..."), which ends every rank's step.
  void run(const RankStep& step, RankOutcome& out);

 private:
  struct Posted {
    std::vector<int> handles;  // per tensor
  };
  PipelineStage& stage(int index) const;
  void post_receives(const RankStep& step);
  void walk(const RankStep& step, RankOutcome& out);
  void receive(const Action& a);
  void send(const Action& a, const RankStep& step);
  void forward(const Action& a, const RankStep& step);
  void backward(const Action& a);
  /// Waits for the GPU stages' queued work and reads their losses.
  void finish_devices();
  double loss();
  void sum_tied_grads();
  double grad_norm();
  void update(const RankStep& step, double norm);

  int rank_;
  int microbatches_;
  std::vector<Action> actions_;
  std::vector<PipelineStage*> stages_;
  Communicator& comm_;
  CommGroup world_;
  std::vector<TiedParam> tied_;
  std::vector<std::vector<Param>> norm_params_;
  std::vector<Posted> posted_;  // per action: the receives posted for it
  int current_stage_ = -1;      // for a failure's message
};

/// The tag of tensor `tensor` of `kind` (0: activations, 1: gradients) of
/// micro-batch `mb` going to stage `receiver`: one message each, so that
/// both ends agree on it without talking.
int64_t hand_off_tag(int receiver, int kind, int mb, int tensor, int microbatches);

}  // namespace pf
