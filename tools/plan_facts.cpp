// What the stage table and the plan's picture say about a plan.
#include "tools/plan_facts.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <map>
#include <utility>
#include <string>
#include <vector>

#include "ir/units.h"

namespace pf::tools {

// Whether stage `s` begins inside a layer that the stage before it began:
// the compiler cut between two ops of that layer.
bool begins_inside_layer(const Plan& plan, size_t s) {
  if (s == 0 || s >= plan.stages.size()) return false;
  const PlanStage &before = plan.stages[s - 1], &stage = plan.stages[s];
  return !before.layers.empty() && !stage.layers.empty() && before.layers.back() == stage.layers.front() &&
         !stage.layers.front().empty();
}

// "embed..h.2", with the part of a layer split between stages marked:
// "embed..part of h.2", "rest of h.2..head".
std::string layer_range(const Plan& plan, size_t index) {
  const PlanStage& s = plan.stages[index];
  if (s.layers.empty()) return "-";
  std::string first = s.layers.front(), last = s.layers.back();
  const bool rest = begins_inside_layer(plan, index), part = begins_inside_layer(plan, index + 1);
  if (s.layers.size() == 1) {
    if (rest && part) return "middle of " + first;
    return (rest ? "rest of " : part ? "part of " : "") + first;
  }
  if (rest) first.insert(0, "rest of ");
  if (part) last.insert(0, "part of ");
  return first + ".." + last;
}

int64_t param_count(const PlanStage& s) {
  int64_t n = 0;
  for (const PlanParam& p : s.params) n += p.type.numel();
  return n;
}

// How far the time of a stage's device (its stages together) is from the
// mean device's, in percent: the plan's imbalance is the largest of these.
// With one stage per device, the stage's own time against the mean stage's.
std::string imbalance(const Plan& plan, const PlanStage& s) {
  std::map<int, double> busy;
  double total = 0;
  for (const PlanStage& t : plan.stages) {
    busy[t.device] += t.predicted.time_s;
    total += t.predicted.time_s;
  }
  const double mean = total / static_cast<double>(busy.size());
  if (mean <= 0) return "-";
  return fmt::format("{:+.1f}%", 100 * (busy[s.device] - mean) / mean);
}

std::string device_name(const Plan& plan, const PlanStage& s) { return plan.devices[s.device].name; }

std::string compute_ms(const PlanStage& s) {
  return fmt::format("{:.3f}", 1e3 * (s.predicted.forward_s + s.predicted.backward_s));
}

std::string bytes_text(int64_t n) { return format_bytes(static_cast<double>(n)); }

// "1 stage", "4 stages".
std::string count(size_t n, std::string_view noun, std::string_view plural) {
  return fmt::format("{} {}", n, n == 1 ? noun : plural);
}

namespace {

// What the replicas share out: " sharing the optimizer state and the experts".
std::string sharing(const Plan& plan) {
  std::vector<std::string> what;
  if (plan.shard_optimizer) what.push_back("the optimizer state");
  if (plan.expert_parallel > 1) what.push_back("the experts");
  return what.empty() ? "" : fmt::format(" sharing {}", fmt::join(what, " and "));
}

}  // namespace

std::string summary(const Plan& plan) {
  const int replicas = replica_count(plan);
  return fmt::format("@{}: {} on {}, {}{}, {}", plan.model_name, count(plan.stages.size(), "stage", "stages"),
                     count(plan.devices.size(), "device", "devices"),
                     replicas > 1 ? fmt::format("{} data-parallel replicas{}, ", replicas, sharing(plan)) : "",
                     plan.schedule,
                     count(static_cast<size_t>(plan.microbatches), "micro-batch", "micro-batches")) +
         (plan.virtual_stages > 1 ? fmt::format(", {} virtual stages", plan.virtual_stages) : "") +
         (plan.tensor_parallel > 1 ? fmt::format(", {} ranks per device (tensor parallel{})", plan.tensor_parallel,
                                                 plan.sequence_parallel ? ", sequence parallel" : "")
                                   : "") +
         (plan.dtype != DType::f32 ? fmt::format(", {}", dtype_name(plan.dtype)) : "");
}

std::string prediction(const Plan& plan) {
  const Plan::Summary& p = plan.predicted;
  // A baseline that cannot place the stages (too few layers for them) has no speedup.
  std::string speedups;
  for (const auto& [speedup, baseline] : {std::pair{p.speedup_vs_equal_layers, "equal layers"},
                                          std::pair{p.speedup_vs_equal_params, "equal params"}})
    if (speedup > 0)
      speedups += fmt::format("{}{:.2f}x vs {}", speedups.empty() ? ", speedup " : ", ", speedup, baseline);
  return fmt::format("period {:.3f} ms per micro-batch, imbalance {:.1f}%, bubble {:.1f}%{}", 1e3 * p.period_s,
                     p.imbalance_pct, 100 * p.bubble_fraction, speedups) +
         // Plans written before these were predicted have zeros.
         (p.step_s > 0 ? fmt::format("; step {}, MFU {:.1f}%", format_seconds(p.step_s), 100 * p.mfu) : "");
}

}  // namespace pf::tools
