// Strided walks for the CUDA kernels: broadcasting and permutations as merged dimensions with per-operand strides (internal).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/common/kernel_util.h"
#include "ir/types.h"

namespace pf::cuda {

inline constexpr int kMaxDims = 8;
inline constexpr int kMaxOperands = 3;

/// Result dimensions (outermost first, merged where every operand steps
/// through adjacent dimensions as through one) and, per operand, its stride
/// in elements along each (0 where it is broadcast). Passed to kernels by
/// value; a flat result index is unravelled over `dims` to find each
/// operand's element. Dimensions of size 1 are dropped; a scalar is {1}.
///
/// When the walk has fewer than 2^31 elements and every offset is below
/// 2^31 (`index32`), kernels unravel in 32 bits and divide by dims[d] with a
/// multiply and a shift: q = (umulhi(x, magic[d]) + x) >> shift[d]. A 64-bit
/// division is a long subroutine on the GPU; a broadcast or a transpose
/// spent far more time dividing than moving bytes.
struct StridedPlan {
  int rank = 1;
  bool index32 = true;
  int64_t dims[kMaxDims] = {1};
  int64_t strides[kMaxOperands][kMaxDims] = {};
  uint32_t magic[kMaxDims] = {1};
  uint32_t shift[kMaxDims] = {};
};

/// The multiplier and shift that divide any x < 2^31 by `divisor` (1 <= divisor < 2^31).
void fast_divider(uint32_t divisor, uint32_t& magic, uint32_t& shift);

/// Operands of shapes `operands` (each broadcastable to `result` by NumPy
/// rules) against `result`. Throws pf::Error when more than kMaxDims
/// dimensions remain after merging.
StridedPlan plan_broadcast(const Shape& result, std::span<const Shape* const> operands);

/// Operand 0 read through permutation `perm` (result dimension d is input
/// dimension perm[d]); same limits.
StridedPlan plan_transpose(const Shape& input, const std::vector<int64_t>& perm);

/// A reduction of `input` over the axes marked in `reduced`: `outer` walks
/// the outputs in row-major order of the kept axes (operand 0: the input
/// offset where each output's group starts), `inner` walks one group
/// (operand 0: the offset from that start). `group` is the group's size;
/// `contiguous` says a group is one run of stride 1 (a row reduction).
struct ReducePlan {
  StridedPlan outer, inner;
  int64_t outputs = 1, group = 1;
  bool contiguous = false;
};
ReducePlan plan_reduce(const Shape& input, const std::vector<bool>& reduced);

/// True when every operand of the plan is read in result order (one merged
/// dimension of stride 1): the kernel can use the flat index directly.
bool is_flat(const StridedPlan& plan, int operands);

// Axes and element widths, as every backend's kernels see them.
using backend::AxisSplit;
using backend::by_element_size;
using backend::normalize_axis;
using backend::split_at_axis;

}  // namespace pf::cuda
