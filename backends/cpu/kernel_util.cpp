// Helpers shared by the CPU kernels: broadcast plans, axis splits, row statistics, scratch memory.
#include "backends/cpu/kernel_util.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <new>

namespace pf::cpu {

BroadcastPlan plan_broadcast(const Shape& result, std::span<const Shape* const> operands) {
  const size_t rank = result.size();
  // Per operand, its strides aligned to the result's dimensions (0 where it
  // has no such dimension or stretches a 1).
  std::vector<std::vector<int64_t>> aligned(operands.size(), std::vector<int64_t>(rank, 0));
  for (size_t k = 0; k < operands.size(); ++k) {
    const Shape& s = *operands[k];
    int64_t stride = 1;
    for (size_t i = s.size(); i-- > 0;) {
      size_t d = rank - s.size() + i;
      aligned[k][d] = s[i] == 1 ? 0 : stride;
      stride *= s[i];
    }
  }
  BroadcastPlan plan;
  plan.strides.resize(operands.size());
  for (size_t d = 0; d < rank; ++d) {
    if (result[d] == 1) continue;  // steps nowhere
    bool merges = !plan.dims.empty();
    for (size_t k = 0; merges && k < operands.size(); ++k) merges = plan.strides[k].back() == aligned[k][d] * result[d];
    if (merges) {
      plan.dims.back() *= result[d];
      for (size_t k = 0; k < operands.size(); ++k) plan.strides[k].back() = aligned[k][d];
    } else {
      plan.dims.push_back(result[d]);
      for (size_t k = 0; k < operands.size(); ++k) plan.strides[k].push_back(aligned[k][d]);
    }
  }
  if (plan.dims.empty()) {
    plan.dims.push_back(1);
    for (auto& s : plan.strides) s.push_back(0);
  }
  return plan;
}

RowWalk::RowWalk(const BroadcastPlan& plan)
    : plan_(plan), index_(plan.dims.size(), 0), offsets_(plan.strides.size(), 0) {
  for (size_t d = 0; d + 1 < plan.dims.size(); ++d) rows_ *= plan.dims[d];
}

RowWalk::RowWalk(const BroadcastPlan& plan, int64_t first) : RowWalk(plan) {
  row_ = first;
  // The odometer's digits of `first`, innermost outer dimension last.
  int64_t rest = first;
  for (size_t d = plan.dims.size() - 1; d-- > 0;) {
    index_[d] = rest % plan.dims[d];
    rest /= plan.dims[d];
    for (size_t k = 0; k < offsets_.size(); ++k) offsets_[k] += index_[d] * plan.strides[k][d];
  }
}

void RowWalk::next() {
  ++row_;
  // An odometer over the outer dimensions, innermost first.
  for (size_t d = plan_.dims.size() - 1; d-- > 0;) {
    if (++index_[d] < plan_.dims[d]) {
      for (size_t k = 0; k < offsets_.size(); ++k) offsets_[k] += plan_.strides[k][d];
      return;
    }
    index_[d] = 0;
    for (size_t k = 0; k < offsets_.size(); ++k) offsets_[k] -= plan_.strides[k][d] * (plan_.dims[d] - 1);
  }
}

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t d = shape.size(); d-- > 1;) strides[d - 1] = strides[d] * shape[d];
  return strides;
}

namespace {

template <class T>
T max_of_lanes(const T* x, int64_t n) {
  constexpr int64_t kLanes = 16;
  T lanes[kLanes];
  std::fill_n(lanes, kLanes, x[0]);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t j = 0; j < kLanes; ++j) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
  T m = x[0];
  for (T v : lanes) m = v > m ? v : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

template <class T>
RowStats row_stats_of(const T* x, int64_t n) {
  const double shift = x[0];
  double s = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - shift;
    s += d;
    sq += d * d;
  }
  const double mean_d = s / static_cast<double>(n);
  return {shift + mean_d, std::max(sq / static_cast<double>(n) - mean_d * mean_d, 0.0)};
}

struct AlignedFree {
  void operator()(void* p) const { ::operator delete (p, std::align_val_t{64}); }
};

}  // namespace

float max_of(const float* x, int64_t n) { return max_of_lanes(x, n); }
double max_of(const double* x, int64_t n) { return max_of_lanes(x, n); }

RowStats row_stats(const float* x, int64_t n) { return row_stats_of(x, n); }
RowStats row_stats(const double* x, int64_t n) { return row_stats_of(x, n); }

void* scratch(size_t bytes) {
  thread_local std::unique_ptr<void, AlignedFree> buffer;
  thread_local size_t capacity = 0;
  if (bytes > capacity) {
    // Grow geometrically so that a slowly growing need does not reallocate every call.
    size_t grown = std::max(bytes, capacity + capacity / 2);
    buffer.reset();  // free first: the old contents are not needed
    buffer.reset(::operator new (grown, std::align_val_t{64}));
    capacity = grown;
  }
  return buffer.get();
}

int32_t saturate_to_i32(double v) {
  if (std::isnan(v)) return 0;
  if (v >= 2147483647.0) return std::numeric_limits<int32_t>::max();
  if (v <= -2147483648.0) return std::numeric_limits<int32_t>::min();
  return static_cast<int32_t>(v);
}

int64_t saturate_to_i64(double v) {
  if (std::isnan(v)) return 0;
  // 2^63 is exact in a double; every double below it converts exactly.
  if (v >= 9223372036854775808.0) return std::numeric_limits<int64_t>::max();
  if (v < -9223372036854775808.0) return std::numeric_limits<int64_t>::min();
  return static_cast<int64_t>(v);
}

int64_t slots_in_use(const int32_t* route, int64_t expert, int64_t capacity) {
  int64_t used = capacity;
  while (used > 0 && route[expert * capacity + used - 1] < 0) --used;
  return used;
}

}  // namespace pf::cpu
