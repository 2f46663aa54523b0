// Element types of tensors.
#pragma once

#include <bit>
#include <cstdint>
#include <optional>
#include <string_view>

namespace pf {

/// f64 is not written by users; it is the reference precision of the CPU
/// backend's tests.
enum class DType : uint8_t { f32, f16, bf16, f64, i32, i64, boolean };

std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
int64_t dtype_size(DType t);
bool is_float(DType t);
bool is_integer(DType t);

/// The bf16 nearest to `f` as its bit pattern, ties to even (as a GPU's
/// __float2bfloat16_rn rounds); a NaN stays a quiet NaN. Inline and free of
/// branches, so that a loop rounding a tensor vectorises.
inline uint16_t bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  // Adding 0x7fff, plus the lowest kept bit, rounds to nearest with ties to
  // even. A NaN whose payload sits in the low bits would round to an
  // infinity (or carry into the sign): it keeps its top bits and sets the
  // quiet bit instead.
  const uint32_t rounded = (u & 0x7fffffffu) > 0x7f800000u ? u | 0x00400000u : u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

/// The float that bf16 bit pattern `b` stands for (exact).
inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

/// `f` rounded to the nearest bf16, as a float (bf16_bits' rounding).
inline float round_to_bf16(float f) { return bf16_to_float(bf16_bits(f)); }

}  // namespace pf
