// ZB-V: the zero-bubble schedule over two chunks per device placed as a V.
//
// Every device holds chunk 0 (stage d, on the way down) and chunk 1 (stage
// 2p - 1 - d, on the way back up), so all devices take part in both halves
// of a micro-batch's trip and the backward is split into B (input gradient,
// on the critical path) and W (weight gradient, free to fill gaps). With
// F = B = W per chunk a step cannot be shorter than 6m + p - 1 units: device
// p - 1 waits p - 1 units for its first input and then has 6m of work. Two
// orders are built and the one shorter on unit costs kept:
//  - the V's pattern: chunk 0's forwards fill the trip down and back,
//    then every device repeats F0 B0 W0 F1 B1 W1; it reaches the bound for
//    m >= 2p - 2;
//  - a greedy list schedule (all devices in lock step on unit costs, ready B
//    first, then a forward while the device holds fewer than 2p chunks of
//    activations, then the oldest W); it reaches the bound for m = p, where
//    the pattern's warm-up is too long for its steady state.
// Both hold at most 2p chunk-micro-batches of activations per device: 1F1B's
// peak (p micro-batches of a stage twice as long).
#include <deque>
#include <optional>

#include "runtime/schedule_orders.h"

namespace pf::schedule_orders {
namespace {

constexpr ActionKind F = ActionKind::forward;
constexpr ActionKind B = ActionKind::backward_input;
constexpr ActionKind W = ActionKind::backward_weight;

/// The pattern on device d of p. Each call below adds its action only while
/// it has one left (a forward of a micro-batch not yet run, a W of a B
/// already run), so one text serves every m.
std::vector<Work> v_pattern(int p, int m, int d) {
  std::vector<Work> out;
  int forwards[2] = {0, 0}, inputs[2] = {0, 0}, weights[2] = {0, 0};
  auto f = [&](int c) {
    if (forwards[c] < m) out.push_back({F, forwards[c]++, c});
  };
  auto b = [&](int c) {
    if (inputs[c] < m) out.push_back({B, inputs[c]++, c});
  };
  auto w = [&](int c) {
    if (weights[c] < inputs[c]) out.push_back({W, weights[c]++, c});
  };
  // Warm-up: the way down and back up is 2 (p - d) - 1 chunks long from
  // here; then chunk 1's forwards arrive every other unit, and from the
  // p - d closest to the turn on, each is followed by its own backward.
  for (int k = 0; k < 2 * (p - d) - 1; ++k) f(0);
  for (int k = 0; k < d; ++k) {
    f(1);
    f(0);
  }
  for (int k = 0; k < p - d; ++k) {
    f(1);
    b(1);
    w(1);
  }
  // Steady state: one micro-batch of each chunk forward and back per round.
  while (forwards[1] < forwards[0] || forwards[0] < m)
    for (int c : {0, 1}) {
      f(c);
      b(c);
      w(c);
    }
  // Cool-down: the last backwards of both chunks, then the deferred Ws.
  for (int k = 0; k < d; ++k) {
    b(0);
    b(1);
  }
  for (int k = 0; k < p - d; ++k) {
    b(0);
    w(0);
  }
  while (inputs[0] < m || inputs[1] < m || weights[0] < m || weights[1] < m) {
    b(1);
    b(0);
    w(1);
    if (weights[1] == inputs[1]) w(0);
  }
  return out;
}

/// The greedy list schedule, or nullopt should it ever stall (the pattern
/// is then kept; B's priority makes that impossible on unit costs).
std::optional<DeviceOrders> v_greedy(const Schedule& shape) {
  const int p = shape.devices, m = shape.microbatches, stages = 2 * p;
  // The round each (stage, micro-batch) ran its forward and B in; -1: not yet.
  std::vector<int> forward_round(static_cast<size_t>(stages * m), -1), input_round(forward_round);
  auto at = [&](std::vector<int>& rounds, int stage, int mb) -> int& {
    return rounds[static_cast<size_t>(stage * m + mb)];
  };
  struct Device {
    int next_forward[2] = {0, 0}, next_input[2] = {0, 0};
    std::deque<Work> weights;  // Ws whose B ran, oldest first
    int held = 0;              // chunk-micro-batches of activations: forward run, W not
  };
  std::vector<Device> devices(static_cast<size_t>(p));
  DeviceOrders orders(static_cast<size_t>(p));
  const int cap = 2 * p;
  int left = 3 * stages * m;
  for (int round = 0; left > 0; ++round) {
    auto done = [&](std::vector<int>& rounds, int stage, int mb) {
      const int r = at(rounds, stage, mb);
      return r >= 0 && r < round;
    };
    std::vector<std::optional<Work>> picks(static_cast<size_t>(p));
    for (int d = 0; d < p; ++d) {
      Device& dev = devices[static_cast<size_t>(d)];
      std::optional<Work>& pick = picks[static_cast<size_t>(d)];
      // A ready B, oldest micro-batch first; chunk 1's on a tie (its chain
      // still has both arms to go).
      for (int c : {1, 0}) {
        const int s = shape.stage_at(d, c), mb = dev.next_input[c];
        if (mb >= m || !done(forward_round, s, mb) || (s + 1 < stages && !done(input_round, s + 1, mb))) continue;
        if (!pick || mb < pick->microbatch) pick = Work{B, mb, c};
      }
      // Else a ready forward, chunk 1 first (it leads to a B sooner).
      for (int c : {1, 0}) {
        if (pick || dev.held >= cap) break;
        const int s = shape.stage_at(d, c), mb = dev.next_forward[c];
        if (mb < m && (s == 0 || done(forward_round, s - 1, mb))) pick = Work{F, mb, c};
      }
      if (!pick && !dev.weights.empty()) pick = dev.weights.front();
    }
    bool moved = false;
    for (int d = 0; d < p; ++d) {
      const std::optional<Work>& pick = picks[static_cast<size_t>(d)];
      if (!pick) continue;
      Device& dev = devices[static_cast<size_t>(d)];
      const int s = shape.stage_at(d, pick->chunk);
      if (pick->kind == F) {
        at(forward_round, s, pick->microbatch) = round;
        ++dev.next_forward[pick->chunk];
        ++dev.held;
      } else if (pick->kind == B) {
        at(input_round, s, pick->microbatch) = round;
        ++dev.next_input[pick->chunk];
        dev.weights.push_back({W, pick->microbatch, pick->chunk});
      } else {
        dev.weights.pop_front();
        --dev.held;
      }
      orders[static_cast<size_t>(d)].push_back(*pick);
      moved = true;
      --left;
    }
    if (!moved) return std::nullopt;
  }
  return orders;
}

}  // namespace

Schedule zero_bubble_v(int devices, int microbatches) {
  DeviceOrders pattern(static_cast<size_t>(devices));
  for (int d = 0; d < devices; ++d) pattern[static_cast<size_t>(d)] = v_pattern(devices, microbatches, d);
  Schedule best = schedule_from_orders(ScheduleKind::zb_v, devices, microbatches, 2, pattern);
  const double span = simulate(best).makespan;
  if (span <= 6.0 * microbatches + devices - 1) return best;  // the bound: nothing is shorter
  if (std::optional<DeviceOrders> greedy = v_greedy(best)) {
    Schedule other = schedule_from_orders(ScheduleKind::zb_v, devices, microbatches, 2, *greedy);
    if (simulate(other).makespan < span) best = std::move(other);
  }
  return best;
}

}  // namespace pf::schedule_orders
