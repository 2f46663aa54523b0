// Strided walks of the CUDA kernels (host only: runs without a GPU): the 32-bit division and when plans may use it.
#include "backends/cuda/indexing.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>

namespace pf::cuda {
namespace {

uint32_t divide(uint32_t x, uint32_t magic, uint32_t shift) {
  const auto high = static_cast<uint32_t>((uint64_t{x} * magic) >> 32);  // what __umulhi computes
  return (high + x) >> shift;
}

TEST(FastDivider, DividesEveryIndexBelow2To31Exactly) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<uint32_t> any_divisor(1, (1u << 31) - 1), any_x(0, (1u << 31) - 1);
  for (int trial = 0; trial < 20000; ++trial) {
    const uint32_t d = trial < 5000 ? static_cast<uint32_t>(trial + 1) : any_divisor(rng);
    uint32_t magic = 0, shift = 0;
    fast_divider(d, magic, shift);
    for (uint32_t x : {0u, 1u, d - 1, d, d + 1, 2 * d - 1, (1u << 31) - 1, (1u << 31) - d, any_x(rng), any_x(rng)}) {
      if (x >= (1u << 31)) continue;
      ASSERT_EQ(divide(x, magic, shift), x / d) << x << " / " << d;
    }
  }
}

TEST(StridedPlan, SmallWalksUse32BitIndices) {
  const Shape scores = {8, 12, 1024, 1024}, mask = {1024, 1024}, scalar = {};
  const Shape* operands[] = {&mask, &scores, &scalar};
  const StridedPlan plan = plan_broadcast(scores, operands);
  EXPECT_TRUE(plan.index32);
  ASSERT_EQ(plan.rank, 2);  // the batch axes merge, the mask's axes merge
  EXPECT_EQ(plan.dims[0], 96);
  EXPECT_EQ(plan.dims[1], 1024 * 1024);
  for (int d = 0; d < plan.rank; ++d)
    EXPECT_EQ(divide(1000003u, plan.magic[d], plan.shift[d]), 1000003u / static_cast<uint32_t>(plan.dims[d]));
}

TEST(StridedPlan, WalksOf2To31ElementsOrMoreUse64BitIndices) {
  const Shape big = {2, 1024, 1024, 1024}, row = {1024};
  const Shape* operands[] = {&big, &row};
  EXPECT_FALSE(plan_broadcast(big, operands).index32);
  const Shape just_under = {2047, 1024, 1024}, one = {1};
  const Shape* small_operands[] = {&just_under, &one};
  EXPECT_TRUE(plan_broadcast(just_under, small_operands).index32);
}

}  // namespace
}  // namespace pf::cuda
