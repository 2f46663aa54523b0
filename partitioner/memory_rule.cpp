// The in-flight micro-batch counts of each schedule family.
#include "partitioner/memory_rule.h"

#include <fmt/format.h>

#include <algorithm>

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
};

}  // namespace

std::string_view memory_rule_name(MemoryRule rule) {
  for (const RuleName& r : kRuleNames)
    if (r.rule == rule) return r.name;
  return "unknown";
}

bool splits_backward(MemoryRule rule) { return rule == MemoryRule::zero_bubble || rule == MemoryRule::zero_bubble_v; }

std::optional<MemoryRule> parse_memory_rule(std::string_view name) {
  for (const RuleName& r : kRuleNames)
    if (r.name == name) return r.rule;
  return std::nullopt;
}

namespace {

void check_counts(MemoryRule rule, int stages, int microbatches, int virtual_stages) {
  if (stages < 1 || microbatches < 1 || virtual_stages < 1)
    throw Error(
        fmt::format("in-flight micro-batches: stages ({}), micro-batches ({}) and virtual stages ({}) "
                    "must be at least 1",
                    stages, microbatches, virtual_stages));
  if (stages % virtual_stages != 0)
    throw Error(fmt::format("in-flight micro-batches: {} stages are not a multiple of {} virtual stages", stages,
                            virtual_stages));
  if (rule == MemoryRule::zero_bubble_v && virtual_stages != 2)
    throw Error(fmt::format("in-flight micro-batches: the zero-bubble-v rule places 2 chunks per device, not {}",
                            virtual_stages));
}

/// The stash slots each stage of a zero-bubble schedule holds at once, as
/// the runtime sizes them.
std::vector<int> schedule_peaks(ScheduleKind kind, int stages, int microbatches, int virtual_stages) {
  return simulate(make_schedule(kind, stages / virtual_stages, microbatches, virtual_stages)).peak_stashed;
}

}  // namespace

std::vector<int> inflight_per_stage(MemoryRule rule, int stages, int microbatches, int virtual_stages) {
  check_counts(rule, stages, microbatches, virtual_stages);
  if (rule == MemoryRule::zero_bubble_v) return schedule_peaks(ScheduleKind::zb_v, stages, microbatches, 2);
  if (rule == MemoryRule::zero_bubble && virtual_stages == 1)
    return schedule_peaks(ScheduleKind::zb_h1, stages, microbatches, 1);
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
  switch (rule) {
    case MemoryRule::gpipe:
      return m;
    case MemoryRule::one_f_one_b:
      return std::min(p - stage, m);
    case MemoryRule::zero_bubble:
      return schedule_peaks(ScheduleKind::zb_h1, stages, m, 1).at(static_cast<size_t>(stage));
    case MemoryRule::zero_bubble_v:
      return schedule_peaks(ScheduleKind::zb_v, stages, m, 2).at(static_cast<size_t>(stage));
    case MemoryRule::interleaved: {
      if (v == 1) return std::min(p - stage, m);
      const int device = stage % p;
      // Megatron-LM's warm-up length for the interleaved schedule, plus the
      // one forward of the steady state that runs before the first backward.
      const int64_t warmup = 2LL * (p - device - 1) + static_cast<int64_t>(v - 1) * p;
      const int64_t peak = std::min<int64_t>(warmup + 1, static_cast<int64_t>(m) * v);
      return static_cast<int>((peak + v - 1) / v);
    }
  }
  throw Error("in-flight micro-batches: unknown memory rule");
}

}  // namespace pf
