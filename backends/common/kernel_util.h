// Helpers every backend's kernels share: a tensor seen around one axis, and a call by element width.
#pragma once

#include <cstdint>

#include "ir/types.h"

namespace pf::backend {

/// `axis` may be negative (counted from the end); the verifier has checked its range.
inline int64_t normalize_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

/// A tensor seen as [outer, n, inner] around one axis.
struct AxisSplit {
  int64_t outer = 1;
  int64_t n = 1;
  int64_t inner = 1;
};
/// `axis` as normalize_axis returns it.
AxisSplit split_at_axis(const Shape& shape, int64_t axis);

/// Calls f(E{}) with E the unsigned integer as wide as one element of
/// `dtype`: kernels that only move elements need one instantiation per width.
template <class F>
void by_element_size(DType dtype, F&& f) {
  switch (dtype_size(dtype)) {
    case 1:
      return f(uint8_t{});
    case 2:
      return f(uint16_t{});
    case 4:
      return f(uint32_t{});
    default:
      return f(uint64_t{});
  }
}

}  // namespace pf::backend
