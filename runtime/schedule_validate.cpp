// Schedule validator and simulator: proves action lists complete and deadlock-free, times them.
#include "runtime/schedule.h"
#include "runtime/schedule_jitter.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numbers>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "ir/diagnostic.h"

namespace pf {
namespace {

constexpr int kActionKinds = static_cast<int>(ActionKind::step) + 1;

/// Which actions of each (micro-batch, stage) have been seen so far, indexed
/// by mb * stages + stage. Every action of a stage sits on the device holding
/// it, so walking one device's list touches only that device's entries and the
/// order of the walk is the order the device runs them.
class Seen {
 public:
  Seen(int microbatches, int stages)
      : stages_(stages), seen_(static_cast<size_t>(microbatches) * stages) {}

  bool has(ActionKind kind, int mb, int stage) const {
    return seen_[index(mb, stage)][static_cast<int>(kind)];
  }
  void mark(ActionKind kind, int mb, int stage) {
    seen_[index(mb, stage)][static_cast<int>(kind)] = true;
  }
  /// A fused backward or a backward_input: whichever produces the input gradient.
  bool has_backward(int mb, int stage) const {
    return has(ActionKind::backward, mb, stage) || has(ActionKind::backward_input, mb, stage);
  }

 private:
  size_t index(int mb, int stage) const { return static_cast<size_t>(mb) * stages_ + stage; }

  int stages_;
  std::vector<std::array<bool, kActionKinds>> seen_;
};

[[noreturn]] void fail(int device, const Action& action, std::string_view what) {
  throw Error(fmt::format("device {}: {} {}", device, format_action(action), what));
}

/// Fields in range, on the right device, transfers pointing at the device of
/// the neighbouring stage.
void check_placement(const Schedule& schedule, int device, const Action& a) {
  const int stages = schedule.model_stages();
  if (a.stage < 0 || a.stage >= stages)
    fail(device, a, fmt::format("names stage {} outside [0, {})", a.stage, stages));
  if (a.microbatch < 0 || a.microbatch >= schedule.microbatches)
    fail(device, a,
         fmt::format("names micro-batch {} outside [0, {})", a.microbatch, schedule.microbatches));
  if (schedule.device_of(a.stage) != device)
    fail(device, a,
         fmt::format("belongs on device {}, which holds stage {}", schedule.device_of(a.stage),
                     a.stage));
  int other = -1;  // the stage at the other end of a transfer
  switch (a.kind) {
    case ActionKind::send_act:
    case ActionKind::recv_grad:
      if (a.stage + 1 >= stages) fail(device, a, "has no next stage");
      other = a.stage + 1;
      break;
    case ActionKind::recv_act:
    case ActionKind::send_grad:
      if (a.stage == 0) fail(device, a, "has no previous stage");
      other = a.stage - 1;
      break;
    default: return;
  }
  if (a.peer != schedule.device_of(other))
    fail(device, a,
         fmt::format("names peer {}, but stage {} is on device {}", a.peer, other,
                     schedule.device_of(other)));
}

/// Duplicates and the order constraints that live on one device: a compute
/// action after the receive of its input and the compute it builds on, a send
/// after the compute producing its data.
void check_order(const Schedule& schedule, int device, const Action& a, Seen& seen) {
  const int mb = a.microbatch, s = a.stage;
  const bool last = s == schedule.model_stages() - 1;
  if (seen.has(a.kind, mb, s)) fail(device, a, "appears twice");
  switch (a.kind) {
    case ActionKind::forward:
      if (s > 0 && !seen.has(ActionKind::recv_act, mb, s))
        fail(device, a, "comes before its input activation is received");
      break;
    case ActionKind::backward:
    case ActionKind::backward_input:
      if (seen.has_backward(mb, s))
        fail(device, a, fmt::format("repeats the backward of micro-batch {} on stage {}", mb, s));
      if (!seen.has(ActionKind::forward, mb, s)) fail(device, a, "comes before its forward");
      if (!last && !seen.has(ActionKind::recv_grad, mb, s))
        fail(device, a, "comes before its output gradient is received");
      break;
    case ActionKind::backward_weight:
      if (seen.has(ActionKind::backward, mb, s)) fail(device, a, "follows a fused backward");
      if (!seen.has(ActionKind::backward_input, mb, s))
        fail(device, a, "comes before its backward_input");
      break;
    case ActionKind::send_act:
      if (!seen.has(ActionKind::forward, mb, s))
        fail(device, a, "comes before the forward that produces it");
      break;
    case ActionKind::send_grad:
      if (!seen.has_backward(mb, s)) fail(device, a, "comes before the backward that produces it");
      break;
    default: break;
  }
  seen.mark(a.kind, mb, s);
}

/// Every (micro-batch, stage) ran forward and backward (fused, or B then W)
/// with the transfers between neighbouring stages; reported in the order a
/// micro-batch would need them.
void check_complete(const Schedule& schedule, const Seen& seen) {
  const int stages = schedule.model_stages();
  const bool split = schedule.split_backward;
  for (int s = 0; s < stages; ++s) {
    const int device = schedule.device_of(s);
    for (int mb = 0; mb < schedule.microbatches; ++mb) {
      auto require = [&](bool present, ActionKind kind, int peer_stage) {
        if (present) return;
        const int peer = peer_stage < 0 ? -1 : schedule.device_of(peer_stage);
        throw Error(fmt::format("schedule is incomplete: device {} never runs {}", device,
                                format_action({kind, mb, s, peer})));
      };
      auto has = [&](ActionKind kind) { return seen.has(kind, mb, s); };
      if (s > 0) require(has(ActionKind::recv_act), ActionKind::recv_act, s - 1);
      require(has(ActionKind::forward), ActionKind::forward, -1);
      if (s + 1 < stages) require(has(ActionKind::send_act), ActionKind::send_act, s + 1);
      if (s + 1 < stages) require(has(ActionKind::recv_grad), ActionKind::recv_grad, s + 1);
      require(seen.has_backward(mb, s), split ? ActionKind::backward_input : ActionKind::backward,
              -1);
      if (has(ActionKind::backward_input))
        require(has(ActionKind::backward_weight), ActionKind::backward_weight, -1);
      if (s > 0) require(has(ActionKind::send_grad), ActionKind::send_grad, s - 1);
    }
  }
}

/// The static half of validation: shape, fields, per-device order,
/// completeness, and a single step closing every list.
void check_lists(const Schedule& schedule) {
  if (schedule.devices < 1 || schedule.microbatches < 1 || schedule.virtual_stages < 1)
    throw Error(
        fmt::format("schedule has devices={} microbatches={} virtual_stages={}; each must "
                    "be at least 1",
                    schedule.devices, schedule.microbatches, schedule.virtual_stages));
  if (schedule.per_device.size() != static_cast<size_t>(schedule.devices))
    throw Error(fmt::format("schedule has {} action lists for {} devices",
                            schedule.per_device.size(), schedule.devices));
  Seen seen(schedule.microbatches, schedule.model_stages());
  for (int d = 0; d < schedule.devices; ++d) {
    const std::vector<Action>& list = schedule.per_device[d];
    for (size_t i = 0; i < list.size(); ++i) {
      const Action& a = list[i];
      // Lists may come from files (plans), where any number can sit in the kind.
      const int kind = static_cast<int>(a.kind);
      if (kind < 0 || kind >= kActionKinds)
        throw Error(fmt::format("device {}: action {} has unknown kind {}", d, i, kind));
      if (a.kind == ActionKind::step) {
        if (i + 1 != list.size()) fail(d, a, "is not the last action");
        continue;
      }
      check_placement(schedule, d, a);
      check_order(schedule, d, a, seen);
    }
    if (list.empty() || list.back().kind != ActionKind::step)
      throw Error(fmt::format("device {}: list does not end with step", d));
  }
  check_complete(schedule, seen);
}

void check_costs(const UnitCosts& costs) {
  auto positive = [](std::string_view name, double value) {
    if (!(value > 0) || !std::isfinite(value))
      throw Error(
          fmt::format("simulate: {} cost must be positive and finite, got {}", name, value));
  };
  positive("forward", costs.forward);
  positive("backward", costs.backward);
  positive("backward_input", costs.backward_input);
  positive("backward_weight", costs.backward_weight);
  if (!(costs.comm >= 0) || !std::isfinite(costs.comm))
    throw Error(
        fmt::format("simulate: comm cost must be non-negative and finite, got {}", costs.comm));
}

void check_costs(const ActionCosts& costs, int stages) {
  if (costs.stages.size() != static_cast<size_t>(stages))
    throw Error(fmt::format("simulate: costs for {} stages, but the schedule has {}", costs.stages.size(), stages));
  for (size_t s = 0; s < costs.stages.size(); ++s) {
    const ActionCosts::Stage& c = costs.stages[s];
    const std::pair<std::string_view, double> named[] = {
        {"forward", c.forward},   {"backward", c.backward}, {"backward_input", c.backward_input},
        {"backward_weight", c.backward_weight}, {"send_act", c.send_act}, {"send_grad", c.send_grad}};
    for (const auto& [name, value] : named)
      if (!(value >= 0) || !std::isfinite(value))
        throw Error(fmt::format("simulate: stage {} {} cost must be non-negative and finite, got {}", s, name, value));
  }
}

/// The `q` quantile of sorted `values`, linear between neighbours.
double quantile(const std::vector<double>& values, double q) {
  const double at = q * static_cast<double>(values.size() - 1);
  const size_t below = static_cast<size_t>(at);
  if (below + 1 >= values.size()) return values.back();
  return values[below] + (at - static_cast<double>(below)) * (values[below + 1] - values[below]);
}

/// simulate() with each compute action's cost times `noise()` where given
/// (drawn in the order the sweep runs the actions, which is fixed).
Simulation simulate_noisy(const Schedule& schedule, const ActionCosts& costs, const std::function<double()>* noise) {
  check_lists(schedule);
  check_costs(costs, schedule.model_stages());

  const int p = schedule.devices, stages = schedule.model_stages();
  // When the data a receive waits for arrives, indexed by the receiving
  // (micro-batch, stage); unset until the matching send has run.
  const size_t slots = static_cast<size_t>(schedule.microbatches) * stages;
  std::vector<std::optional<double>> act_arrival(slots), grad_arrival(slots);
  auto slot = [&](int mb, int stage) { return static_cast<size_t>(mb) * stages + stage; };

  Simulation sim{};
  sim.per_device.resize(p);
  sim.peak_inflight.assign(stages, 0);
  sim.peak_stashed.assign(stages, 0);
  std::vector<int> inflight(stages, 0), stashed(stages, 0);
  // Whether each stage's backward comes in two actions.
  std::vector<bool> split(stages, false);
  for (const auto& list : schedule.per_device)
    for (const Action& a : list)
      if (a.kind == ActionKind::backward_weight) split[a.stage] = true;
  std::vector<size_t> next(p, 0);
  std::vector<double> clock(p, 0), busy(p, 0);

  // Runs device d's next action; false when it is a receive whose data has
  // not been sent yet.
  auto run_next = [&](int d) {
    const Action& a = schedule.per_device[d][next[d]];
    const double start = clock[d];
    switch (a.kind) {
      case ActionKind::recv_act:
      case ActionKind::recv_grad: {
        const auto& arrivals = a.kind == ActionKind::recv_act ? act_arrival : grad_arrival;
        const std::optional<double>& ready = arrivals[slot(a.microbatch, a.stage)];
        if (!ready) return false;
        clock[d] = std::max(start, *ready);
        break;
      }
      case ActionKind::send_act:
        act_arrival[slot(a.microbatch, a.stage + 1)] = start + costs.stages[a.stage].send_act;
        break;
      case ActionKind::send_grad:
        grad_arrival[slot(a.microbatch, a.stage - 1)] = start + costs.stages[a.stage].send_grad;
        break;
      case ActionKind::forward:
      case ActionKind::backward:
      case ActionKind::backward_input:
      case ActionKind::backward_weight: {
        const double duration = costs.stages[a.stage].compute(a.kind) * (noise ? (*noise)() : 1.0);
        clock[d] += duration;
        busy[d] += duration;
        if (a.kind == ActionKind::forward) {
          sim.peak_inflight[a.stage] = std::max(sim.peak_inflight[a.stage], ++inflight[a.stage]);
          sim.peak_stashed[a.stage] = std::max(sim.peak_stashed[a.stage], ++stashed[a.stage]);
        } else if (a.kind != ActionKind::backward_weight) {
          --inflight[a.stage];
          if (!split[a.stage]) --stashed[a.stage];
        } else {
          --stashed[a.stage];
        }
        break;
      }
      case ActionKind::step: break;
    }
    sim.per_device[d].push_back({a, start, clock[d]});
    ++next[d];
    return true;
  };
  // Run each device until it blocks, and sweep again while any moved. A
  // device's times depend only on its own list and the send times it reads,
  // so the sweep order cannot change the result.
  for (bool moved = true; moved;) {
    moved = false;
    for (int d = 0; d < p; ++d)
      while (next[d] < schedule.per_device[d].size() && run_next(d)) moved = true;
  }

  std::string stuck;
  for (int d = 0; d < p; ++d) {
    const std::vector<Action>& list = schedule.per_device[d];
    if (next[d] == list.size()) continue;
    stuck += fmt::format("{}device {} waits at {}", stuck.empty() ? "" : "; ", d,
                         format_action(list[next[d]]));
  }
  if (!stuck.empty()) throw Error("schedule deadlocks: " + stuck);

  sim.makespan = *std::max_element(clock.begin(), clock.end());
  double total_busy = 0;
  for (double b : busy) total_busy += b;
  sim.bubble_fraction = sim.makespan > 0 ? 1 - total_busy / (p * sim.makespan) : 0;
  return sim;
}

/// Normal deviates from a generator the standard fixes bit for bit
/// (std::normal_distribution's algorithm is the library's choice), by Box
/// and Muller: the same seed gives the same trials with any compiler.
class NormalDeviates {
 public:
  explicit NormalDeviates(uint64_t seed) : bits_(seed) {}
  double next() {
    if (spare_) return *std::exchange(spare_, std::nullopt);
    const double u1 = 1.0 - uniform(), u2 = uniform();  // u1 in (0, 1]: its log is finite
    const double radius = std::sqrt(-2 * std::log(u1)), angle = 2 * std::numbers::pi * u2;
    spare_ = radius * std::sin(angle);
    return radius * std::cos(angle);
  }

 private:
  double uniform() { return static_cast<double>(bits_() >> 11) * 0x1p-53; }  // [0, 1)
  std::mt19937_64 bits_;
  std::optional<double> spare_;
};

/// Every stage of `schedule` costing `costs`.
ActionCosts each_stage(const Schedule& schedule, const UnitCosts& costs) {
  check_costs(costs);
  ActionCosts staged;
  staged.stages.assign(static_cast<size_t>(std::max(0, schedule.model_stages())),
                       {costs.forward, costs.backward, costs.backward_input, costs.backward_weight, costs.comm,
                        costs.comm});
  return staged;
}

}  // namespace

namespace {

/// The field of a stage's costs holding a compute action's time; nullptr for any other kind.
double ActionCosts::Stage::*compute_field(ActionKind kind) {
  switch (kind) {
    case ActionKind::forward: return &ActionCosts::Stage::forward;
    case ActionKind::backward: return &ActionCosts::Stage::backward;
    case ActionKind::backward_input: return &ActionCosts::Stage::backward_input;
    case ActionKind::backward_weight: return &ActionCosts::Stage::backward_weight;
    default: return nullptr;
  }
}

}  // namespace

double ActionCosts::Stage::compute(ActionKind kind) const {
  const auto field = compute_field(kind);
  return field ? this->*field : 0;
}

double& ActionCosts::Stage::compute(ActionKind kind) {
  const auto field = compute_field(kind);
  if (!field) throw Error(fmt::format("{} is not a compute action: it has no cost of its own", action_kind_name(kind)));
  return this->*field;
}

Simulation simulate(const Schedule& schedule, const UnitCosts& costs) {
  Simulation sim = simulate(schedule, each_stage(schedule, costs));
  sim.costs = costs;
  return sim;
}

Simulation simulate(const Schedule& schedule, const ActionCosts& costs) {
  return simulate_noisy(schedule, costs, nullptr);
}

JitteredSimulation simulate_jittered(const Schedule& schedule, const ActionCosts& costs, const Jitter& jitter) {
  if (!(jitter.sigma >= 0) || !std::isfinite(jitter.sigma) || jitter.sigma > 1)
    throw Error(fmt::format("simulate: the jitter's spread must be between 0 and 1, got {}", jitter.sigma));
  if (jitter.trials < 1) throw Error(fmt::format("simulate: jitter needs 1 trial or more, got {}", jitter.trials));
  JitteredSimulation out;
  out.nominal = simulate(schedule, costs);
  NormalDeviates normal(jitter.seed);
  // exp(sigma z - sigma^2 / 2) has mean 1: the noise slows no action on average.
  const std::function<double()> factor = [&] {
    return std::exp(jitter.sigma * normal.next() - jitter.sigma * jitter.sigma / 2);
  };
  std::vector<double> makespans;
  double bubbles = 0;
  for (int t = 0; t < jitter.trials; ++t) {
    const Simulation sim = simulate_noisy(schedule, costs, &factor);
    makespans.push_back(sim.makespan);
    bubbles += sim.bubble_fraction;
  }
  std::sort(makespans.begin(), makespans.end());
  double total = 0;
  for (double m : makespans) total += m;
  out.mean_makespan = total / jitter.trials;
  out.median_makespan = quantile(makespans, 0.5);
  out.p90_makespan = quantile(makespans, 0.9);
  out.mean_bubble = bubbles / jitter.trials;
  return out;
}

JitteredSimulation simulate_jittered(const Schedule& schedule, const UnitCosts& costs, const Jitter& jitter) {
  return simulate_jittered(schedule, each_stage(schedule, costs), jitter);
}

void validate(const Schedule& schedule) { simulate(schedule); }

std::optional<double> theoretical_bubble(const Schedule& schedule, const UnitCosts& costs) {
  if (costs.comm != 0) return std::nullopt;
  const double p = schedule.devices, m = schedule.microbatches, v = schedule.virtual_stages;
  switch (schedule.kind) {
    case ScheduleKind::gpipe:
    case ScheduleKind::one_f_one_b: return (p - 1) / (m + p - 1);
    case ScheduleKind::looped_bfs:  // a chunk's first input arrives as the one before ends, where m >= p
      if (schedule.microbatches < schedule.devices) return std::nullopt;
      return (p - 1) / (v * m + p - 1);
    case ScheduleKind::interleaved:
      if (schedule.microbatches % schedule.devices != 0) return std::nullopt;
      return (p - 1) / (v * m + p - 1);
    case ScheduleKind::zb_h1:
      if (costs.forward != costs.backward_input || costs.forward != costs.backward_weight ||
          schedule.microbatches < schedule.devices)
        return std::nullopt;
      return (p - 1) / (3 * m + p - 1);
    case ScheduleKind::zb_v:
      if (costs.forward != costs.backward_input || costs.forward != costs.backward_weight ||
          (schedule.microbatches != schedule.devices && schedule.microbatches < 2 * schedule.devices - 2))
        return std::nullopt;
      return (p - 1) / (6 * m + p - 1);
    case ScheduleKind::zb_interleaved: return std::nullopt;  // a greedy order: no closed form
    case ScheduleKind::dual_pipe_v: return std::nullopt;     // zbv's bound on unit costs, but no form on others
    case ScheduleKind::custom: return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace pf
