// Schedule generators: GPipe, 1F1B, interleaved 1F1B and ZB-H1 as per-device action lists (ZB-V and ZB over
// interleaved chunks: schedule_zero_bubble_*.cpp); placement.
#include "runtime/schedule.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "runtime/schedule_orders.h"

namespace pf {

namespace {

constexpr ScheduleKind kKinds[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::interleaved,
                                   ScheduleKind::zb_h1, ScheduleKind::zb_v, ScheduleKind::zb_interleaved,
                                   ScheduleKind::dual_pipe_v, ScheduleKind::looped_bfs};

}  // namespace

std::optional<ScheduleKind> parse_schedule_kind(std::string_view name) {
  for (ScheduleKind kind : kKinds)
    if (schedule_kind_name(kind) == name) return kind;
  if (name == schedule_kind_name(ScheduleKind::custom)) return ScheduleKind::custom;
  return std::nullopt;
}

std::vector<std::string> schedule_kind_names() {
  std::vector<std::string> names;
  for (ScheduleKind kind : kKinds) names.emplace_back(schedule_kind_name(kind));
  return names;
}

std::string schedule_kind_choices() {
  const std::vector<std::string> names = schedule_kind_names();
  std::string out;
  for (size_t i = 0; i < names.size(); ++i)
    out += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return out;
}

bool splits_backward(ScheduleKind kind) {
  return kind == ScheduleKind::zb_h1 || kind == ScheduleKind::zb_v || kind == ScheduleKind::zb_interleaved ||
         kind == ScheduleKind::dual_pipe_v;
}

namespace {

/// The kinds placing two chunks per device as a V.
bool v_shaped(ScheduleKind kind) { return kind == ScheduleKind::zb_v || kind == ScheduleKind::dual_pipe_v; }

}  // namespace

int chunks_per_device(ScheduleKind kind, int requested) {
  if (kind == ScheduleKind::zb_interleaved) return std::max(2, requested);
  if (!v_shaped(kind)) return requested;
  if (requested > 2)
    throw Error(fmt::format("{} places 2 chunks on each device (the arms of its V), not {}; more chunks per device "
                            "are interleaved's",
                            schedule_kind_name(kind), requested));
  return 2;
}

bool takes_chunks(ScheduleKind kind) {
  return kind == ScheduleKind::interleaved || kind == ScheduleKind::looped_bfs || kind == ScheduleKind::zb_interleaved;
}

int microbatches_per_device(ScheduleKind kind) { return kind == ScheduleKind::dual_pipe_v ? 2 : 0; }

StagePlacement StagePlacement::v_shape() {
  StagePlacement v;
  v.shape_ = Shape::v_shape;
  return v;
}

StagePlacement StagePlacement::listed(const std::vector<int>& device_of_stage) {
  const int stages = static_cast<int>(device_of_stage.size());
  if (stages == 0) throw Error("a placement lists the device of each stage, and this one lists none");
  const int devices = *std::max_element(device_of_stage.begin(), device_of_stage.end()) + 1;
  std::vector<int> held(static_cast<size_t>(devices), 0);
  StagePlacement out;
  out.shape_ = Shape::listed;
  for (int d : device_of_stage) {
    if (d < 0) throw Error(fmt::format("a placement lists device {}; devices are numbered from 0", d));
    out.device_.push_back(d);
    out.chunk_.push_back(held[static_cast<size_t>(d)]++);
  }
  for (int d = 0; d < devices; ++d)
    if (held[static_cast<size_t>(d)] != held[0])
      throw Error(fmt::format("device {} holds {} stages and device 0 holds {}: each of the devices (0 to {}) "
                              "holds as many, its chunks",
                              d, held[static_cast<size_t>(d)], held[0], devices - 1));
  for (const StagePlacement& named : {round_robin(), v_shape()}) {
    if (named.is_v_shape() && stages != 2 * devices) continue;
    bool same = true;
    for (int s = 0; s < stages && same; ++s) same = named.device(s, devices) == device_of_stage[static_cast<size_t>(s)];
    if (same) return named;
  }
  return out;
}

int StagePlacement::device(int stage, int devices) const {
  switch (shape_) {
    case Shape::round_robin: return stage % devices;
    case Shape::v_shape: return stage < devices ? stage : 2 * devices - 1 - stage;
    case Shape::listed: break;
  }
  return device_.at(static_cast<size_t>(stage));
}

int StagePlacement::chunk(int stage, int devices) const {
  switch (shape_) {
    case Shape::round_robin: return stage / devices;
    case Shape::v_shape: return stage < devices ? 0 : 1;
    case Shape::listed: break;
  }
  return chunk_.at(static_cast<size_t>(stage));
}

int StagePlacement::stage(int device, int chunk, int devices) const {
  switch (shape_) {
    case Shape::round_robin: return chunk * devices + device;
    case Shape::v_shape: return chunk == 0 ? device : 2 * devices - 1 - device;
    case Shape::listed: break;
  }
  for (size_t s = 0; s < device_.size(); ++s)
    if (device_[s] == device && chunk_[s] == chunk) return static_cast<int>(s);
  throw Error(fmt::format("the placement has no chunk {} on device {}", chunk, device));
}

std::string StagePlacement::name() const {
  switch (shape_) {
    case Shape::round_robin: return "round-robin";
    case Shape::v_shape: return "v";
    case Shape::listed: break;
  }
  std::string out;
  for (int d : device_) out += fmt::format("{}{}", out.empty() ? "" : " ", d);
  return out;
}

StagePlacement stage_placement(ScheduleKind kind) {
  return v_shaped(kind) ? StagePlacement::v_shape() : StagePlacement::round_robin();
}

std::string_view schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::gpipe: return "gpipe";
    case ScheduleKind::one_f_one_b: return "1f1b";
    case ScheduleKind::interleaved: return "interleaved";
    case ScheduleKind::zb_h1: return "zb1";
    case ScheduleKind::zb_v: return "zbv";
    case ScheduleKind::zb_interleaved: return "zbi";
    case ScheduleKind::dual_pipe_v: return "dualpipev";
    case ScheduleKind::looped_bfs: return "loopedbfs";
    case ScheduleKind::custom: return "custom";
  }
  return "?";
}

std::string_view action_kind_name(ActionKind kind) {
  switch (kind) {
    case ActionKind::forward: return "forward";
    case ActionKind::backward: return "backward";
    case ActionKind::backward_input: return "backward_input";
    case ActionKind::backward_weight: return "backward_weight";
    case ActionKind::send_act: return "send_act";
    case ActionKind::recv_act: return "recv_act";
    case ActionKind::send_grad: return "send_grad";
    case ActionKind::recv_grad: return "recv_grad";
    case ActionKind::step: return "step";
  }
  return "?";
}

bool is_compute(ActionKind kind) {
  return kind == ActionKind::forward || kind == ActionKind::backward ||
         kind == ActionKind::backward_input || kind == ActionKind::backward_weight;
}

std::string action_label(const Schedule& schedule, const Action& action) {
  const char letter = action.kind == ActionKind::forward           ? 'F'
                      : action.kind == ActionKind::backward_weight ? 'W'
                                                                   : 'B';
  std::string label = fmt::format("{}{}", letter, action.microbatch);
  if (schedule.virtual_stages > 1) label += fmt::format("c{}", schedule.chunk_of(action.stage));
  return label;
}

std::string format_action(const Action& action) {
  std::string_view name = action_kind_name(action.kind);
  if (action.kind == ActionKind::step) return std::string(name);
  if (is_compute(action.kind))
    return fmt::format("{}(mb={}, stage={})", name, action.microbatch, action.stage);
  return fmt::format("{}(mb={}, stage={}, peer={})", name, action.microbatch, action.stage,
                     action.peer);
}

namespace {

using schedule_orders::Work;

/// Appends `work` to device `device`'s list with the transfers it implies: the
/// receive of its input right before it, the send of its output right after.
/// Receives sit next to their consumer so the list states the dependency; the
/// runtime is free to post them earlier.
void emit(const Schedule& schedule, int device, const Work& work, std::vector<Action>& out) {
  const int stage = schedule.stage_at(device, work.chunk);
  const int last = schedule.model_stages() - 1;
  const int mb = work.microbatch;
  const bool is_backward =
      work.kind == ActionKind::backward || work.kind == ActionKind::backward_input;
  if (work.kind == ActionKind::forward && stage > 0)
    out.push_back({ActionKind::recv_act, mb, stage, schedule.device_of(stage - 1)});
  if (is_backward && stage < last)
    out.push_back({ActionKind::recv_grad, mb, stage, schedule.device_of(stage + 1)});
  out.push_back({work.kind, mb, stage, -1});
  if (work.kind == ActionKind::forward && stage < last)
    out.push_back({ActionKind::send_act, mb, stage, schedule.device_of(stage + 1)});
  // Stage 0's input gradient has no consumer.
  if (is_backward && stage > 0)
    out.push_back({ActionKind::send_grad, mb, stage, schedule.device_of(stage - 1)});
}

/// Looped BFS: every forward of chunk 0, then of chunk 1, ..., then the
/// backwards chunk by chunk from the last, micro-batches in order within a
/// chunk. With one chunk it is GPipe.
std::vector<Work> looped_bfs_order(int microbatches, int chunks) {
  std::vector<Work> order;
  for (int c = 0; c < chunks; ++c)
    for (int mb = 0; mb < microbatches; ++mb) order.push_back({ActionKind::forward, mb, c});
  for (int c = chunks - 1; c >= 0; --c)
    for (int mb = 0; mb < microbatches; ++mb) order.push_back({ActionKind::backward, mb, c});
  return order;
}

/// The 1F1B shape shared by 1f1b and interleaved: `warmup` forwards, then one
/// forward before each backward while forwards remain, then the remaining
/// backwards. Both sequences list (micro-batch, chunk) pairs in running order.
std::vector<Work> one_f_one_b_order(const std::vector<Work>& forwards,
                                    const std::vector<Work>& backwards, int warmup) {
  std::vector<Work> order(forwards.begin(), forwards.begin() + warmup);
  size_t next_forward = warmup;
  for (const Work& backward : backwards) {
    if (next_forward < forwards.size()) order.push_back(forwards[next_forward++]);
    order.push_back(backward);
  }
  return order;
}

/// The interleaved forward and backward sequences (the same on every device):
/// micro-batches in groups of at least `devices`; a group runs chunk 0 for all
/// its micro-batches, then chunk 1, ...; backwards walk the chunks in reverse.
/// When m is not a multiple of p the first group takes the remainder. Megatron
/// makes the last group short instead; with the warm-up below that deadlocks
/// for some shapes (p=4 m=5 v=3 in this simulator), while a long first group
/// only lengthens the warm-up: every shape up to p=12 m=48 v=6 validates.
struct ChunkOrder {
  std::vector<Work> forwards, backwards;
  int first_group;
};

ChunkOrder interleaved_order(int devices, int microbatches, int chunks) {
  const int groups = std::max(1, microbatches / devices);
  ChunkOrder order;
  order.first_group = microbatches - (groups - 1) * devices;
  int begin = 0;
  for (int g = 0; g < groups; ++g) {
    const int end = begin + (g == 0 ? order.first_group : devices);
    for (int c = 0; c < chunks; ++c)
      for (int mb = begin; mb < end; ++mb) order.forwards.push_back({ActionKind::forward, mb, c});
    for (int c = chunks - 1; c >= 0; --c)
      for (int mb = begin; mb < end; ++mb) order.backwards.push_back({ActionKind::backward, mb, c});
    begin = end;
  }
  return order;
}

/// Interleaved 1F1B on `device`. The warm-up is Megatron's: enough forwards to
/// fill chunks 0..v-2 of the first group, plus two per downstream device; the
/// factor two (not one) lets transfers overlap compute when comm > 0. With one
/// chunk it is plain 1F1B's p-1-d, so v = 1 gives exactly the 1f1b lists.
std::vector<Work> interleaved_device_order(const ChunkOrder& order, int devices, int chunks,
                                           int device) {
  const int downstream = devices - 1 - device;
  const int warmup = chunks == 1 ? downstream : (chunks - 1) * order.first_group + 2 * downstream;
  return one_f_one_b_order(order.forwards, order.backwards,
                           std::min<int>(warmup, order.forwards.size()));
}

/// ZB-H1 on `device`: 1F1B's forwards and input-gradient backwards (p-d
/// forwards before the first B, so the same in-flight peak), with W(k) placed
/// after B(k+d) instead of fused into B(k). Deferring W lets the B chain run
/// back to device 0 at one B per hop, and the d Ws still pending on device d
/// fill its cool-down; on F = B = W and m >= p this reaches (p-1)/(3m+p-1),
/// the paper's third of 1F1B's bubble time. A W keeps its micro-batch's
/// stash slot, so each device holds p slots at most (1F1B's device 0): the
/// W goes before the next forward, which would otherwise take a slot while
/// it still holds one (p + 1), at no cost on equal costs.
std::vector<Work> zb_h1_order(int devices, int microbatches, int device) {
  std::vector<Work> order;
  int next_forward = std::min(devices - device, microbatches);
  for (int mb = 0; mb < next_forward; ++mb) order.push_back({ActionKind::forward, mb, 0});
  int next_weight = 0;
  for (int mb = 0; mb < microbatches; ++mb) {
    order.push_back({ActionKind::backward_input, mb, 0});
    if (mb >= device) order.push_back({ActionKind::backward_weight, next_weight++, 0});
    if (next_forward < microbatches) order.push_back({ActionKind::forward, next_forward++, 0});
  }
  while (next_weight < microbatches)
    order.push_back({ActionKind::backward_weight, next_weight++, 0});
  return order;
}

}  // namespace

ActionCosts stage_action_costs(const std::vector<StageTime>& stages) {
  ActionCosts costs;
  for (const StageTime& t : stages) {
    ActionCosts::Stage& c = costs.stages.emplace_back();
    c.forward = t.forward_s + t.comm_s / 2;
    c.backward = t.backward_s + t.comm_s / 2;
    c.backward_weight = c.backward * t.weight_share;
    c.backward_input = c.backward - c.backward_weight;
  }
  return costs;
}

UnitCosts unit_costs(const std::vector<double>& given, std::string_view what) {
  UnitCosts costs;
  if (given.empty()) return costs;
  if (given.size() != 3 && given.size() != 4)
    throw Error(fmt::format("{}: give F,B,W or F,B,W,C (a forward, an input gradient, a weight gradient and a "
                            "hand-off), not {} value{}",
                            what, given.size(), given.size() == 1 ? "" : "s"));
  const char* names[] = {"a forward", "an input gradient", "a weight gradient", "a hand-off"};
  for (size_t i = 0; i < given.size(); ++i)
    if (!std::isfinite(given[i]) || given[i] < 0 || (i < 3 && given[i] == 0))
      throw Error(fmt::format("{}: {} takes {}, expected a finite number {} 0", what, names[i], given[i],
                              i < 3 ? ">" : ">="));
  costs.forward = given[0];
  costs.backward_input = given[1];
  costs.backward_weight = given[2];
  costs.backward = given[1] + given[2];
  if (given.size() > 3) costs.comm = given[3];
  return costs;
}

Schedule make_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                       const UnitCosts& costs) {
  ActionCosts each;
  each.stages.assign(static_cast<size_t>(std::max(0, devices * virtual_stages)),
                     {costs.forward, costs.backward, costs.backward_input, costs.backward_weight, costs.comm,
                      costs.comm});
  return make_schedule(kind, devices, microbatches, virtual_stages, each);
}

Schedule make_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages) {
  return schedule_orders::build_schedule(kind, devices, microbatches, virtual_stages, nullptr);
}

Schedule make_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                       const ActionCosts& costs) {
  return schedule_orders::build_schedule(kind, devices, microbatches, virtual_stages, &costs);
}

namespace schedule_orders {

Schedule build_schedule(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                        const ActionCosts* costs) {
  if (devices < 1) throw Error(fmt::format("schedule needs at least 1 device, got {}", devices));
  if (microbatches < 1)
    throw Error(fmt::format("schedule needs at least 1 micro-batch, got {}", microbatches));
  if (virtual_stages < 1)
    throw Error(
        fmt::format("schedule needs at least 1 virtual stage per device, got {}", virtual_stages));
  if (kind == ScheduleKind::custom)
    throw Error("a custom schedule's action lists come from its file (read_schedule_text), not from a generator");
  if (v_shaped(kind) && virtual_stages != 2)
    throw Error(fmt::format("{} places 2 chunks on each device, got {} virtual stages", schedule_kind_name(kind),
                            virtual_stages));
  if (kind == ScheduleKind::zb_interleaved && virtual_stages < 2)
    throw Error(fmt::format("zbi interleaves 2 or more chunks on each device, got {} virtual stage{}", virtual_stages,
                            virtual_stages == 1 ? "" : "s"));
  if (!takes_chunks(kind) && !v_shaped(kind) && virtual_stages != 1)
    throw Error(
        fmt::format("{} takes 1 virtual stage per device, got {}; only interleaved, loopedbfs and zbi take more",
                    schedule_kind_name(kind), virtual_stages));

  if (kind == ScheduleKind::zb_v) return zero_bubble_v(devices, microbatches);
  if (kind == ScheduleKind::dual_pipe_v) return dual_pipe_v(devices, microbatches);
  DeviceOrders orders(static_cast<size_t>(devices));
  // The (micro-batch, chunk) running order of 1f1b and interleaved, shared by all devices.
  const ChunkOrder chunk_order = interleaved_order(devices, microbatches, virtual_stages);
  if (kind == ScheduleKind::zb_interleaved) {
    // Interleaved 1F1B with each backward split, W right after its B: one
    // of the orders zbi chooses from.
    for (int d = 0; d < devices; ++d)
      for (const Work& w : interleaved_device_order(chunk_order, devices, virtual_stages, d)) {
        std::vector<Work>& order = orders[static_cast<size_t>(d)];
        if (w.kind != ActionKind::backward) {
          order.push_back(w);
          continue;
        }
        order.push_back({ActionKind::backward_input, w.microbatch, w.chunk});
        order.push_back({ActionKind::backward_weight, w.microbatch, w.chunk});
      }
    return zero_bubble_interleaved(devices, microbatches, virtual_stages, costs, orders);
  }
  for (int d = 0; d < devices; ++d) {
    std::vector<Work>& order = orders[static_cast<size_t>(d)];
    switch (kind) {
      case ScheduleKind::gpipe:
      case ScheduleKind::looped_bfs: order = looped_bfs_order(microbatches, virtual_stages); break;
      case ScheduleKind::one_f_one_b:  // interleaved with one chunk per device
      case ScheduleKind::interleaved:
        order = interleaved_device_order(chunk_order, devices, virtual_stages, d);
        break;
      case ScheduleKind::zb_h1: order = zb_h1_order(devices, microbatches, d); break;
      case ScheduleKind::zb_v:
      case ScheduleKind::zb_interleaved:
      case ScheduleKind::dual_pipe_v:
      case ScheduleKind::custom: break;
    }
  }
  return schedule_from_orders(kind, devices, microbatches, virtual_stages, orders);
}

Schedule schedule_from_orders(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                              const DeviceOrders& orders) {
  return schedule_from_orders(kind, devices, microbatches, virtual_stages, orders, stage_placement(kind),
                              splits_backward(kind));
}

Schedule schedule_from_orders(ScheduleKind kind, int devices, int microbatches, int virtual_stages,
                              const DeviceOrders& orders, StagePlacement placement, bool split_backward) {
  Schedule schedule{kind, devices, microbatches, virtual_stages, {}, placement, split_backward};
  schedule.per_device.resize(static_cast<size_t>(devices));
  for (int d = 0; d < devices; ++d) {
    std::vector<Action>& list = schedule.per_device[static_cast<size_t>(d)];
    for (const Work& work : orders.at(static_cast<size_t>(d))) emit(schedule, d, work, list);
    list.push_back({ActionKind::step, -1, -1, -1});
  }
  return schedule;
}

}  // namespace schedule_orders

std::vector<size_t> receive_order(const Schedule& schedule, int device) {
  const std::vector<Action>& mine = schedule.per_device.at(static_cast<size_t>(device));
  std::vector<size_t> order;
  std::vector<bool> taken(mine.size(), false);
  for (int from = 0; from < schedule.devices; ++from)
    for (const Action& a : schedule.per_device[static_cast<size_t>(from)]) {
      if ((a.kind != ActionKind::send_act && a.kind != ActionKind::send_grad) || a.peer != device) continue;
      const bool act = a.kind == ActionKind::send_act;
      const Action want{act ? ActionKind::recv_act : ActionKind::recv_grad, a.microbatch,
                        act ? a.stage + 1 : a.stage - 1, from};
      for (size_t k = 0; k < mine.size(); ++k)
        if (!taken[k] && mine[k] == want) {
          taken[k] = true;
          order.push_back(k);
          break;
        }
    }
  // A receive no send matches (a list the simulator would reject) keeps its place after them.
  for (size_t k = 0; k < mine.size(); ++k)
    if (!taken[k] && (mine[k].kind == ActionKind::recv_act || mine[k].kind == ActionKind::recv_grad))
      order.push_back(k);
  return order;
}

}  // namespace pf
