// How many micro-batches of activations each pipeline stage keeps in flight.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace pf {

/// The schedule family, as far as activation memory is concerned. The runtime
/// has its own schedule enum; this one only answers "how many micro-batches
/// does stage s stash at its peak", so the partitioner needs no runtime.
enum class MemoryRule {
  gpipe,        // all forwards, then all backwards: every stage holds all m
  one_f_one_b,  // stage s of p holds min(p - s, m)
  interleaved,  // Megatron's interleaved 1F1B over v chunks per device
  zero_bubble,  // ZB-H1: B and W split; each stage's peak read off the schedule (a deferred W holds its slot)
  zero_bubble_v,  // ZB-V: two chunks per device in a V; each chunk's peak read off the schedule itself
  zero_bubble_interleaved,  // zbi: v >= 2 round-robin chunks, B and W split; each chunk at its cap (zbi_stage_cap)
  dual_pipe_v,  // DualPipeV: zbv's V in DeepSeek's order; each chunk's peak read off the schedule itself
  written,  // a schedule file's lists: each stage's peak read off them (PartitionOptions::written_stashed)
};

/// "gpipe", "1f1b", "interleaved", "zero-bubble", "zero-bubble-v", "zero-bubble-interleaved", "dualpipe-v",
/// "written".
std::string_view memory_rule_name(MemoryRule rule);
/// True for the zero-bubble rules, whose stages split each backward.
bool splits_backward(MemoryRule rule);
/// The inverse of memory_rule_name; nullopt for anything else.
std::optional<MemoryRule> parse_memory_rule(std::string_view name);

/// Peak number of micro-batches whose activations stage `stage` (0-based, of
/// `stages`) keeps. With `virtual_stages` v > 1, `stages` counts chunks
/// (p devices * v), chunk c runs on device c % p, and the answer is per chunk:
///  - gpipe: m, whatever v (the looped breadth-first order keeps everything);
///  - one_f_one_b: min(p - s, m); v must be 1;
///  - zero_bubble (v = 1): the peak the zb1 schedule's simulation counts for
///    the stage, forward run and W not: up to one more than 1F1B's, where a
///    W waits behind the next forward;
///  - interleaved, v = 1: as 1F1B (Megatron falls back to the plain schedule);
///  - interleaved, v > 1: the peak the interleaved schedule's simulation
///    counts for the stage (a device's first chunk holds the most: its
///    warm-up runs ahead on it; device 0 holds about p (1 + (p - 1) / (p v))
///    stages' worth in all, Megatron's own in-flight estimate);
///  - zero_bubble_v (v = 2, stage s on its device's V): the peak the zbv
///    schedule's simulation counts for the stage, forward run and W not
///    (at most 2p chunks per device together, 1F1B's peak of p full stages);
///  - dual_pipe_v (v = 2, the V): the peak the dualpipev schedule's
///    simulation counts (2p + 1 chunks on device 0, a chunk more than zbv);
///  - zero_bubble_interleaved (v >= 2, round robin): the cap zbi's orders
///    keep, zbi_stage_cap (runtime/schedule.h): min(m, p + (v - 1 - c)
///    ceil(p / 2)) for chunk c, and p v chunks per device together; the
///    order a plan runs may hold fewer.
/// Throws pf::Error on an out-of-range stage, counts below 1, `stages` not a
/// multiple of v, v with no form in the rule, or the written rule (whose
/// counts come with its lists).
int inflight_microbatches(MemoryRule rule, int stage, int stages, int microbatches, int virtual_stages = 1);
/// True where the counts depend on the device count as a whole (read off a
/// simulated schedule: zero bubble, interleaved with chunks; or zbi's caps).
bool counts_from_schedule(MemoryRule rule, int virtual_stages);
/// The same for every stage at once (a schedule simulated once).
std::vector<int> inflight_per_stage(MemoryRule rule, int stages, int microbatches, int virtual_stages = 1);

}  // namespace pf
