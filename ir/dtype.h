// Element types of tensors.
#pragma once

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
/// __float2bfloat16_rn rounds); a NaN stays a quiet NaN.
uint16_t bf16_bits(float f);
/// The float that bf16 bit pattern `b` stands for (exact).
float bf16_to_float(uint16_t b);

}  // namespace pf
