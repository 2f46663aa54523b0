// In-flight micro-batch counts of each schedule family.
#include "partitioner/memory_rule.h"

#include <gtest/gtest.h>

#include <vector>

#include "ir/diagnostic.h"

namespace pf {
namespace {

std::vector<int> counts(MemoryRule rule, int stages, int microbatches, int virtual_stages = 1) {
  std::vector<int> out;
  for (int s = 0; s < stages; ++s) out.push_back(inflight_microbatches(rule, s, stages, microbatches, virtual_stages));
  return out;
}

TEST(MemoryRule, NamesRoundTrip) {
  for (MemoryRule rule : {MemoryRule::gpipe, MemoryRule::one_f_one_b, MemoryRule::interleaved, MemoryRule::zero_bubble,
                          MemoryRule::zero_bubble_v})
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
  EXPECT_FALSE(splits_backward(MemoryRule::one_f_one_b));
}

TEST(MemoryRule, InterleavedFollowsMegatron) {
  // p = 4, v = 2: device r warms up 2 (p - r - 1) + (v - 1) p forwards and
  // holds one more; each chunk is charged half, rounded up.
  EXPECT_EQ(counts(MemoryRule::interleaved, 8, 8, 2), (std::vector<int>{6, 5, 4, 3, 6, 5, 4, 3}));
  // Device 0 matches Megatron's estimate ceil(p (1 + (p - 1) / (p v))).
  EXPECT_EQ(inflight_microbatches(MemoryRule::interleaved, 0, 32, 16, 4), 10);  // ceil(8 * 1.21875)
  // Never more than the micro-batches there are.
  EXPECT_EQ(counts(MemoryRule::interleaved, 8, 2, 2), (std::vector<int>{2, 2, 2, 2, 2, 2, 2, 2}));
}

// Two devices, the V's stages 0 1 | 2 3 on devices 0 1 | 1 0: device 0 runs
// three forwards of stage 0 before the first comes back and one more before
// its W, device 1 three of stage 1; stage 2 takes a second forward before
// its first W, and the last stage runs each backward right after its forward.
TEST(MemoryRule, ZeroBubbleVReadsItsSchedule) {
  EXPECT_EQ(counts(MemoryRule::zero_bubble_v, 4, 8, 2), (std::vector<int>{4, 3, 2, 1}));
  EXPECT_EQ(inflight_per_stage(MemoryRule::zero_bubble_v, 4, 8, 2), (std::vector<int>{4, 3, 2, 1}));
  EXPECT_EQ(inflight_per_stage(MemoryRule::zero_bubble_v, 4, 1, 2), (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(inflight_per_stage(MemoryRule::one_f_one_b, 4, 8), (std::vector<int>{4, 3, 2, 1}));
  try {
    inflight_per_stage(MemoryRule::zero_bubble_v, 6, 8, 3);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "in-flight micro-batches: the zero-bubble-v rule places 2 chunks per device, not 3");
  }
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
}

}  // namespace
}  // namespace pf
