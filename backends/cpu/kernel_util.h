// Helpers shared by the CPU kernels: broadcast plans, row statistics, scratch memory (internal).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backends/common/kernel_util.h"
#include "ir/types.h"

namespace pf::cpu {

/// Operands laid against a result shape for an elementwise walk. Dimensions
/// of size 1 are dropped and adjacent dimensions are merged wherever every
/// operand steps through them as through one, so a same-shape op becomes one
/// flat loop and a bias add becomes [rows, C] with the bias's row stride 0.
struct BroadcastPlan {
  /// Merged result dimensions, outermost first; never empty ({1} for a scalar).
  std::vector<int64_t> dims;
  /// strides[k][d]: elements operand k advances per step of dims[d]; 0 where
  /// operand k is broadcast. In the last dimension it is always 0 or 1.
  std::vector<std::vector<int64_t>> strides;
};

/// Plans operands of shapes `operands` (each broadcastable to `result` by
/// NumPy rules: aligned on the right, size 1 stretches) against `result`.
BroadcastPlan plan_broadcast(const Shape& result, std::span<const Shape* const> operands);

/// Walks every "row" of a plan, that is every index of all dimensions but
/// the last, keeping each operand's element offset. Rows go in row-major
/// order, so a contiguous result's row r starts at r * dims.back().
class RowWalk {
 public:
  explicit RowWalk(const BroadcastPlan& plan);
  /// Starts at row `first` (0 <= first <= the number of rows), so that
  /// threads can walk disjoint ranges of rows.
  RowWalk(const BroadcastPlan& plan, int64_t first);
  bool done() const { return row_ == rows_; }
  int64_t row() const { return row_; }
  int64_t offset(size_t operand) const { return offsets_[operand]; }
  void next();

 private:
  const BroadcastPlan& plan_;
  std::vector<int64_t> index_;
  std::vector<int64_t> offsets_;
  int64_t row_ = 0;
  int64_t rows_ = 1;
};

// Axes and element widths, as every backend's kernels see them.
using backend::AxisSplit;
using backend::by_element_size;
using backend::normalize_axis;
using backend::split_at_axis;

/// The slots of expert `expert` in use under a mixture of experts' route
/// (i32 [experts, capacity], -1 for an empty slot): up to its last slot
/// holding a token, as a route fills each expert's slots from the first.
int64_t slots_in_use(const int32_t* route, int64_t expert, int64_t capacity);

/// Row-major strides in elements.
std::vector<int64_t> contiguous_strides(const Shape& shape);

/// The largest of x[0], ..., x[n-1] (n >= 1), comparing with `>` so a NaN
/// never wins. Kept in 16 independent running maxima so that the compares
/// overlap instead of waiting on one another (the compiler does not
/// vectorise a max reduction unless it may assume finite values).
float max_of(const float* x, int64_t n);
double max_of(const double* x, int64_t n);

/// Mean and biased variance of a row of n >= 1 values, in one pass. The sums
/// are taken in double of the values shifted by the row's first element: a
/// shift near the mean keeps sum(d^2) - sum(d)^2 / n from cancelling when
/// |mean| >> stddev. layernorm and layernorm_grad both use it, so the
/// gradient sees exactly the forward's statistics.
struct RowStats {
  double mean;
  double var;
};
RowStats row_stats(const float* x, int64_t n);
RowStats row_stats(const double* x, int64_t n);

/// A per-thread buffer of at least `bytes`, 64-byte aligned, valid until the
/// next call on the same thread. It only grows, so after the first steps no
/// kernel touches fresh memory (first writes to new pages are slow here).
void* scratch(size_t bytes);

/// Float to integer conversions that saturate at the integer's range, send
/// NaN to 0 and truncate toward zero otherwise (a plain cast is undefined
/// outside the range).
int32_t saturate_to_i32(double v);
int64_t saturate_to_i64(double v);

}  // namespace pf::cpu
