// The plan: the compiler's output and the runtime's only input, one versioned JSON file.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/dim_expr.h"
#include "ir/gradients.h"
#include "ir/module.h"
#include "ir/param_piece.h"
#include "ir/types.h"
#include "support/atomic_file.h"
#include "support/json.h"

namespace pf {

/// A tensor that crosses a stage boundary or comes from the batch.
struct PlanTensor {
  std::string name;  // the value's name in the stage's program (without '%')
  TensorType type;
  /// Stage index of the other end: the sender for `recv`, the receiver for
  /// `send`; -1 for a batch input.
  int peer = -1;
  /// For a batch input: it does not carry the batch dimension (ir/batch.h),
  /// so every micro-batch reads it whole instead of a slice along axis 0.
  bool whole = false;

  bool operator==(const PlanTensor&) const = default;
};

/// A parameter of a stage. A tied parameter (one weight used by several
/// stages, like GPT's token embedding and its output projection) appears on
/// every stage that uses it, each listing the others in `shared_with`, so
/// that the runtime can keep the copies equal (sum their gradients).
struct PlanParam {
  std::string name;  // its value name: the checkpoint key
  TensorType type;
  std::string init;              // canonical initializer text, e.g. "normal(0.02)"
  std::vector<int> shared_with;  // other stages holding the same parameter, increasing
  std::optional<ParamPiece> piece;  // a block of a whole parameter split between stages or ranks

  bool operator==(const PlanParam&) const = default;
};

/// One rank's part of a stage split over a tensor-parallel group: the program
/// the tensor-parallel pass wrote for that rank (its blocks of the split
/// weights, tp_copy and tp_reduce where the ranks meet) and the tables that
/// differ from the whole stage's. Inputs, receives and sends are the whole
/// stage's: every rank of the group receives and sends whole activations.
struct PlanShard {
  std::string program;
  std::vector<PlanParam> params;
  std::optional<GradientProgram> gradients;
  std::optional<BackwardSplit> split;

  bool operator==(const PlanShard&) const = default;
};

/// One pipeline stage (one chunk of a device when stages are interleaved).
///
/// `program` is everything the stage executes, compiled: the runtime parses
/// it once and runs no pass. Its graph is the stage's forward; in a training
/// plan the module also holds the backward that differentiation derived from
/// it (laid out as `gradients` says), and, when the schedule runs a backward
/// in two parts, those two functions (`split`). Program and tables must
/// agree, which loading checks: the graph's arguments are exactly the names
/// in `inputs` and `recv`, with their types; every `send` name is a value
/// the graph returns; `params` lists exactly the graph's `param` ops, with
/// their types and initializers; every function `gradients` and `split` name
/// exists and takes and returns what they say. The program is inlined (no
/// `call`).
struct PlanStage {
  int index = 0;
  int device = 0;                   // index into Plan::devices
  std::vector<std::string> layers;  // in model order
  std::string program;              // IR text: the graph, then its backward functions in a training plan
  std::vector<PlanParam> params;
  std::vector<PlanTensor> inputs;  // from the batch (tokens, targets...), micro-batch types; `whole` ones unsplit
  std::vector<PlanTensor> recv;    // activations received (their gradients are sent back)
  std::vector<PlanTensor> send;    // activations sent (their gradients are received)
  /// How the program's backward is laid out; absent in an inference plan.
  std::optional<GradientProgram> gradients;
  /// The backward's two parts, for schedules that run them apart (see
  /// schedule_splits_backward); absent otherwise.
  std::optional<BackwardSplit> split;
  /// With Plan::tensor_parallel T > 1: each rank's part, by rank in the
  /// group (T of them); with Plan::expert_parallel X > 1, one per block of
  /// the experts (X of them), part k run by replicas k, k + X, ... The fields above stay
  /// the whole stage, which the simulator prices. Empty otherwise.
  std::vector<PlanShard> shards;
  /// With shards: the products (and table lookups) that every rank of the
  /// group runs whole although the split could cut them, each with why
  /// ("%h.0.qkv.mm = matmul: %h.0.q.heads = reshape cannot keep the
  /// shares: its axes do not divide over 2 ranks").
  std::vector<std::string> kept_whole;

  /// What the cost model predicts for one micro-batch on this stage.
  struct Prediction {
    double forward_s = 0;   // on its device
    double backward_s = 0;
    double comm_s = 0;
    double sync_s = 0;  // its share of the gradient all-reduce across replicas
    /// Of backward_s, its weight part W where the schedule splits the
    /// backward (the rest is B); 0: unknown, half (a plan from before).
    double backward_weight_s = 0;
    /// backward_weight_s / backward_s, or 0.5 where either is 0: the share
    /// the compiler's prediction and the runtime's zbi order both use.
    double weight_share() const {
      return backward_weight_s > 0 && backward_s > 0 ? backward_weight_s / backward_s : 0.5;
    }
    double time_s = 0;  // forward + backward + sync + comm
    int64_t param_bytes = 0;
    int64_t stash_bytes = 0;
    int64_t memory_bytes = 0;  // peak: weights, gradients, optimizer state, activations in flight
    int64_t bytes_sent = 0;
    bool operator==(const Prediction&) const = default;
  } predicted;

  bool operator==(const PlanStage&) const = default;
};

/// A device the plan runs on.
struct PlanDevice {
  std::string name;  // "cpu:0", "h100:3"
  std::string kind;  // "cpu" or "cuda"
  int64_t memory_bytes = 0;
  int threads = 1;  // compute threads (BLAS included) of a CPU device

  bool operator==(const PlanDevice&) const = default;
};

/// One worker of the plan, a thread or a process: it runs the stages on one
/// device for one data-parallel replica, as one rank of the device's
/// tensor-parallel group. Ranks are numbered from 0, replica after replica,
/// and within a replica by their place in the group: with p devices per
/// replica and T ranks per group, rank (k * T + t) * p + i is place t of
/// device i of replica k, and runs the stages of rank i (place 0, replica
/// 0) on device k * p + i. Each replica trains on its share of the batch
/// (`binding` is one micro-batch of one replica), and the replicas of a
/// stage average their gradients; the ranks of a group all read the same
/// micro-batches.
struct PlanRank {
  int rank = 0;
  int device = 0;            // index into Plan::devices
  int replica = 0;
  int shard = 0;             // its place in its device's tensor-parallel group: the stages' shards it runs
  std::vector<int> stages;   // the stages it runs, increasing

  bool operator==(const PlanRank&) const = default;
};

/// A compiled model: what `pipeforge compile` writes and the runtime loads.
struct Plan {
  static constexpr int kVersion = 2;

  std::string model_name;    // the graph's name
  std::string model_source;  // the model file it was compiled from
  std::string model_hash;    // of the model text, to tell a stale plan
  DimBinding binding;        // every dimension's value
  std::vector<PlanDevice> devices;
  /// "gpipe", "1f1b", "interleaved", "zb1", "zbv", "zbi", "dualpipev", "loopedbfs" or "custom".
  std::string schedule;
  /// For schedule "custom": its schedule file (read_schedule_text), the
  /// compute actions of each device in order; empty otherwise.
  std::string schedule_actions;
  int microbatches = 1;
  int virtual_stages = 1;
  /// Ranks per device (GPUs of one node), splitting each layer
  /// Megatron-style: each stage holds the program of each of them
  /// (PlanStage::shards), the cost model prices one (tensor_parallel.h),
  /// the runtime runs them on cpu devices. Plans written before the field
  /// read as 1.
  int tensor_parallel = 1;
  /// Sequence parallelism on top (Megatron-LM's): the ops between the
  /// group's products run on each rank's part of the tokens. It is in the
  /// ranks' programs already; the field says how they were compiled. Plans
  /// written before the field read as false.
  bool sequence_parallel = false;
  /// Expert parallelism (Megatron-LM's and DeepSpeed-MoE's, over the
  /// data-parallel replicas): the replicas form groups of X, replicas
  /// g X .. g X + X - 1; replica k holds block k mod X of every layer's
  /// experts and runs that part of each stage (PlanStage::shards, X of
  /// them), which hands every replica of its group's tokens to its experts.
  /// A block's gradients are summed over the replicas holding it (one per
  /// group), the rest averaged over all. 1: every replica holds every
  /// expert; above 1 it divides the replicas, and tensor_parallel is 1.
  /// Plans written before the field read as 1.
  int expert_parallel = 1;
  /// How stages compute: f32, or bf16 (CUDA stages in bf16 with f32 master
  /// weights; CPU stages in f32). Plans written before the field read as f32.
  DType dtype = DType::f32;
  /// What the stages' backwards compute again instead of stashing ("none",
  /// "layers", "selective"); each stage's gradient table lists the values.
  /// Plans written before the field read as "none".
  std::string recompute = "none";
  /// Whether the data-parallel replicas of a stage share its optimizer state
  /// out between them (ZeRO stage 1: each keeps the state of, and steps, a
  /// 1/D share of the parameters, then they copy each other their updated
  /// shares) instead of each holding all of it. Written "optimizer_state":
  /// "sharded" or "replicated"; plans written before the field read as
  /// replicated.
  bool shard_optimizer = false;
  std::string loss_stage_output;  // the loss value's name, returned by the last stage; empty for inference
  std::vector<PlanStage> stages;
  std::vector<PlanRank> ranks;  // every stage in one rank per replica, on the stage's device

  /// What the cost model predicts for the whole pipeline.
  struct Summary {
    double period_s = 0;                 // steady-state time per micro-batch
    double imbalance_pct = 0;            // (slowest - mean) / mean stage time
    double speedup_vs_equal_layers = 0;  // baseline period / this period
    double speedup_vs_equal_params = 0;
    double bubble_fraction = 0;  // of the schedule, on these stage times
    double step_s = 0;           // one training step: schedule, exposed all-reduce, optimizer (0: older plans)
    double mfu = 0;              // model FLOPs of a step / (step_s x GPUs x peak FLOP/s) (0: older plans)
    bool operator==(const Summary&) const = default;
  } predicted;

  bool operator==(const Plan&) const = default;
};

/// The plan as pretty-printed JSON in a fixed key order; small objects sit on
/// one line and each program is an array of its lines, for people to read.
/// Throws pf::Error for a prediction that is not finite: JSON cannot hold it
/// (report a baseline that does not fit, say, as 0).
std::string plan_to_json(const Plan& plan);

/// Reads a plan and checks it whole: format and version, every field's type,
/// stage numbering, device indices, that every tensor received is sent with
/// the same type (and the other way round), tied parameters, and that each
/// stage's program parses, verifies under the plan's binding and agrees with
/// its tables (see PlanStage). Throws pf::Error naming `path` and what is
/// wrong. Each program is parsed once; with `programs`, the parsed modules
/// are kept there, in stage order, for the runtime to compile, followed by
/// the stages' parts (PlanStage::shards: stage after stage, part after part).
Plan plan_from_json(const std::string& text, const std::string& path, std::vector<Module>* programs = nullptr);

Plan load_plan(const std::string& path, std::vector<Module>* programs = nullptr);
/// What plan_from_json checks once the JSON is read, for a plan made in
/// memory; `path` names it in errors.
void check_plan(const Plan& plan, const std::string& path, std::vector<Module>* programs = nullptr);
/// Writes to `path`.tmp, then renames it over `path`, so that a crash leaves
/// the old plan or the new one, never half of one.
void save_plan(const Plan& plan, const std::string& path);

/// Stage `stage` as rank `shard` of its tensor-parallel group runs it: its
/// shard's program and tables in place of the whole stage's. Under
/// `sequence_parallel`, what it receives and sends that the tokens can be cut
/// of (cuts_into_token_parts) travels as the rank's part.
PlanStage shard_stage(const PlanStage& stage, int shard, bool sequence_parallel = false);

/// Under sequence parallelism over `degree` ranks, the names of what `stage`
/// receives and sends in each rank's part of the tokens.
std::vector<std::string> hand_offs_in_parts(const PlanStage& stage, int degree);

/// A stage's program parsed and verified under the plan's binding: the
/// dimensions the program declares take the plan's values. Errors are
/// located in the program's text, whose name is "stage N program".
Module stage_program(const Plan& plan, const PlanStage& stage);

/// One ranks per device, in device order, each running the stages placed on
/// its device: the topology of a plan with one replica.
std::vector<PlanRank> one_replica_ranks(const std::vector<PlanStage>& stages, int devices);
/// The same for `replicas` replicas of the pipeline on `devices` devices
/// each, each device a tensor-parallel group of `tensor` ranks (PlanRank).
std::vector<PlanRank> replicated_ranks(const std::vector<PlanStage>& stages, int devices, int replicas,
                                       int tensor = 1);
/// How many data-parallel replicas the plan's ranks form.
int replica_count(const Plan& plan);

/// Which of its stages' parts (PlanStage::shards) rank `r` runs: its place
/// in its tensor-parallel group, or under expert parallelism its replica's
/// block of the experts; -1 where the plan's stages run whole.
int stage_part(const Plan& plan, const PlanRank& r);
/// The rank running part `part` of stage `stage` in the first replica that
/// runs it (replica 0 under tensor parallelism, replica `part` under expert
/// parallelism).
int rank_of_part(const Plan& plan, int stage, int part);
/// Under expert parallelism: the replicas of `replica`'s group, which share
/// the experts out (a block each, by block), and the replicas holding the
/// same block as `replica` (one per group), which sum its gradients.
std::vector<int> expert_group_replicas(const Plan& plan, int replica);
std::vector<int> expert_block_replicas(const Plan& plan, int replica);
/// The parameters of part `part` of `stage` that the rank running it holds
/// alone under expert parallelism (its blocks of the experts: those the
/// whole stage does not list), whose gradients are summed over
/// expert_block_replicas only. Empty without expert parallelism.
std::vector<std::string> replica_own_params(const Plan& plan, const PlanStage& stage, int part);
/// How messages name rank `rank`: "rank 3 (stage 1, replica 1)".
std::string rank_name(const Plan& plan, int rank);

/// What one rank needs of the plan: its stages, the ranks it exchanges
/// activations and gradients with, and the groups it joins in collectives.
struct RankView {
  int rank = 0;
  int device = 0;
  int replica = 0;
  int shard = 0;                // its place in its tensor-parallel group
  std::vector<int> stages;      // increasing
  std::vector<int> neighbours;  // ranks of its place running a stage next to one of its own, increasing, itself excluded
  std::vector<int> world;       // every rank
  /// Per tied parameter it holds (PlanParam::shared_with): the ranks holding
  /// it in its replica, increasing; they sum its gradient.
  std::vector<std::pair<std::string, std::vector<int>>> tied;
  std::vector<int> replica_ranks;  // the ranks of its replica, increasing
  /// Per stage it runs: the ranks of its place running that stage in every
  /// replica, by replica; they average its gradients.
  std::vector<std::pair<int, std::vector<int>>> stage_replicas;
  /// Its tensor-parallel group: the ranks running its stages in its replica,
  /// by place (itself alone without tensor parallelism).
  std::vector<int> tensor_group;
};

/// Rank `rank`'s view of `plan` (which loading checked).
RankView rank_view(const Plan& plan, int rank);

/// The rank running stage `stage` of replica `replica`, at place `shard` of
/// its tensor-parallel group.
int rank_of_stage(const Plan& plan, int stage, int replica = 0, int shard = 0);

/// Whether schedule `kind` runs each backward in two parts (the input
/// gradients, then the weights'), so that its plans carry a BackwardSplit;
/// for custom, whether its schedule file `actions` names W actions.
bool schedule_splits_backward(std::string_view kind, std::string_view actions = {});

/// Whether any stage's backward computes forward values again (compiled
/// with --recompute layers or selective, and something to recompute).
bool plan_recomputes(const Plan& plan);

/// The compute dtype a plan may name ("f32" or "bf16"); throws pf::Error
/// naming `what` (the option or field it came from) for anything else.
DType parse_compute_dtype(std::string_view name, std::string_view what);

}  // namespace pf
