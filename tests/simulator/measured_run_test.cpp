// A run's trace read back: its steps after the first, each stage's actions, the step, the schedule's walk, the
// bubble, the optimizers and the actions' spread, on traces written as a run writes them (trace_json).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "runtime/pipeline.h"
#include "simulator/measured_run.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

/// Two devices, one stage each, one micro-batch, `steps` steps 10 s apart:
/// device 0 runs F [0, f0], B [4, 6] and its optimizer [6, 6.5]; device 1
/// F [2, 2 + f1], B [3, 4] and its optimizer [4.5, 5]. f0 and f1 per step.
std::string trace(const std::vector<double>& f0, const std::vector<double>& f1) {
  std::vector<TraceEvent> events;
  for (size_t k = 0; k < f0.size(); ++k) {
    const double o = 10.0 * static_cast<double>(k);
    auto add = [&](int device, ActionKind kind, int stage, double start, double end) {
      events.push_back({device, Action{kind, kind == ActionKind::step ? -1 : 0, stage, -1}, o + start, o + end});
    };
    add(0, ActionKind::forward, 0, 0, f0[k]);
    add(0, ActionKind::send_act, 0, f0[k], f0[k]);
    add(1, ActionKind::recv_act, 1, 0, 2);
    add(1, ActionKind::forward, 1, 2, 2 + f1[k]);
    add(1, ActionKind::backward, 1, 3, 4);
    add(0, ActionKind::backward, 0, 4, 6);
    add(1, ActionKind::step, -1, 4.5, 5);
    add(0, ActionKind::step, -1, 6, 6.5);
  }
  return trace_json(events, 2);
}

TEST(MeasuredRun, TakesTheStepsAfterTheFirst) {
  // The first step's forward runs twice as long: it is not measured.
  const MeasuredRun run = measure_trace(trace({2, 1, 1}, {1, 1, 1}), "t.json");
  EXPECT_EQ(run.steps, 3);
  EXPECT_EQ(run.measured, 2);
  EXPECT_EQ(run.devices, 2);
  EXPECT_DOUBLE_EQ(run.action_s.at({0, ActionKind::forward}), 1);
  EXPECT_DOUBLE_EQ(run.action_s.at({0, ActionKind::backward}), 2);
  EXPECT_DOUBLE_EQ(run.action_s.at({1, ActionKind::forward}), 1);
  EXPECT_DOUBLE_EQ(run.action_s.at({1, ActionKind::backward}), 1);
  EXPECT_EQ(run.action_s.size(), 4u);  // transfers are not compute
  // From the previous step's end (6.5) to this one's (16.5); the walk ends
  // with the last backward (16).
  EXPECT_NEAR(run.step_s, 10, 1e-9);
  EXPECT_NEAR(run.walk_s, 9.5, 1e-9);
  EXPECT_NEAR(run.bubble, 1 - 5.0 / (2 * 9.5), 1e-9);
  EXPECT_NEAR(run.optimizer_s.at(0), 0.5, 1e-9);
  EXPECT_NEAR(run.optimizer_s.at(1), 0.5, 1e-9);
  EXPECT_DOUBLE_EQ(run.log_spread, 0);
}

TEST(MeasuredRun, MeasuresHowFarActionsWanderFromTheirMedians) {
  // Device 1's forward takes 1.2 and 0.8 (median 1); the other actions
  // keep theirs: eight measured actions, two off their median, each
  // weighed by its median (device 0's backward 2, the others 1).
  const MeasuredRun run = measure_trace(trace({1, 1, 1}, {1, 1.2, 0.8}), "t.json");
  EXPECT_NEAR(run.action_s.at({1, ActionKind::forward}), 1, 1e-9);
  const std::vector<std::pair<double, double>> logs = {{std::log(1.2), 1}, {std::log(0.8), 1}, {0, 1}, {0, 1},
                                                       {0, 2}, {0, 2}, {0, 1}, {0, 1}};
  double mean = 0, square = 0;
  for (const auto& [x, w] : logs) mean += w * x / 10;
  for (const auto& [x, w] : logs) square += w * (x - mean) * (x - mean);
  EXPECT_NEAR(run.log_spread, std::sqrt(square / 10), 1e-9);
}

TEST(MeasuredRun, OneStepIsMeasuredAlone) {
  const MeasuredRun run = measure_trace(trace({1.5}, {1}), "t.json");
  EXPECT_EQ(run.steps, 1);
  EXPECT_EQ(run.measured, 1);
  EXPECT_DOUBLE_EQ(run.action_s.at({0, ActionKind::forward}), 1.5);
  EXPECT_NEAR(run.step_s, 6.5, 1e-9);  // from the first slice
}

TEST(MeasuredRun, RefusesWhatIsNotARunsTrace) {
  EXPECT_EQ(error_of([] { measure_trace("[]", "t.json"); }),
            "t.json: not a trace: expected an object with a \"traceEvents\" array, as pipeforge run --trace writes");
  EXPECT_EQ(error_of([] { measure_trace("{\"traceEvents\": []}", "t.json"); }),
            "t.json: no training step in the trace: trace a run of the plan (pipeforge run PLAN --steps N --trace "
            "FILE)");
  EXPECT_EQ(error_of([] {
              measure_trace("{\"traceEvents\": [{\"ph\": \"X\", \"cat\": \"forward\", \"tid\": 0, \"ts\": 1}]}",
                            "t.json");
            }),
            "t.json: a forward slice without its tid, ts, dur or args.stage: "
            "{\"cat\":\"forward\",\"ph\":\"X\",\"tid\":0,\"ts\":1}");
  EXPECT_EQ(error_of([] { measure_trace("{\"traceEvents\": [", "t.json"); }).substr(0, 22), "t.json: not a trace: [");
}

}  // namespace
}  // namespace pf
