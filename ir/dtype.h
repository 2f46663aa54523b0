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

}  // namespace pf
