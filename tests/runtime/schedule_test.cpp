// Schedule generators, validator/simulator and renderers: theory, corruption, exact pictures.
#include "runtime/schedule.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>
#include <string>
#include <utility>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "ir/diagnostic.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

constexpr ScheduleKind kAllKinds[] = {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::interleaved,
                                      ScheduleKind::zb_h1, ScheduleKind::zb_v, ScheduleKind::zb_interleaved,
                                      ScheduleKind::dual_pipe_v, ScheduleKind::looped_bfs};

/// Whether `kind` runs m micro-batches on p devices: dualpipev takes 2p or more.
bool runs(ScheduleKind kind, int p, int m) { return kind != ScheduleKind::dual_pipe_v || m >= 2 * p; }

/// The costs each kind is judged on: F=1, B=2 fused; F=B=W=1 split.
UnitCosts costs_for(ScheduleKind kind) {
  UnitCosts costs;
  if (splits_backward(kind)) costs.forward = costs.backward_input = costs.backward_weight = 1;
  return costs;
}

size_t count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

/// Index of `action` in device `d`'s list; fails the test when absent.
size_t index_of(const Schedule& s, int d, const Action& action) {
  const auto& list = s.per_device[d];
  auto it = std::find(list.begin(), list.end(), action);
  EXPECT_NE(it, list.end()) << format_action(action);
  return static_cast<size_t>(it - list.begin());
}

TEST(ScheduleNames, RoundTrip) {
  for (ScheduleKind kind : kAllKinds)
    EXPECT_EQ(parse_schedule_kind(schedule_kind_name(kind)), kind);
  EXPECT_EQ(schedule_kind_name(ScheduleKind::one_f_one_b), "1f1b");
  EXPECT_EQ(schedule_kind_name(ScheduleKind::zb_h1), "zb1");
  EXPECT_EQ(schedule_kind_name(ScheduleKind::zb_v), "zbv");
  EXPECT_EQ(schedule_kind_name(ScheduleKind::zb_interleaved), "zbi");
  EXPECT_EQ(schedule_kind_name(ScheduleKind::dual_pipe_v), "dualpipev");
  EXPECT_EQ(schedule_kind_name(ScheduleKind::looped_bfs), "loopedbfs");
  EXPECT_EQ(schedule_kind_choices(), "gpipe, 1f1b, interleaved, zb1, zbv, zbi, dualpipev or loopedbfs");
  EXPECT_EQ(parse_schedule_kind("zb-h1"), std::nullopt);
  EXPECT_EQ(parse_schedule_kind(""), std::nullopt);
}

TEST(ScheduleNames, FormatAction) {
  EXPECT_EQ(format_action({ActionKind::forward, 3, 1, -1}), "forward(mb=3, stage=1)");
  EXPECT_EQ(format_action({ActionKind::recv_grad, 2, 0, 1}), "recv_grad(mb=2, stage=0, peer=1)");
  EXPECT_EQ(format_action({ActionKind::step, -1, -1, -1}), "step");
}

TEST(MakeSchedule, RejectsBadArguments) {
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::gpipe, 0, 4); }),
            "schedule needs at least 1 device, got 0");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::one_f_one_b, 2, 0); }),
            "schedule needs at least 1 micro-batch, got 0");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::interleaved, 2, 4, 0); }),
            "schedule needs at least 1 virtual stage per device, got 0");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::one_f_one_b, 2, 4, 2); }),
            "1f1b takes 1 virtual stage per device, got 2; only interleaved, loopedbfs and zbi take more");
  EXPECT_EQ(error_of([] { make_schedule(ScheduleKind::zb_h1, 2, 4, 3); }),
            "zb1 takes 1 virtual stage per device, got 3; only interleaved, loopedbfs and zbi take more");
}

TEST(MakeSchedule, ExplicitCommunication) {
  // 1F1B, 2 devices, 2 micro-batches, written out by hand.
  const Schedule s = make_schedule(ScheduleKind::one_f_one_b, 2, 2);
  using K = ActionKind;
  const std::vector<Action> device0 = {
      {K::forward, 0, 0, -1},  {K::send_act, 0, 0, 1},  {K::forward, 1, 0, -1},
      {K::send_act, 1, 0, 1},  {K::recv_grad, 0, 0, 1}, {K::backward, 0, 0, -1},
      {K::recv_grad, 1, 0, 1}, {K::backward, 1, 0, -1}, {K::step, -1, -1, -1}};
  const std::vector<Action> device1 = {
      {K::recv_act, 0, 1, 0},  {K::forward, 0, 1, -1},  {K::backward, 0, 1, -1},
      {K::send_grad, 0, 1, 0}, {K::recv_act, 1, 1, 0},  {K::forward, 1, 1, -1},
      {K::backward, 1, 1, -1}, {K::send_grad, 1, 1, 0}, {K::step, -1, -1, -1}};
  EXPECT_EQ(s.per_device[0], device0);
  EXPECT_EQ(s.per_device[1], device1);
}

TEST(MakeSchedule, InterleavedOnOneDeviceKeepsLocalTransfers) {
  const Schedule s = make_schedule(ScheduleKind::interleaved, 1, 1, 2);
  using K = ActionKind;
  const std::vector<Action> expected = {
      {K::forward, 0, 0, -1},  {K::send_act, 0, 0, 0},  {K::recv_act, 0, 1, 0},
      {K::forward, 0, 1, -1},  {K::backward, 0, 1, -1}, {K::send_grad, 0, 1, 0},
      {K::recv_grad, 0, 0, 0}, {K::backward, 0, 0, -1}, {K::step, -1, -1, -1}};
  ASSERT_EQ(s.per_device.size(), 1u);
  EXPECT_EQ(s.per_device[0], expected);
  validate(s);
}

TEST(MakeSchedule, InterleavedWithOneChunkIsOneFOneB) {
  for (int p = 1; p <= 6; ++p)
    for (int m = 1; m <= 10; ++m)
      EXPECT_EQ(make_schedule(ScheduleKind::interleaved, p, m, 1).per_device,
                make_schedule(ScheduleKind::one_f_one_b, p, m).per_device)
          << "p=" << p << " m=" << m;
}

// Every kind, every small shape: the validator accepts it, every device does
// its share of compute exactly once, and every list ends with its one step.
TEST(Validate, EveryKindEveryShape) {
  for (ScheduleKind kind : kAllKinds) {
    const int max_v = kind == ScheduleKind::interleaved || kind == ScheduleKind::looped_bfs ? 3 : 1;
    for (int p = 1; p <= 6; ++p)
      for (int m = 1; m <= 10; ++m)
        for (int v = chunks_per_device(kind, 1); v <= chunks_per_device(kind, max_v); ++v) {
          if (!runs(kind, p, m)) continue;
          SCOPED_TRACE(fmt::format("{} p={} m={} v={}", schedule_kind_name(kind), p, m, v));
          const Schedule s = make_schedule(kind, p, m, v);
          ASSERT_NO_THROW(validate(s));
          const int passes = splits_backward(kind) ? 3 : 2;
          for (const auto& list : s.per_device) {
            EXPECT_EQ(std::count_if(list.begin(), list.end(),
                                    [](const Action& a) { return is_compute(a.kind); }),
                      passes * m * v);
            EXPECT_EQ(std::count_if(list.begin(), list.end(),
                                    [](const Action& a) { return a.kind == ActionKind::step; }),
                      1);
            EXPECT_EQ(list.back().kind, ActionKind::step);
          }
        }
  }
}

// Interleaved takes any m, not just multiples of p (Megatron's restriction):
// a wider sweep than the one above.
TEST(Validate, InterleavedAnyMicrobatchCount) {
  for (int p = 2; p <= 8; ++p)
    for (int m = 1; m <= 24; ++m)
      for (int v = 2; v <= 4; ++v)
        EXPECT_NO_THROW(validate(make_schedule(ScheduleKind::interleaved, p, m, v)))
            << "p=" << p << " m=" << m << " v=" << v;
}

// A communicator without tags (NCCL) matches the messages from one device to
// another in the order they are sent; the runtime posts each step's
// receives in receive_order. The two orders agree for every pair, and every
// receive is posted once.
TEST(ReceiveOrder, MessagesBetweenTwoDevicesArriveInTheOrderPosted) {
  for (ScheduleKind kind : kAllKinds) {
    const int max_v = kind == ScheduleKind::interleaved || kind == ScheduleKind::looped_bfs ? 4 : 1;
    for (int p = 2; p <= 8; ++p)
      for (int m = 1; m <= 16; ++m)
        for (int v = chunks_per_device(kind, 1); v <= chunks_per_device(kind, max_v); ++v) {
          if (!runs(kind, p, m)) continue;
          SCOPED_TRACE(fmt::format("{} p={} m={} v={}", schedule_kind_name(kind), p, m, v));
          const Schedule s = make_schedule(kind, p, m, v);
          // Per (from, to): the messages as (receiving stage, gradients?, micro-batch).
          std::map<std::pair<int, int>, std::vector<std::tuple<int, bool, int>>> sent, posted;
          for (int d = 0; d < p; ++d) {
            const std::vector<Action>& list = s.per_device[static_cast<size_t>(d)];
            for (const Action& a : list) {
              if (a.kind == ActionKind::send_act) sent[{d, a.peer}].emplace_back(a.stage + 1, false, a.microbatch);
              if (a.kind == ActionKind::send_grad) sent[{d, a.peer}].emplace_back(a.stage - 1, true, a.microbatch);
            }
            const std::vector<size_t> order = receive_order(s, d);
            EXPECT_EQ(order.size(), static_cast<size_t>(std::count_if(list.begin(), list.end(), [](const Action& a) {
                        return a.kind == ActionKind::recv_act || a.kind == ActionKind::recv_grad;
                      })));
            for (size_t k : order) {
              const Action& a = list.at(k);
              posted[{a.peer, d}].emplace_back(a.stage, a.kind == ActionKind::recv_grad, a.microbatch);
            }
          }
          EXPECT_EQ(sent, posted);
        }
  }
}

// Interleaved on 2 devices with 5 micro-batches: a device receives from the
// other (its only sender) in another order than the other sends, so
// receive_order is not the list's order there.
TEST(ReceiveOrder, DiffersFromTheListWhereTheSenderOrdersOtherwise) {
  const Schedule s = make_schedule(ScheduleKind::interleaved, 2, 5, 2);
  bool differs = false;
  for (int d = 0; d < 2; ++d) {
    const std::vector<size_t> order = receive_order(s, d);
    differs = differs || !std::is_sorted(order.begin(), order.end());
  }
  EXPECT_TRUE(differs);
}

TEST(Simulate, GPipeMatchesTheory) {
  for (int p = 1; p <= 6; ++p)
    for (int m = 1; m <= 10; ++m) {
      const Schedule s = make_schedule(ScheduleKind::gpipe, p, m);
      const Simulation sim = simulate(s);
      EXPECT_NEAR(sim.bubble_fraction, double(p - 1) / (m + p - 1), 1e-12) << p << " " << m;
      EXPECT_DOUBLE_EQ(sim.makespan, 3.0 * (m + p - 1));
      EXPECT_EQ(sim.peak_inflight, std::vector<int>(p, m));
      EXPECT_NEAR(*theoretical_bubble(s, {}), sim.bubble_fraction, 1e-12);
    }
}

// Looped BFS runs GPipe on each chunk in turn: with one chunk it is GPipe;
// with m >= p a chunk's first micro-batch comes back to device 0 as it ends
// the chunk before, so the bubble is interleaved 1F1B's (p-1)/(v*m+p-1), at
// GPipe's memory (every stage holds all m).
TEST(Simulate, LoopedBfsMatchesTheory) {
  for (int p = 1; p <= 6; ++p)
    for (int m = 1; m <= 10; ++m) {
      EXPECT_EQ(make_schedule(ScheduleKind::looped_bfs, p, m, 1).per_device,
                make_schedule(ScheduleKind::gpipe, p, m).per_device);
      for (int v = 1; v <= 3; ++v) {
        SCOPED_TRACE(fmt::format("p={} m={} v={}", p, m, v));
        const Schedule s = make_schedule(ScheduleKind::looped_bfs, p, m, v);
        const Simulation sim = simulate(s);
        const double theory = double(p - 1) / (v * m + p - 1);
        EXPECT_EQ(sim.peak_inflight, std::vector<int>(static_cast<size_t>(p * v), m));
        if (m < p) {
          EXPECT_EQ(theoretical_bubble(s, {}), std::nullopt);
          EXPECT_GE(sim.bubble_fraction, theory - 1e-12);
          continue;
        }
        EXPECT_NEAR(sim.bubble_fraction, theory, 1e-12);
        EXPECT_NEAR(*theoretical_bubble(s, {}), theory, 1e-12);
      }
    }
}

TEST(Simulate, OneFOneBMatchesTheory) {
  for (int p = 1; p <= 6; ++p)
    for (int m = 1; m <= 10; ++m) {
      SCOPED_TRACE(fmt::format("p={} m={}", p, m));
      const Schedule s = make_schedule(ScheduleKind::one_f_one_b, p, m);
      const Simulation sim = simulate(s);
      EXPECT_NEAR(sim.bubble_fraction, double(p - 1) / (m + p - 1), 1e-12);
      for (int stage = 0; stage < p; ++stage)
        EXPECT_EQ(sim.peak_inflight[stage], std::min(p - stage, m)) << "stage " << stage;
    }
}

// The 1F1B and GPipe bubble does not depend on the F:B ratio, which is why
// theoretical_bubble only asks for comm = 0.
TEST(Simulate, OneFOneBTheoryHoldsForOtherCostRatios) {
  for (auto [f, b] : {std::pair{1.0, 1.0}, {2.0, 1.0}, {1.0, 3.0}, {0.5, 1.25}})
    for (ScheduleKind kind : {ScheduleKind::gpipe, ScheduleKind::one_f_one_b})
      for (int p = 1; p <= 5; ++p)
        for (int m = 1; m <= 8; ++m) {
          const Schedule s = make_schedule(kind, p, m);
          UnitCosts costs;
          costs.forward = f;
          costs.backward = b;
          EXPECT_NEAR(simulate(s, costs).bubble_fraction, *theoretical_bubble(s, costs), 1e-12)
              << schedule_kind_name(kind) << " p=" << p << " m=" << m << " F=" << f << " B=" << b;
        }
}

// Per-chunk costs F=1, B=2 (the whole stage costs v times that; the bubble
// fraction does not care about the scale). For m a multiple of p the
// generator reaches Megatron's (p-1)/(v*m+p-1) exactly, below 1F1B's.
TEST(Simulate, InterleavedBeatsOneFOneB) {
  for (int p = 2; p <= 6; ++p)
    for (int m = p; m <= 12; m += p)
      for (int v = 2; v <= 3; ++v) {
        SCOPED_TRACE(fmt::format("p={} m={} v={}", p, m, v));
        const Schedule s = make_schedule(ScheduleKind::interleaved, p, m, v);
        const Simulation sim = simulate(s);
        EXPECT_NEAR(sim.bubble_fraction, double(p - 1) / (v * m + p - 1), 1e-12);
        EXPECT_NEAR(*theoretical_bubble(s, {}), sim.bubble_fraction, 1e-12);
        EXPECT_LT(sim.bubble_fraction,
                  simulate(make_schedule(ScheduleKind::one_f_one_b, p, m)).bubble_fraction);
      }
  // One point written out: p=4 m=8 v=2 is 3/19 = 15.8%, against 1F1B's 3/11.
  EXPECT_NEAR(simulate(make_schedule(ScheduleKind::interleaved, 4, 8, 2)).bubble_fraction, 3.0 / 19,
              1e-12);
}

// For the other micro-batch counts there is no textbook value, but the
// schedule never does worse than 1F1B.
TEST(Simulate, InterleavedNeverWorseThanOneFOneB) {
  for (int p = 2; p <= 6; ++p)
    for (int m = 1; m <= 12; ++m)
      for (int v = 2; v <= 3; ++v) {
        const Schedule s = make_schedule(ScheduleKind::interleaved, p, m, v);
        if (m % p != 0) {
          EXPECT_EQ(theoretical_bubble(s, {}), std::nullopt);
        }
        EXPECT_LE(simulate(s).bubble_fraction,
                  simulate(make_schedule(ScheduleKind::one_f_one_b, p, m)).bubble_fraction + 1e-12)
            << "p=" << p << " m=" << m << " v=" << v;
      }
}

// ZB-H1 on F=B=W=1 against 1F1B on F=1, B=2 (the same work): a smaller bubble,
// a third of 1F1B's bubble time ((p-1)/(3m+p-1)) for m >= p, and the same
// in-flight peak on every stage.
TEST(Simulate, ZeroBubbleH1) {
  const UnitCosts split = costs_for(ScheduleKind::zb_h1);
  for (int p = 1; p <= 6; ++p)
    for (int m = 1; m <= 10; ++m) {
      SCOPED_TRACE(fmt::format("p={} m={}", p, m));
      const Schedule zb = make_schedule(ScheduleKind::zb_h1, p, m);
      const Simulation sim = simulate(zb, split);
      const Simulation base = simulate(make_schedule(ScheduleKind::one_f_one_b, p, m));
      if (p > 1) {
        EXPECT_LT(sim.bubble_fraction, base.bubble_fraction);
      }
      if (m >= p) {
        EXPECT_NEAR(sim.bubble_fraction, double(p - 1) / (3 * m + p - 1), 1e-12);
        EXPECT_DOUBLE_EQ(sim.makespan, 3.0 * m + p - 1);
        EXPECT_NEAR(*theoretical_bubble(zb, split), sim.bubble_fraction, 1e-12);
      } else {
        EXPECT_EQ(theoretical_bubble(zb, split), std::nullopt);
      }
      EXPECT_EQ(sim.peak_inflight, base.peak_inflight);
    }
}

TEST(Simulate, CommunicationDelaysReceives) {
  // F0 on device 0, transfer, F0 and B0 on device 1, transfer, B0 on device 0.
  UnitCosts costs;
  costs.comm = 0.5;
  const Schedule s = make_schedule(ScheduleKind::gpipe, 2, 1);
  const Simulation sim = simulate(s, costs);
  EXPECT_DOUBLE_EQ(sim.makespan, 1 + 0.5 + 1 + 2 + 0.5 + 2);
  // The receive is timed as the wait: device 1 idles from 0 until F0 lands.
  const TimedAction& recv = sim.per_device[1][0];
  EXPECT_EQ(recv.action.kind, ActionKind::recv_act);
  EXPECT_DOUBLE_EQ(recv.start, 0);
  EXPECT_DOUBLE_EQ(recv.end, 1.5);
  EXPECT_EQ(theoretical_bubble(s, costs), std::nullopt);
}

TEST(Simulate, RejectsBadCosts) {
  const Schedule s = make_schedule(ScheduleKind::gpipe, 2, 2);
  UnitCosts costs;
  costs.forward = 0;
  EXPECT_EQ(error_of([&] { simulate(s, costs); }),
            "simulate: forward cost must be positive and finite, got 0");
  costs = {};
  costs.comm = -1;
  EXPECT_EQ(error_of([&] { simulate(s, costs); }),
            "simulate: comm cost must be non-negative and finite, got -1");
}

// ---- corrupted lists: each is rejected with its message ----

TEST(ValidateRejects, RemovedForward) {
  Schedule s = make_schedule(ScheduleKind::gpipe, 2, 2);
  auto& list = s.per_device[0];
  list.erase(list.begin() + index_of(s, 0, {ActionKind::forward, 1, 0, -1}));
  EXPECT_EQ(error_of([&] { validate(s); }),
            "device 0: send_act(mb=1, stage=0, peer=1) comes before the forward that produces it");
}

TEST(ValidateRejects, RemovedSend) {
  Schedule s = make_schedule(ScheduleKind::one_f_one_b, 3, 4);
  auto& list = s.per_device[1];
  list.erase(list.begin() + index_of(s, 1, {ActionKind::send_act, 2, 1, 2}));
  EXPECT_EQ(error_of([&] { validate(s); }),
            "schedule is incomplete: device 1 never runs send_act(mb=2, stage=1, peer=2)");
}

TEST(ValidateRejects, RemovedWeightGradient) {
  Schedule s = make_schedule(ScheduleKind::zb_h1, 2, 3);
  auto& list = s.per_device[1];
  list.erase(list.begin() + index_of(s, 1, {ActionKind::backward_weight, 2, 1, -1}));
  EXPECT_EQ(error_of([&] { validate(s); }),
            "schedule is incomplete: device 1 never runs backward_weight(mb=2, stage=1)");
}

// Device 0 waits for the gradient of micro-batch 0 before sending the
// activation that device 1 needs to produce it: a cycle.
TEST(ValidateRejects, ReceiveBeforeSendOnACycle) {
  Schedule s = make_schedule(ScheduleKind::one_f_one_b, 2, 1);
  auto& list = s.per_device[0];
  std::swap(list[index_of(s, 0, {ActionKind::send_act, 0, 0, 1})],
            list[index_of(s, 0, {ActionKind::recv_grad, 0, 0, 1})]);
  EXPECT_EQ(error_of([&] { validate(s); }),
            "schedule deadlocks: device 0 waits at recv_grad(mb=0, stage=0, peer=1); device 1 "
            "waits at recv_act(mb=0, stage=1, peer=0)");
}

// A longer cycle: on a 4-device 1F1B, device 0 moves the forward of
// micro-batch 1 behind the backward of micro-batch 0. Device 1 still forwards
// micro-batch 1 before its backward of 0 (its warm-up), so device 0's gradient
// never comes; devices 2 and 3 starve for micro-batch 1 behind them.
TEST(ValidateRejects, WarmupTooShortDeadlocks) {
  Schedule s = make_schedule(ScheduleKind::one_f_one_b, 4, 4);
  auto& list = s.per_device[0];
  const size_t f1 = index_of(s, 0, {ActionKind::forward, 1, 0, -1});  // then its send_act
  const std::vector<Action> moved(list.begin() + f1, list.begin() + f1 + 2);
  list.erase(list.begin() + f1, list.begin() + f1 + 2);
  const size_t b0 = index_of(s, 0, {ActionKind::backward, 0, 0, -1});
  list.insert(list.begin() + b0 + 1, moved.begin(), moved.end());
  EXPECT_EQ(error_of([&] { validate(s); }),
            "schedule deadlocks: device 0 waits at recv_grad(mb=0, stage=0, peer=1); device 1 "
            "waits at recv_act(mb=1, stage=1, peer=0); device 2 waits at recv_act(mb=1, "
            "stage=2, peer=1); device 3 waits at recv_act(mb=1, stage=3, peer=2)");
}

TEST(ValidateRejects, WeightBeforeInputGradient) {
  Schedule s = make_schedule(ScheduleKind::zb_h1, 1, 1);
  auto& list = s.per_device[0];
  std::swap(list[index_of(s, 0, {ActionKind::backward_input, 0, 0, -1})],
            list[index_of(s, 0, {ActionKind::backward_weight, 0, 0, -1})]);
  EXPECT_EQ(error_of([&] { validate(s); }),
            "device 0: backward_weight(mb=0, stage=0) comes before its backward_input");
}

TEST(ValidateRejects, BackwardBeforeForward) {
  Schedule s = make_schedule(ScheduleKind::gpipe, 2, 2);
  auto& list = s.per_device[1];
  std::swap(list[index_of(s, 1, {ActionKind::forward, 1, 1, -1})],
            list[index_of(s, 1, {ActionKind::backward, 1, 1, -1})]);
  EXPECT_EQ(error_of([&] { validate(s); }),
            "device 1: backward(mb=1, stage=1) comes before its forward");
}

TEST(ValidateRejects, ForwardBeforeItsReceive) {
  Schedule s = make_schedule(ScheduleKind::gpipe, 2, 1);
  std::swap(s.per_device[1][0], s.per_device[1][1]);
  EXPECT_EQ(error_of([&] { validate(s); }),
            "device 1: forward(mb=0, stage=1) comes before its input activation is received");
}

TEST(ValidateRejects, DuplicateAndMisplacedActions) {
  Schedule twice = make_schedule(ScheduleKind::gpipe, 2, 2);
  twice.per_device[0].insert(twice.per_device[0].begin() + 1, {ActionKind::forward, 0, 0, -1});
  EXPECT_EQ(error_of([&] { validate(twice); }), "device 0: forward(mb=0, stage=0) appears twice");

  Schedule wrong_device = make_schedule(ScheduleKind::gpipe, 2, 2);
  wrong_device.per_device[1].insert(wrong_device.per_device[1].begin(),
                                    {ActionKind::forward, 0, 0, -1});
  EXPECT_EQ(error_of([&] { validate(wrong_device); }),
            "device 1: forward(mb=0, stage=0) belongs on device 0, which holds stage 0");

  Schedule wrong_peer = make_schedule(ScheduleKind::gpipe, 3, 1);
  wrong_peer.per_device[2][0].peer = 0;
  EXPECT_EQ(error_of([&] { validate(wrong_peer); }),
            "device 2: recv_act(mb=0, stage=2, peer=0) names peer 0, but stage 1 is on device 1");

  Schedule out_of_range = make_schedule(ScheduleKind::gpipe, 2, 2);
  out_of_range.per_device[0][0].microbatch = 2;
  EXPECT_EQ(error_of([&] { validate(out_of_range); }),
            "device 0: forward(mb=2, stage=0) names micro-batch 2 outside [0, 2)");

  Schedule unknown = make_schedule(ScheduleKind::gpipe, 1, 1);
  unknown.per_device[0][1].kind = static_cast<ActionKind>(42);
  EXPECT_EQ(error_of([&] { validate(unknown); }), "device 0: action 1 has unknown kind 42");

  Schedule no_next = make_schedule(ScheduleKind::gpipe, 1, 1);
  no_next.per_device[0].insert(no_next.per_device[0].begin() + 1, {ActionKind::send_act, 0, 0, 0});
  EXPECT_EQ(error_of([&] { validate(no_next); }),
            "device 0: send_act(mb=0, stage=0, peer=0) has no next stage");
}

TEST(ValidateRejects, StepMisplacedOrMissing) {
  Schedule early = make_schedule(ScheduleKind::gpipe, 2, 2);
  early.per_device[1].insert(early.per_device[1].begin(), {ActionKind::step, -1, -1, -1});
  EXPECT_EQ(error_of([&] { validate(early); }), "device 1: step is not the last action");

  Schedule missing = make_schedule(ScheduleKind::gpipe, 2, 2);
  missing.per_device[0].pop_back();
  EXPECT_EQ(error_of([&] { validate(missing); }), "device 0: list does not end with step");

  Schedule lists = make_schedule(ScheduleKind::gpipe, 2, 2);
  lists.per_device.pop_back();
  EXPECT_EQ(error_of([&] { validate(lists); }), "schedule has 1 action lists for 2 devices");
}

// ---- pictures ----

TEST(RenderText, GPipe) {
  const Schedule s = make_schedule(ScheduleKind::gpipe, 2, 2);
  EXPECT_EQ(render_schedule_text(s, simulate(s)),
            "gpipe p=2 m=2 v=1, one column = 1 time unit\n"
            "dev 0: F0 F1 .  .  .  B0 B0 B1 B1\n"
            "dev 1: .  F0 F1 B0 B0 B1 B1 .  .\n"
            "bubble: 33.3% (theory 33.3%)\n");
}

TEST(RenderText, OneFOneB) {
  const Schedule s = make_schedule(ScheduleKind::one_f_one_b, 2, 3);
  EXPECT_EQ(render_schedule_text(s, simulate(s)),
            "1f1b p=2 m=3 v=1, one column = 1 time unit\n"
            "dev 0: F0 F1 .  .  B0 B0 F2 B1 B1 .  B2 B2\n"
            "dev 1: .  F0 B0 B0 F1 B1 B1 F2 B2 B2 .  .\n"
            "bubble: 25.0% (theory 25.0%)\n");
}

TEST(RenderText, ChunksAndSplitBackward) {
  const Schedule interleaved = make_schedule(ScheduleKind::interleaved, 1, 1, 2);
  EXPECT_EQ(render_schedule_text(interleaved, simulate(interleaved)),
            "interleaved p=1 m=1 v=2, one column = 1 time unit\n"
            "dev 0: F0c0 F0c1 B0c1 B0c1 B0c0 B0c0\n"
            "bubble: 0.0% (theory 0.0%)\n");

  // ZB-H1, p=2 m=2 on F=B=W=1: W0 on device 1 waits one B (d = 1) before it runs.
  const Schedule zb = make_schedule(ScheduleKind::zb_h1, 2, 2);
  EXPECT_EQ(render_schedule_text(zb, simulate(zb, costs_for(ScheduleKind::zb_h1))),
            "zb1 p=2 m=2 v=1, one column = 1 time unit\n"
            "dev 0: F0 F1 .  B0 W0 B1 W1\n"
            "dev 1: .  F0 B0 F1 B1 W0 W1\n"
            "bubble: 14.3% (theory 14.3%)\n");
}

TEST(RenderSvg, OneRectPerComputeAction) {
  for (ScheduleKind kind : kAllKinds) {
    const bool any_chunks = kind == ScheduleKind::interleaved || kind == ScheduleKind::looped_bfs;
    const int v = chunks_per_device(kind, any_chunks ? 2 : 1);
    const Schedule s = make_schedule(kind, 4, 8, v);
    const Simulation sim = simulate(s, costs_for(kind));
    const std::string svg = render_schedule_svg(s, sim);
    SCOPED_TRACE(schedule_kind_name(kind));
    EXPECT_TRUE(
        svg.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                        "<svg xmlns=\"http://www.w3.org/2000/svg\""));
    EXPECT_TRUE(svg.ends_with("</svg>\n"));
    size_t compute = 0;
    for (const auto& row : sim.per_device)
      for (const TimedAction& t : row) compute += is_compute(t.action.kind);
    EXPECT_EQ(count(svg, "<rect class=\"action\""), compute);
    EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
    EXPECT_NE(svg.find(fmt::format("{} p=4 m=8 v={}, bubble: ", schedule_kind_name(kind), v)),
              std::string::npos);
    EXPECT_EQ(count(svg, "W weight gradient"), splits_backward(kind) ? 1u : 0u);
  }
}

}  // namespace
}  // namespace pf
