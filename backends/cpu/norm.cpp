// Normalisation over an axis: softmax and log_softmax (any axis), layernorm and rmsnorm (last axis).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/vector_math.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

// Arguments of exp, after the row's maximum is subtracted: below kFastFloor
// glibc's vector exp leaves its fast path for a scalar one (a causal row's
// -inf half makes softmax 20 times slower), and below kZeroBelow exp is 0.
template <class T>
struct ExpRange;
template <>
struct ExpRange<float> {
  static constexpr float kFastFloor = -87.0f, kZeroBelow = -104.0f;
};
template <>
struct ExpRange<double> {
  static constexpr double kFastFloor = -708.0, kZeroBelow = -746.0;
};

// y[i] = exp(x[i] - m) and their sum; y is also the scratch of the kLog
// case. Arguments below the fast floor go to exp as the floor and their
// result is replaced by 0, which is exact for those below kZeroBelow (-inf
// included). Three loops, because in one the compiler sees that the clamp
// never changes a result it keeps and drops it. A row with an argument in
// between (a denormal result) is done again with exp on every argument, so
// the results are always those of exp itself.
template <class T>
T exp_sum(const T* x, T m, T* y, int64_t n) {
  constexpr T lo = ExpRange<T>::kFastFloor, zero = ExpRange<T>::kZeroBelow;
  int rare = 0;
  for (int64_t i = 0; i < n; ++i) {
    const T d = x[i] - m;
    y[i] = d < lo ? lo : d;
    rare |= (d < lo) & (d >= zero);
  }
  for (int64_t i = 0; i < n; ++i) y[i] = std::exp(y[i]);
  T s = 0;
  if (!rare) {
    for (int64_t i = 0; i < n; ++i) {
      y[i] = x[i] - m < lo ? T(0) : y[i];
      s += y[i];
    }
    return s;
  }
  for (int64_t i = 0; i < n; ++i) {
    y[i] = std::exp(x[i] - m);
    s += y[i];
  }
  return s;
}

// Softmax of one contiguous row, shifted by its maximum so exp never overflows.
template <class T, bool kLog>
void softmax_row(const T* x, T* y, int64_t n) {
  const T m = max_of(x, n);
  if constexpr (kLog) {
    const T shift = m + std::log(exp_sum(x, m, y, n));
    for (int64_t i = 0; i < n; ++i) y[i] = x[i] - shift;
  } else {
    const T r = T(1) / exp_sum(x, m, y, n);
    for (int64_t i = 0; i < n; ++i) y[i] *= r;
  }
}

// Softmax over the middle axis of [n, inner] (an axis that is not the last):
// the statistics of `inner` columns are kept side by side in scratch so every
// loop runs along contiguous memory.
template <class T, bool kLog>
void softmax_columns(const T* x, T* y, int64_t n, int64_t inner) {
  T* m = static_cast<T*>(scratch(2 * static_cast<size_t>(inner) * sizeof(T)));  // (inner,) max
  T* s = m + inner;                                                             // (inner,) sum
  std::copy_n(x, inner, m);
  for (int64_t j = 1; j < n; ++j)
    for (int64_t k = 0; k < inner; ++k) m[k] = x[j * inner + k] > m[k] ? x[j * inner + k] : m[k];
  std::fill_n(s, inner, T(0));
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < inner; ++k) {
      const T e = std::exp(x[j * inner + k] - m[k]);
      if constexpr (!kLog) y[j * inner + k] = e;
      s[k] += e;
    }
  }
  if constexpr (kLog) {
    for (int64_t k = 0; k < inner; ++k) m[k] += std::log(s[k]);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < inner; ++k) y[j * inner + k] = x[j * inner + k] - m[k];
  } else {
    for (int64_t k = 0; k < inner; ++k) s[k] = T(1) / s[k];
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < inner; ++k) y[j * inner + k] *= s[k];
  }
}

template <class T, bool kLog>
void softmax(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const TensorType& t = args.in_types[0];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", -1), t.rank()));
  if (s.n == 0 || s.inner == 0) return;
  const int64_t block = s.n * s.inner;
  // Blocks are independent: split over the device's threads.
  parallel_for(s.outer, std::max<int64_t>(1, kElementwiseGrain / block), [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      if (s.inner == 1)
        softmax_row<T, kLog>(x + o * block, y + o * block, s.n);
      else
        softmax_columns<T, kLog>(x + o * block, y + o * block, s.n, s.inner);
    }
  });
}

// layernorm(x, weight, bias) over the last axis: (x - mean) / sqrt(var + eps) * w + b,
// with the biased variance.
template <class T>
void layernorm(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  const auto* w = static_cast<const T*>(args.in[1]);
  const auto* b = static_cast<const T*>(args.in[2]);
  auto* y = static_cast<T*>(args.out[0]);
  const int64_t c = args.in_types[0].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[0].numel() / c;
  const double eps = args.attrs.get_real("eps", 1e-5);
  // Rows are independent: split over the device's threads.
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c;
      T* yr = y + r * c;
      const RowStats st = row_stats(xr, c);
      const T mean = static_cast<T>(st.mean), rstd = static_cast<T>(1 / std::sqrt(st.var + eps));
      for (int64_t i = 0; i < c; ++i) yr[i] = (xr[i] - mean) * rstd * w[i] + b[i];
    }
  });
}

// rmsnorm(x, weight) over the last axis: x / sqrt(mean(x^2) + eps) * w.
template <class T>
void rmsnorm(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  const auto* w = static_cast<const T*>(args.in[1]);
  auto* y = static_cast<T*>(args.out[0]);
  const int64_t c = args.in_types[0].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[0].numel() / c;
  const double eps = args.attrs.get_real("eps", 1e-6);
  // Rows are independent: split over the device's threads.
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c;
      T* yr = y + r * c;
      double sq = 0;
      for (int64_t i = 0; i < c; ++i) sq += static_cast<double>(xr[i]) * xr[i];
      const T rms = static_cast<T>(1 / std::sqrt(sq / static_cast<double>(c) + eps));
      for (int64_t i = 0; i < c; ++i) yr[i] = xr[i] * rms * w[i];
    }
  });
}

}  // namespace

void add_norm_kernels(KernelTable& table) {
  table.set_float(OpKind::softmax, softmax<float, false>, softmax<double, false>);
  table.set_float(OpKind::log_softmax, softmax<float, true>, softmax<double, true>);
  table.set_float(OpKind::layernorm, layernorm<float>, layernorm<double>);
  table.set_float(OpKind::rmsnorm, rmsnorm<float>, rmsnorm<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
