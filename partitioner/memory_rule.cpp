// The in-flight micro-batch counts of each schedule family.
#include "partitioner/memory_rule.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"

namespace pf {

namespace {

struct RuleName {
  MemoryRule rule;
  std::string_view name;
};

constexpr RuleName kRuleNames[] = {
    {MemoryRule::gpipe, "gpipe"},
    {MemoryRule::one_f_one_b, "1f1b"},
    {MemoryRule::interleaved, "interleaved"},
    {MemoryRule::zero_bubble, "zero-bubble"},
    {MemoryRule::zero_bubble_v, "zero-bubble-v"},
    {MemoryRule::zero_bubble_interleaved, "zero-bubble-interleaved"},
    {MemoryRule::dual_pipe_v, "dualpipe-v"},
    {MemoryRule::written, "written"},
};

}  // namespace

std::string_view memory_rule_name(MemoryRule rule) {
  for (const RuleName& r : kRuleNames)
    if (r.rule == rule) return r.name;
  return "unknown";
}

bool splits_backward(MemoryRule rule) {
  return rule == MemoryRule::zero_bubble || rule == MemoryRule::zero_bubble_v ||
         rule == MemoryRule::zero_bubble_interleaved || rule == MemoryRule::dual_pipe_v;
}

std::optional<MemoryRule> parse_memory_rule(std::string_view name) {
  for (const RuleName& r : kRuleNames)
    if (r.name == name) return r.rule;
  return std::nullopt;
}

namespace {

void check_counts(MemoryRule rule, int stages, int microbatches, int virtual_stages) {
  if (rule == MemoryRule::written)
    throw Error("in-flight micro-batches: a written schedule's counts are read off its own lists");
  if (stages < 1 || microbatches < 1 || virtual_stages < 1)
    throw Error(
        fmt::format("in-flight micro-batches: stages ({}), micro-batches ({}) and virtual stages ({}) "
                    "must be at least 1",
                    stages, microbatches, virtual_stages));
  if (stages % virtual_stages != 0)
    throw Error(fmt::format("in-flight micro-batches: {} stages are not a multiple of {} virtual stages", stages,
                            virtual_stages));
  if ((rule == MemoryRule::zero_bubble_v || rule == MemoryRule::dual_pipe_v) && virtual_stages != 2)
    throw Error(fmt::format("in-flight micro-batches: the {} rule places 2 chunks per device, not {}",
                            memory_rule_name(rule), virtual_stages));
  if (rule == MemoryRule::zero_bubble_interleaved && virtual_stages < 2)
    throw Error(fmt::format("in-flight micro-batches: the zero-bubble-interleaved rule places 2 or more chunks per "
                            "device, not {}",
                            virtual_stages));
}

/// The stash slots each stage holds at once under `kind`, as the runtime
/// sizes them: its schedule's own simulation.
std::vector<int> schedule_peaks(ScheduleKind kind, int stages, int microbatches, int virtual_stages) {
  return simulate(make_schedule(kind, stages / virtual_stages, microbatches, virtual_stages)).peak_stashed;
}

std::optional<ScheduleKind> simulated_schedule(MemoryRule rule, int virtual_stages) {
  switch (rule) {
    case MemoryRule::zero_bubble: return ScheduleKind::zb_h1;
    case MemoryRule::zero_bubble_v: return ScheduleKind::zb_v;
    case MemoryRule::dual_pipe_v: return ScheduleKind::dual_pipe_v;
    case MemoryRule::interleaved:
      if (virtual_stages > 1) return ScheduleKind::interleaved;
      return std::nullopt;
    default: return std::nullopt;
  }
}

}  // namespace

bool counts_from_schedule(MemoryRule rule, int virtual_stages) {
  return rule == MemoryRule::zero_bubble_interleaved || rule == MemoryRule::written ||
         simulated_schedule(rule, virtual_stages).has_value();
}

std::vector<int> inflight_per_stage(MemoryRule rule, int stages, int microbatches, int virtual_stages) {
  check_counts(rule, stages, microbatches, virtual_stages);
  if (const std::optional<ScheduleKind> kind = simulated_schedule(rule, virtual_stages))
    return schedule_peaks(*kind, stages, microbatches, virtual_stages);
  std::vector<int> out;
  for (int s = 0; s < stages; ++s) out.push_back(inflight_microbatches(rule, s, stages, microbatches, virtual_stages));
  return out;
}

int inflight_microbatches(MemoryRule rule, int stage, int stages, int microbatches, int virtual_stages) {
  check_counts(rule, stages, microbatches, virtual_stages);
  if (stage < 0 || stage >= stages)
    throw Error(fmt::format("in-flight micro-batches: stage {} is outside 0..{}", stage, stages - 1));
  const int m = microbatches;
  const int v = virtual_stages;
  const int p = stages / v;
  if (v > 1 && (rule == MemoryRule::one_f_one_b || rule == MemoryRule::zero_bubble))
    throw Error(
        fmt::format("in-flight micro-batches: the {} rule has no form with {} virtual stages; use "
                    "'interleaved' or 'gpipe'",
                    memory_rule_name(rule), v));
  if (const std::optional<ScheduleKind> kind = simulated_schedule(rule, v))
    return schedule_peaks(*kind, stages, m, v).at(static_cast<size_t>(stage));
  if (rule == MemoryRule::zero_bubble_interleaved) return zbi_stage_cap(stage, p, m, v);
  if (rule == MemoryRule::gpipe) return m;
  return std::min(p - stage, m);  // 1F1B, and interleaved with one chunk (Megatron falls back to it)
}

}  // namespace pf
