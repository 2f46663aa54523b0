// Sizes and bit patterns of stored element types: bf16 rounding, a tensor's bytes as stored, aligned sizes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <cstdint>
#include <limits>

#include "ir/align.h"
#include "ir/dtype.h"
#include "ir/types.h"

namespace pf {
namespace {

TEST(Bf16, RoundsToNearestWithTiesToEven) {
  EXPECT_EQ(bf16_bits(1.0f), 0x3f80);
  EXPECT_EQ(bf16_bits(-2.0f), 0xc000);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: the even one (1) wins.
  EXPECT_EQ(bf16_bits(1.0f + 0x1p-8f), 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 and 1 + 2^-6: the even one wins.
  EXPECT_EQ(bf16_bits(1.0f + 3 * 0x1p-8f), 0x3f82);
  // Just above halfway rounds up.
  EXPECT_EQ(bf16_bits(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  // The largest float rounds to bf16's infinity; infinities stay.
  EXPECT_EQ(bf16_bits(std::numeric_limits<float>::max()), 0x7f80);
  EXPECT_EQ(bf16_bits(-std::numeric_limits<float>::infinity()), 0xff80);
}

TEST(Bf16, ANanStaysANan) {
  // A payload only in the low bits would carry into the exponent if rounded.
  uint32_t low_payload = 0x7f80ffffu;
  float nan;
  static_assert(sizeof nan == sizeof low_payload);
  std::memcpy(&nan, &low_payload, sizeof nan);
  EXPECT_TRUE(std::isnan(bf16_to_float(bf16_bits(nan))));
  EXPECT_TRUE(std::isnan(bf16_to_float(bf16_bits(std::numeric_limits<float>::quiet_NaN()))));
}

TEST(Bf16, EveryPatternOfAFiniteBf16ComesBackExactly) {
  for (uint32_t b = 0; b <= 0xffff; ++b) {
    if ((b & 0x7f80) == 0x7f80) continue;  // infinities and NaNs
    EXPECT_EQ(bf16_bits(bf16_to_float(static_cast<uint16_t>(b))), b) << b;
  }
}

TEST(StoredBytes, FloatsTakeTheStoredDtypeOthersTheirOwn) {
  EXPECT_EQ(stored_bytes(TensorType{DType::f32, {2, 3}}, DType::bf16), 12);
  EXPECT_EQ(stored_bytes(TensorType{DType::f16, {3}}, DType::f64), 24);
  EXPECT_EQ(stored_bytes(TensorType{DType::i32, {5}}, DType::bf16), 20);
  EXPECT_EQ(stored_bytes(TensorType{DType::boolean, {7}}, DType::f64), 7);
  EXPECT_EQ(stored_bytes(TensorType{DType::f32, {0, 4}}, DType::f32), 0);
}

TEST(AlignUp, RoundsUpToAMultiple) {
  static_assert(align_up(int64_t{0}, int64_t{64}) == 0);
  static_assert(align_up(int64_t{1}, int64_t{64}) == 64);
  static_assert(align_up(int64_t{64}, int64_t{64}) == 64);
  static_assert(align_up(size_t{65}, size_t{64}) == 128);
  static_assert(align_up(7, 3) == 9);
}

}  // namespace
}  // namespace pf
