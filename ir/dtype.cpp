// Element types of tensors.
#include "ir/dtype.h"

namespace pf {

namespace {
struct DTypeRow {
  DType type;
  std::string_view name;
  int64_t size;
};
constexpr DTypeRow kDTypes[] = {
    {DType::f32, "f32", 4},  {DType::f16, "f16", 2}, {DType::bf16, "bf16", 2},
    {DType::f64, "f64", 8},  {DType::i32, "i32", 4}, {DType::i64, "i64", 8},
    {DType::boolean, "bool", 1},
};
}  // namespace

std::string_view dtype_name(DType t) { return kDTypes[static_cast<int>(t)].name; }
int64_t dtype_size(DType t) { return kDTypes[static_cast<int>(t)].size; }

std::optional<DType> parse_dtype(std::string_view name) {
  for (const DTypeRow& row : kDTypes)
    if (row.name == name) return row.type;
  return std::nullopt;
}

bool is_float(DType t) {
  return t == DType::f32 || t == DType::f16 || t == DType::bf16 || t == DType::f64;
}
bool is_integer(DType t) { return t == DType::i32 || t == DType::i64; }

}  // namespace pf
