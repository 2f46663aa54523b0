// Pipeline schedules as data: per-device action lists, the simulator that proves them, pictures.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pf {

/// The pipeline schedules Pipeforge can generate.
enum class ScheduleKind {
  gpipe,        ///< all forwards, then all backwards (Huang et al.)
  one_f_one_b,  ///< PipeDream-flush: warm-up forwards, then one forward per backward
  interleaved,  ///< Megatron interleaved 1F1B: several model chunks per device
  zb_h1,        ///< zero bubble H1 (Qi et al.): backward split into B and W, W deferred on later devices
  zb_v,         ///< zero bubble V (Qi et al.): two chunks per device in a V, B and W split, 1F1B peak memory
  /// zero bubble over interleaved chunks: Megatron's round-robin placement
  /// of v >= 2 chunks per device, B and W split, in a list schedule's order
  /// chosen on the stages' costs (zbi_stage_cap bounds each stage's memory)
  zb_interleaved,
  /// DualPipeV (DeepSeek): zbv's V, ordered for devices that overlap a
  /// forward of one chunk with a backward of the other; most backwards
  /// whole, the warm-up's and cool-down's split to fill gaps; m >= 2p
  dual_pipe_v,
  /// looped breadth-first (Lamy-Poirier): Megatron's round-robin chunks,
  /// GPipe on each in turn: every forward of chunk 0, then of chunk 1, ...,
  /// then the backwards from the last chunk back; gpipe's memory
  looped_bfs,
  /// action lists a user wrote in a schedule file (read_schedule_text):
  /// any order the validator proves, on either placement, the backward
  /// fused or split
  custom,
};

/// "gpipe", "1f1b", "interleaved", "zb1", "zbv", "zbi", "dualpipev", "loopedbfs" or "custom"; nullopt
/// for anything else.
std::optional<ScheduleKind> parse_schedule_kind(std::string_view name);
/// The name parse_schedule_kind accepts for `kind`.
std::string_view schedule_kind_name(ScheduleKind kind);
/// The names of the kinds make_schedule generates, in the order messages
/// list them (custom is not among them: its lists come from a file).
std::vector<std::string> schedule_kind_names();
/// Those names for a message: "gpipe, 1f1b, interleaved, zb1, zbv or zbi".
std::string schedule_kind_choices();
/// True for the kinds whose actions split each backward into B and W.
bool splits_backward(ScheduleKind kind);
/// The model chunks each device holds under `kind` when the user asked for
/// `requested` (1 unless given): zbv and dualpipev always hold 2 and accept
/// 1 or 2 (a V has two arms); zbi holds at least 2 (1 asked means 2); the
/// others hold what was asked. Throws Error for a V asked for more than 2.
int chunks_per_device(ScheduleKind kind, int requested);
/// True for the kinds that hold as many chunks per device as asked:
/// interleaved, loopedbfs and zbi (the Vs hold 2, the others 1).
bool takes_chunks(ScheduleKind kind);

/// The fewest micro-batches per device `kind` runs: 2 for dualpipev (its
/// warm-up alone runs 2p - 1 forwards on device 0); 0 for the others, which
/// run any number.
int microbatches_per_device(ScheduleKind kind);

/// Where a schedule puts its model stages, each device holding the same
/// number of them (its chunks, in model order). Round robin (Megatron):
/// stage s on device s % p as its chunk s / p. V (zbv): chunk 0 of device d
/// is stage d and chunk 1 is stage 2p - 1 - d, so the micro-batch goes down
/// the devices and back up, the turn (stages p - 1 and p) stays on device
/// p - 1, and device 0 holds the first and the last stage (a tied embedding
/// and head share a device). Listed: any device per stage, as a schedule
/// file writes it (`placement 0 1 1 0 0 1 1 0`: a wave, Hanayo's).
class StagePlacement {
 public:
  /// Round robin, the default.
  StagePlacement() = default;
  static StagePlacement round_robin() { return StagePlacement(); }
  static StagePlacement v_shape();
  /// Stage s on device `device_of_stage[s]`. Throws Error unless the devices
  /// are 0 to p - 1 and each holds the same number of stages. A table that
  /// is round robin's or a V's gives that placement (they compare equal).
  static StagePlacement listed(const std::vector<int>& device_of_stage);

  bool is_v_shape() const { return shape_ == Shape::v_shape; }
  bool is_listed() const { return shape_ == Shape::listed; }
  /// The device holding model stage `stage` of `devices` * chunks.
  int device(int stage, int devices) const;
  /// Which of its device's chunks model stage `stage` is.
  int chunk(int stage, int devices) const;
  /// The model stage that is chunk `chunk` of device `device`.
  int stage(int device, int chunk, int devices) const;
  /// How a schedule file writes it: "round-robin", "v", or the device of
  /// each stage, "0 1 1 0 0 1 1 0".
  std::string name() const;

  bool operator==(const StagePlacement&) const = default;

 private:
  enum class Shape { round_robin, v_shape, listed };
  Shape shape_ = Shape::round_robin;
  std::vector<int> device_, chunk_;  // listed: per stage
};
StagePlacement stage_placement(ScheduleKind kind);

/// One step of a device's list.
enum class ActionKind {
  forward,          ///< F: forward of one micro-batch through one model stage
  backward,         ///< input and weight gradient fused (gpipe, 1f1b, interleaved)
  backward_input,   ///< B: input gradient only (zb1); on the critical path
  backward_weight,  ///< W: weight gradient only (zb1); may be deferred
  send_act,         ///< send the output activation of `stage` to stage + 1 on `peer`
  recv_act,         ///< receive the input activation of `stage` from stage - 1 on `peer`
  send_grad,        ///< send the input gradient of `stage` to stage - 1 on `peer`
  recv_grad,        ///< receive the output gradient of `stage` from stage + 1 on `peer`
  step,             ///< optimizer step; once per device, last
};

/// The name used in diagnostics and traces: "forward", "recv_act", ...
std::string_view action_kind_name(ActionKind kind);
/// True for the kinds that occupy the device: forward and the three backwards.
bool is_compute(ActionKind kind);

/// One entry of a device's action list. `stage` is always the model stage on
/// this device the action belongs to, so send_act(mb, s) pairs with
/// recv_act(mb, s + 1) and send_grad(mb, s) with recv_grad(mb, s - 1).
struct Action {
  ActionKind kind;
  int microbatch;  ///< -1 for step
  int stage;       ///< model stage (chunk) index; -1 for step
  int peer;        ///< device at the other end of a send/recv; -1 otherwise

  bool operator==(const Action&) const = default;
};

/// "forward(mb=3, stage=1)", "recv_act(mb=3, stage=1, peer=0)", "step".
std::string format_action(const Action& action);

/// Per-device action lists for one training step (one batch of micro-batches).
struct Schedule {
  ScheduleKind kind;
  int devices;
  int microbatches;
  int virtual_stages;  ///< model chunks per device; 1 but for interleaved, the Vs, zbi, loopedbfs, custom
  std::vector<std::vector<Action>> per_device;
  /// Where the model stages lie: stage_placement(kind), or a schedule file's.
  StagePlacement placement;
  /// Whether each backward runs as B and W: splits_backward(kind), or
  /// whether a schedule file names W actions.
  bool split_backward = false;

  /// devices * virtual_stages.
  int model_stages() const { return devices * virtual_stages; }
  /// The device holding model stage `stage`.
  int device_of(int stage) const { return placement.device(stage, devices); }
  /// Which of its device's chunks model stage `stage` is.
  int chunk_of(int stage) const { return placement.chunk(stage, devices); }
  /// The model stage that is chunk `chunk` of device `device`.
  int stage_at(int device, int chunk) const { return placement.stage(device, chunk, devices); }
};

/// How a schedule file and the pictures name a compute action: "F3", "B3"
/// (a fused backward or an input gradient), "W3", with the chunk appended
/// ("F3c1") when devices hold several.
std::string action_label(const Schedule& schedule, const Action& action);

/// Builds the action lists of `kind` (not custom). Any devices, microbatches >= 1 work
/// (dualpipev: 2 per device or more); virtual_stages > 1 only for
/// interleaved, loopedbfs and zbi (which needs 2 or more), exactly 2 for zbv
/// and dualpipev (see chunks_per_device). zbi's order is the one for
/// unit costs here (see the overload taking costs). Throws Error on bad
/// arguments.
Schedule make_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages = 1);

/// The receive actions of `device`'s list (indices into it) in the order
/// their messages are sent: each sender's in its own list's order, one
/// sender after another. A communicator without tags (NCCL) matches the
/// messages between two devices in sending order, which a device's own list
/// does not always keep (interleaved on 2 devices, each the other's
/// neighbour on both sides, with an odd number of micro-batches), so the
/// runtime posts its receives in this order.
std::vector<size_t> receive_order(const Schedule& schedule, int device);

/// Durations used by the simulator, per action on one model stage.
struct UnitCosts {
  double forward = 1, backward = 2, backward_input = 1, backward_weight = 1;
  double comm = 0;  ///< latency from a send to its receive becoming ready
};

/// The costs `given` names, F,B,W[,C]: a forward, an input gradient (a
/// backward not split takes B + W), a weight gradient, a hand-off's latency
/// (0 unless given); empty: the defaults above. Throws Error, naming `what`
/// (the flag or argument), for a count other than 0, 3 or 4, or a value not
/// finite, F, B or W not above 0, C below 0.
UnitCosts unit_costs(const std::vector<double>& given, std::string_view what);

/// Durations that differ by model stage, for simulating a priced plan: what
/// each compute action of a stage takes on its device, and how long each
/// hand-off it sends travels before the receive at the other end is ready.
/// Every value is finite and >= 0 (a first stage's input part may be empty).
struct ActionCosts {
  struct Stage {
    double forward = 0, backward = 0, backward_input = 0, backward_weight = 0;
    double send_act = 0;   ///< from its send_act to recv_act of the next stage being ready
    double send_grad = 0;  ///< from its send_grad to recv_grad of the previous stage being ready

    /// What a compute action of `kind` takes on this stage; 0 for the
    /// transfers and the step (the sends' times are above).
    double compute(ActionKind kind) const;
    /// The same, to set; `kind` must be forward or one of the backwards.
    double& compute(ActionKind kind);
  };
  std::vector<Stage> stages;  ///< one per model stage
};

/// What the cost model predicts for one stage and one micro-batch on its
/// device: its forward and backward compute, and its transfers (in and out,
/// activations and gradients together).
struct StageTime {
  double forward_s = 0, backward_s = 0, comm_s = 0;
  /// Of the backward, the share a split backward's weight part W takes.
  double weight_share = 0.5;
};

/// The costs a compiled plan's prediction runs its schedule on, one entry
/// per model stage: each direction carries its compute and half the
/// stage's transfers (so sends take no time of their own), and a split
/// backward's weight part W takes weight_share of it, the input part B the
/// rest. The compiler's predicted
/// bubble and `pipeforge schedule PLAN.json` both simulate these.
ActionCosts stage_action_costs(const std::vector<StageTime>& stages);

/// The most micro-batches model stage `stage` of zbi holds at once (forward
/// run, W not) over `devices` devices, `microbatches` and `chunks` per
/// device: min(m, p + (v - 1 - c) ceil(p / 2)) for its chunk c, the earlier
/// chunks more (their warm-up runs ahead), the last p, as 1F1B's first stage.
int zbi_stage_cap(int stage, int devices, int microbatches, int chunks);

/// make_schedule for a priced plan: the same lists for every kind but zbi,
/// whose order is chosen on `costs` (one entry per model stage).
Schedule make_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                       const ActionCosts& costs);
/// The same with every stage costing `costs`.
Schedule make_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages, const UnitCosts& costs);

/// An action placed in time by the simulator; start == end for sends, and
/// for a receive the interval is the time the device spent waiting for it.
struct TimedAction {
  Action action;
  double start, end;
};

/// The outcome of running a schedule on given costs.
struct Simulation {
  std::vector<std::vector<TimedAction>> per_device;
  double makespan;
  /// 1 - busy compute time / (devices * makespan).
  double bubble_fraction;
  /// Per model stage: the largest number of micro-batches whose forward ran
  /// and whose backward (or backward_input) had not.
  std::vector<int> peak_inflight;
  /// Per model stage: the largest number of micro-batches whose forward ran
  /// and whose last backward action (backward_weight where the schedule
  /// splits the backward) had not: the stash slots a stage needs.
  std::vector<int> peak_stashed;
  UnitCosts costs;  ///< the costs it ran on (the renderers print the theory for them)
};

/// Runs every device's list in order: a receive blocks until its send has
/// happened (sends are buffered and never block), compute takes its cost.
/// Proves the schedule complete and deadlock-free; throws Error naming the
/// device and action otherwise, or the stuck devices on a deadlock.
Simulation simulate(const Schedule& schedule, const UnitCosts& costs = {});
/// The same with costs per model stage (Simulation::costs is left at its
/// defaults); throws Error for a table of the wrong size or a negative cost.
Simulation simulate(const Schedule& schedule, const ActionCosts& costs);
/// simulate() on unit costs, result discarded: throws Error on a bad schedule.
void validate(const Schedule& schedule);

/// The textbook bubble fraction of `schedule` on `costs`, where one is known
/// and the generator reaches it: gpipe and 1f1b (p-1)/(m+p-1); interleaved
/// (p-1)/(v*m+p-1) for m a multiple of p; zb1 (p-1)/(3m+p-1) for F = B = W
/// and m >= p; zbv (p-1)/(6m+p-1) for F = B = W per chunk and m = p or
/// m >= 2p - 2 (device p - 1 cannot start before p - 1 hops of the first
/// forward, nor the others end before its last backward comes back: the
/// least any order reaches). nullopt otherwise (and whenever comm > 0).
std::optional<double> theoretical_bubble(const Schedule& schedule, const UnitCosts& costs);

/// Time across, one row per device, one column per shortest compute action:
/// cells "F3", "B3", "W3" (with a chunk suffix "F3c1" when virtual_stages > 1),
/// "." when idle; then "bubble: 25.0% (theory 25.0%)". `unit` names the
/// simulation's time unit ("ms"); empty: abstract time units.
std::string render_schedule_text(const Schedule& schedule, const Simulation& sim, std::string_view unit = "");
/// A standalone SVG document: a row per device, a rect per compute action
/// colored by kind and shaded by chunk, labeled with its micro-batch; time
/// axis (in `unit` when given), legend, and a title with kind, p, m, v and
/// the bubble.
std::string render_schedule_svg(const Schedule& schedule, const Simulation& sim, std::string_view unit = "");

/// A schedule file: each device's compute actions in the order it runs
/// them, one line per device; the transfers follow from them. `#` starts a
/// comment.
///
///     placement v                      # optional: round-robin (the default), v, or
///                                      # each stage's device: placement 0 1 1 0
///     dev 0: F0 F1 F2 F3 B0 B1 B2 B3   # action_label's names; "." cells are skipped
///     dev 1: F0 B0 F1 B1 F2 B2 F3 B3
///
/// The devices, micro-batches and chunks per device are the ones the lines
/// name (a listed placement must place as many stages); the backward is
/// split where W actions appear (then every B has its W). Returns the lists
/// (kind custom), proven complete and deadlock-free; throws Error at the
/// offending line and column of `path` otherwise.
Schedule read_schedule_text(std::string_view text, const std::string& path);
/// make_schedule for a plan or a compile: the lists of `kind` or, for
/// custom, of the schedule file `actions` (read_schedule_text), which must
/// run `devices`, `microbatches` and `virtual_stages` (else Error).
Schedule planned_schedule(ScheduleKind kind, std::string_view actions, int devices, int microbatches,
                          int virtual_stages, const ActionCosts& costs);
/// The schedule file of `schedule`'s compute actions, headed by a comment
/// naming its kind; read_schedule_text gives back the same lists.
std::string write_schedule_text(const Schedule& schedule);

/// PyTorch's compute-only schedule CSV (torch.distributed.pipelining, a
/// schedule's _dump_csv and _load_csv): a row per rank, its compute actions
/// in order, each "{stage}{F|I|W|B}{micro-batch}" with the model stage
/// first: I and W a split backward, B a whole one. Empty cells (idle steps)
/// are skipped, and so are the transfers and FSDP actions of a file with
/// its communication (SEND_F, RECV_B, UNSHARD, REDUCE_GRAD, ...): the lists
/// imply them. An OVERLAP_F_B cell, "(0F3;1B2)OVERLAP_F_B", runs its actions
/// in order; a whole B in a file that splits other backwards runs as its I
/// then its W. The stages a row names are its rank's chunks in model order,
/// as many on every rank. Returns the lists (kind custom), checked as
/// read_schedule_text checks a schedule file; throws Error at the row and
/// column of the cell at fault.
Schedule read_torch_schedule_csv(std::string_view text, const std::string& path);
/// `schedule`'s compute actions as PyTorch's compute-only CSV, one row per
/// device; read_torch_schedule_csv gives back the same lists.
std::string write_torch_schedule_csv(const Schedule& schedule);
/// The schedule file at `path`: PyTorch's CSV where its name ends in .csv,
/// else Pipeforge's schedule text.
Schedule read_schedule_file(const std::string& path);

}  // namespace pf
