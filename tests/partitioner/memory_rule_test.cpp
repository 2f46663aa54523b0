// In-flight micro-batch counts of each schedule family.
#include "partitioner/memory_rule.h"

#include <gtest/gtest.h>

#include <vector>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

std::vector<int> counts(MemoryRule rule, int stages, int microbatches, int virtual_stages = 1) {
  std::vector<int> out;
  for (int s = 0; s < stages; ++s) out.push_back(inflight_microbatches(rule, s, stages, microbatches, virtual_stages));
  return out;
}

TEST(MemoryRule, NamesRoundTrip) {
  for (MemoryRule rule : {MemoryRule::gpipe, MemoryRule::one_f_one_b, MemoryRule::interleaved, MemoryRule::zero_bubble,
                          MemoryRule::zero_bubble_v, MemoryRule::zero_bubble_interleaved, MemoryRule::dual_pipe_v,
                          MemoryRule::written})
    EXPECT_EQ(parse_memory_rule(memory_rule_name(rule)), rule);
  EXPECT_EQ(memory_rule_name(MemoryRule::one_f_one_b), "1f1b");
  EXPECT_FALSE(parse_memory_rule("pipedream"));
}

TEST(MemoryRule, GPipeKeepsEveryMicrobatch) {
  EXPECT_EQ(counts(MemoryRule::gpipe, 4, 8), (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(counts(MemoryRule::gpipe, 4, 8, 2), (std::vector<int>{8, 8, 8, 8}));
}

TEST(MemoryRule, OneFOneBKeepsWhatIsAhead) {
  EXPECT_EQ(counts(MemoryRule::one_f_one_b, 4, 8), (std::vector<int>{4, 3, 2, 1}));
  EXPECT_EQ(counts(MemoryRule::one_f_one_b, 4, 2), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(counts(MemoryRule::interleaved, 4, 8, 1), (std::vector<int>{4, 3, 2, 1}));
}

// ZB-H1 defers device d's Ws by d micro-batches, and a W keeps its
// micro-batch's slot: every stage holds p, 1F1B's device 0's peak.
TEST(MemoryRule, ZeroBubbleH1ReadsItsSchedule) {
  EXPECT_EQ(counts(MemoryRule::zero_bubble, 4, 8), (std::vector<int>{4, 4, 4, 4}));
  EXPECT_EQ(counts(MemoryRule::zero_bubble, 2, 8), (std::vector<int>{2, 2}));
  EXPECT_EQ(inflight_per_stage(MemoryRule::zero_bubble, 4, 2), (std::vector<int>{2, 2, 2, 2}));
  EXPECT_TRUE(splits_backward(MemoryRule::zero_bubble));
  EXPECT_TRUE(splits_backward(MemoryRule::zero_bubble_v));
  EXPECT_TRUE(splits_backward(MemoryRule::zero_bubble_interleaved));
  EXPECT_TRUE(splits_backward(MemoryRule::dual_pipe_v));
  EXPECT_FALSE(splits_backward(MemoryRule::one_f_one_b));
}

// DualPipeV's counts are its schedule's own peaks: stage s of 2p holds
// 2p - s (the V's way down the most, as 1F1B's early stages), so every
// device holds 2p + 1 chunks' worth; it takes 2p micro-batches or more, and
// two chunks.
TEST(MemoryRule, DualPipeVReadsItsSchedule) {
  const std::vector<int> counted = inflight_per_stage(MemoryRule::dual_pipe_v, 8, 8, 2);
  EXPECT_EQ(counted, simulate(make_schedule(ScheduleKind::dual_pipe_v, 4, 8, 2)).peak_stashed);
  EXPECT_EQ(counted, (std::vector<int>{8, 7, 6, 5, 4, 3, 2, 1}));
  EXPECT_EQ(counts(MemoryRule::dual_pipe_v, 8, 8, 2), counted);
  EXPECT_TRUE(counts_from_schedule(MemoryRule::dual_pipe_v, 2));
  EXPECT_EQ(error_of([] { inflight_per_stage(MemoryRule::dual_pipe_v, 8, 4, 2); }),
            "dualpipev needs at least 2 micro-batches per device (8 on 4 devices), got 4");
  EXPECT_EQ(error_of([] { inflight_per_stage(MemoryRule::dual_pipe_v, 8, 8, 4); }),
            "in-flight micro-batches: the dualpipe-v rule places 2 chunks per device, not 4");
}

// Zero bubble over interleaved chunks: each chunk's count is the cap zbi's
// orders keep (a closed form: the earlier chunks hold more), which the
// order on unit costs reaches on some stages; it needs two chunks or more.
TEST(MemoryRule, ZeroBubbleInterleavedCountsItsCaps) {
  const std::vector<int> counted = inflight_per_stage(MemoryRule::zero_bubble_interleaved, 8, 8, 2);
  EXPECT_EQ(counted, (std::vector<int>{6, 6, 6, 6, 4, 4, 4, 4}));
  const std::vector<int> held = simulate(make_schedule(ScheduleKind::zb_interleaved, 4, 8, 2)).peak_stashed;
  EXPECT_EQ(held, (std::vector<int>{6, 5, 5, 6, 4, 4, 4, 4}));
  EXPECT_EQ(inflight_per_stage(MemoryRule::zero_bubble_interleaved, 16, 8, 4),
            (std::vector<int>{8, 8, 8, 8, 8, 8, 8, 8, 6, 6, 6, 6, 4, 4, 4, 4}));
  EXPECT_TRUE(counts_from_schedule(MemoryRule::zero_bubble_interleaved, 2));
  EXPECT_EQ(error_of([] { inflight_per_stage(MemoryRule::zero_bubble_interleaved, 4, 8, 1); }),
            "in-flight micro-batches: the zero-bubble-interleaved rule places 2 or more chunks per device, not 1");
}

// Interleaved, p = 4, v = 2: the warm-up runs ahead on each device's first
// chunk (stages 0..3), which holds up to all 8 micro-batches, the second
// (stages 4..7) about half; device 0 holds 12 chunk-micro-batches in all,
// Megatron's estimate p (1 + (p - 1) / (p v)) stages' worth (11) and one
// for the forward the steady state runs before its first backward.
TEST(MemoryRule, InterleavedReadsItsSchedule) {
  EXPECT_EQ(counts(MemoryRule::interleaved, 8, 8, 2), (std::vector<int>{8, 8, 7, 5, 4, 4, 3, 1}));
  EXPECT_EQ(inflight_per_stage(MemoryRule::interleaved, 8, 8, 2), (std::vector<int>{8, 8, 7, 5, 4, 4, 3, 1}));
  // Never more than the micro-batches there are.
  EXPECT_EQ(counts(MemoryRule::interleaved, 8, 2, 2), (std::vector<int>{2, 2, 2, 2, 2, 2, 2, 1}));
  EXPECT_TRUE(counts_from_schedule(MemoryRule::interleaved, 2));
  EXPECT_FALSE(counts_from_schedule(MemoryRule::interleaved, 1));
  EXPECT_FALSE(counts_from_schedule(MemoryRule::one_f_one_b, 1));
}

TEST(MemoryRule, RejectsWhatHasNoMeaning) {
  EXPECT_THROW(inflight_microbatches(MemoryRule::gpipe, 4, 4, 8), Error);
  EXPECT_THROW(inflight_microbatches(MemoryRule::gpipe, 0, 4, 0), Error);
  EXPECT_THROW(inflight_microbatches(MemoryRule::interleaved, 0, 6, 8, 4), Error);
  try {
    inflight_microbatches(MemoryRule::zero_bubble, 0, 8, 8, 2);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "in-flight micro-batches: the zero-bubble rule has no form with 2 virtual stages; use "
                 "'interleaved' or 'gpipe'");
  }
  // A schedule file's counts come with its lists, not from a rule.
  EXPECT_EQ(error_of([] { inflight_per_stage(MemoryRule::written, 2, 4); }),
            "in-flight micro-batches: a written schedule's counts are read off its own lists");
  EXPECT_TRUE(counts_from_schedule(MemoryRule::written, 1));
}

}  // namespace
}  // namespace pf
