// One rank of a pipeline: walks its device's action list with its own stages
// and its communicator, then averages its stages' gradients with their copies
// in the other data-parallel replicas, sums tied gradients, takes the
// gradient norm and steps its optimizers through collectives. It reads and writes nothing of
// another rank's; everything between ranks goes through the communicator.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backends/cpu/parallel.h"
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

/// Whom a rank joins in each collective of the step's epilogue (see
/// RankView); a group's name is the same on all its members and unique in
/// the world.
struct RankGroups {
  CommGroup world;    ///< every rank: the loss
  CommGroup replica;  ///< the ranks of its replica: the gradient norm
  /// Per stage it runs, in order: the stage's copies in every replica, which
  /// sum their gradients (one member: no data parallelism).
  std::vector<CommGroup> stage_replicas;
  std::vector<TiedParam> tied;
  /// Per stage it runs, under expert parallelism: the parameters its
  /// replica holds alone (its blocks of the experts), which the stage's
  /// replicas do not average; the stage's copies in the replicas holding the
  /// same block, which sum them instead (one member: none to sum with).
  /// Empty (or empty lists) otherwise.
  std::vector<std::vector<Param>> replica_own;
  std::vector<CommGroup> block_replicas;
  /// Under expert parallelism, every rank of its replica's expert group
  /// (which holds each block once): the norm sums the blocks' squares over it.
  std::optional<CommGroup> experts;
  int replicas = 1;
  /// Whether its stages' losses (and classifications) count: the places of
  /// a tensor-parallel group compute the same ones, and only the first counts.
  bool counts_loss = true;
  /// Each replica of a stage steps a share of its parameters
  /// (Plan::shard_optimizer): after the update the shares go round.
  bool shard_optimizer = false;
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
  int64_t correct = 0, predicted = 0;  // a forward pass's classifications (every rank's; PipelineStepResult)
  double walked_s = 0;  // since the step's start: its actions done (a GPU's queued work too)
  std::vector<TraceEvent> trace;
};

class RankWorker {
 public:
  /// Rank `rank` walks `actions` (its device's list, peers as ranks) on
  /// `stages` (its own, by increasing index) with `microbatches` per step
  /// and replica. `norm_params[k]`: the parameters of its k-th stage that it
  /// counts in the global norm (a tied one once).
  /// `threads`: the kernel threads of its device's CPU stages.
  /// `receive_order`: its receive actions (indices into `actions`) in the
  /// order it posts them, the senders' (receive_order in schedule.h).
  RankWorker(int rank, int microbatches, std::vector<Action> actions, std::vector<size_t> receive_order,
             std::vector<PipelineStage*> stages, Communicator& comm, RankGroups groups,
             std::vector<std::vector<Param>> norm_params, int threads);

  /// One step. Never throws: a failure aborts the communicator with a
  /// message naming the stage ("stage 1: ..."), which ends every rank's step.
  void run(const RankStep& step, RankOutcome& out);

 private:
  struct Posted {
    std::vector<int> handles;  // per tensor
  };
  PipelineStage& stage(int index) const;
  void watch_weights();
  bool pack_ahead(PipelineStage& first);
  void post_receives(const RankStep& step);
  void walk(const RankStep& step, RankOutcome& out);
  void send(const Action& a, const RankStep& step);
  void forward(const Action& a, const RankStep& step);
  void backward(const Action& a);
  /// Waits for the GPU stages' queued work and reads their losses.
  void finish_devices();
  /// The step's loss, and in a forward pass its classifications, summed
  /// over every rank.
  void loss(const RankStep& step, RankOutcome& out);
  /// In a forward pass: counts the predictions of the classifier in stage
  /// `st` for the micro-batch in `slot`, from its stash.
  void classify(const PipelineStage& st, int slot);
  /// Starts summing the gradients of its k-th stage over the stage's replicas.
  void start_replica_grads(size_t k);
  /// Starts summing its k-th stage's whole parameters' gradients (or with
  /// `own` its replica's own experts') over `group`, in buckets.
  void start_sums(size_t k, const CommGroup& group, bool own);
  /// Waits for every sum started and puts the totals back as the gradients.
  void finish_replica_grads();
  /// Whether entry `entry` of its k-th stage's parameters is averaged over
  /// the stage's replicas (all but the replica's own experts).
  bool averaged(size_t k, size_t entry) const { return !own_entries_[k][entry]; }
  void sum_tied_grads();
  /// Sums the gradient of `name` of stage `st` over `group`, every member
  /// getting the total: in place when it lies in host memory, else through
  /// `scratch`.
  void all_reduce_grad(PipelineStage& st, const std::string& name, const CommGroup& group,
                       std::vector<float>& scratch);
  double grad_norm();
  void update(const RankStep& step, double norm);
  /// With the optimizer sharded: each replica's updated share of every
  /// stage's parameters to the other replicas.
  void share_updates();
  /// Each member's share of `params` (cut as shard_pieces does over the
  /// group) from it to the others, through `packed`.
  void share_over(const CommGroup& group, const std::vector<Param>& params, std::vector<float>& packed);

  int rank_;
  int microbatches_;
  cpu::KernelPool kernels_;  // what its CPU stages' loops split over
  std::vector<Action> actions_;
  std::vector<size_t> receive_order_;
  std::vector<PipelineStage*> stages_;
  Communicator& comm_;
  RankGroups groups_;
  std::vector<float> scratch_;  // a device's gradient on its way through a collective
  /// A run of whole parameters of one stage summed over the replicas in one
  /// collective.
  struct Bucket {
    size_t stage;         // index into stages_
    size_t first, last;   // its parameters: the stage's entries [first, last)
    size_t offset;        // in the stage's replica buffer (or own buffer)
    int handle;           // of its all-reduce
    bool own;             // its replica's own experts, in the own buffer
  };
  std::vector<std::vector<float>> replica_buffers_;  // per stage: its gradients on their way
  std::vector<std::vector<float>> own_buffers_;      // per stage: its own experts' gradients on their way
  std::vector<std::vector<bool>> own_entries_;       // per stage, per parameter entry: its replica's own
  std::vector<Bucket> in_flight_;
  /// Per stage: the last action writing its weight gradients (-1: none).
  std::vector<int> last_grad_action_;
  std::vector<std::vector<Param>> norm_params_;
  std::vector<Posted> posted_;  // per action: the receives posted for it
  int current_stage_ = -1;      // for a failure's message
  /// A stage whose loss is a cross_entropy: its logits (..., C) and integer
  /// targets, which its backward needs and so its stash holds.
  struct Classifier {
    std::string logits, targets;
    int64_t classes = 0;
    int64_t rows = 0;  // targets per micro-batch
    int64_t ignore_index = -100;
  };
  std::vector<std::optional<Classifier>> classifiers_;  // per stage
  int64_t correct_ = 0, predicted_ = 0;   // this step's, on this rank
  bool unclassified_ = false;             // a classifier here whose stash is not in host memory
};

/// The tag of tensor `tensor` of `kind` (0: activations, 1: gradients) of
/// micro-batch `mb` going to stage `receiver`: one message each, so that
/// both ends agree on it without talking.
int64_t hand_off_tag(int receiver, int kind, int mb, int tensor, int microbatches);

}  // namespace pf
