// Rounding a size or an offset up to a boundary: arena offsets, scratch layouts, allocator size classes.
#pragma once

#include <concepts>

namespace pf {

/// The smallest multiple of `alignment` (> 0) that is at least `n` (>= 0).
template <std::integral T>
constexpr T align_up(T n, T alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

}  // namespace pf
