// Gradients of normalisation: softmax_grad, log_softmax_grad (any axis), layernorm_grad, rmsnorm_grad (last axis).
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

// One contiguous row, from g and the forward's output y:
// softmax:     dx = y * (g - sum(g * y))
// log_softmax: dx = g - exp(y) * sum(g)
template <class T, bool kLog>
void softmax_grad_row(const T* g, const T* y, T* dx, int64_t n) {
  T s = 0;
  if constexpr (kLog) {
    for (int64_t i = 0; i < n; ++i) s += g[i];
    for (int64_t i = 0; i < n; ++i) dx[i] = g[i] - std::exp(y[i]) * s;
  } else {
    for (int64_t i = 0; i < n; ++i) s += g[i] * y[i];
    for (int64_t i = 0; i < n; ++i) dx[i] = y[i] * (g[i] - s);
  }
}

// The same over the middle axis of [n, inner]: the sums of `inner` columns
// are kept side by side in scratch so every loop runs along contiguous memory.
template <class T, bool kLog>
void softmax_grad_columns(const T* g, const T* y, T* dx, int64_t n, int64_t inner) {
  T* s = static_cast<T*>(scratch(static_cast<size_t>(inner) * sizeof(T)));  // (inner,)
  std::fill_n(s, inner, T(0));
  for (int64_t j = 0; j < n; ++j)
    for (int64_t k = 0; k < inner; ++k) s[k] += kLog ? g[j * inner + k] : g[j * inner + k] * y[j * inner + k];
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t k = 0; k < inner; ++k) {
      const int64_t i = j * inner + k;
      if constexpr (kLog)
        dx[i] = g[i] - std::exp(y[i]) * s[k];
      else
        dx[i] = y[i] * (g[i] - s[k]);
    }
  }
}

template <class T, bool kLog>
void softmax_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* y = static_cast<const T*>(args.in[1]);
  auto* dx = static_cast<T*>(args.out[0]);
  const TensorType& t = args.in_types[1];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", -1), t.rank()));
  if (s.n == 0 || s.inner == 0) return;
  const int64_t block = s.n * s.inner;
  // Blocks are independent: split over the device's threads.
  parallel_for(s.outer, std::max<int64_t>(1, kElementwiseGrain / block), [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      if (s.inner == 1)
        softmax_grad_row<T, kLog>(g + o * block, y + o * block, dx + o * block, s.n);
      else
        softmax_grad_columns<T, kLog>(g + o * block, y + o * block, dx + o * block, s.n, s.inner);
    }
  });
}

// layernorm_grad(g, x, w) -> dx, dw, db, with mean and rstd recomputed from
// x exactly as the forward computes them. Per row, with xhat = (x - mean) *
// rstd and gw = g * w: dx = rstd * (gw - mean(gw) - xhat * mean(gw * xhat));
// over the rows, dw = sum(g * xhat) and db = sum(g). The two row means are
// summed in double, as the forward's statistics are.
//
// Two passes, each split over the device's threads without changing a
// result: rows for dx (keeping each row's mean and rstd), then column ranges
// for dw and db, each column summed over the rows in order.
template <class T>
void layernorm_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  const auto* w = static_cast<const T*>(args.in[2]);
  auto* dx = static_cast<T*>(args.out[0]);
  auto* dw = static_cast<T*>(args.out[1]);
  auto* db = static_cast<T*>(args.out[2]);
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const double eps = args.attrs.get_real("eps", 1e-5);
  T* mean = static_cast<T*>(scratch(2 * static_cast<size_t>(rows) * sizeof(T)));  // (rows,)
  T* rstd = mean + rows;                                                         // (rows,)
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c;
      const T* gr = g + r * c;
      T* dxr = dx + r * c;
      const RowStats st = row_stats(xr, c);
      const T m = static_cast<T>(st.mean), rs = static_cast<T>(1 / std::sqrt(st.var + eps));
      mean[r] = m;
      rstd[r] = rs;
      double sum_gw = 0, sum_gw_xhat = 0;
      for (int64_t i = 0; i < c; ++i) {
        const T xhat = (xr[i] - m) * rs, gw = gr[i] * w[i];
        sum_gw += gw;
        sum_gw_xhat += gw * xhat;
      }
      const T a = static_cast<T>(sum_gw / static_cast<double>(c));
      const T b = static_cast<T>(sum_gw_xhat / static_cast<double>(c));
      for (int64_t i = 0; i < c; ++i) {
        const T xhat = (xr[i] - m) * rs;
        dxr[i] = rs * (gr[i] * w[i] - a - xhat * b);
      }
    }
  });
  // 64 columns (a few cache lines per row) at least per chunk.
  parallel_for(c, std::max<int64_t>(64, kElementwiseGrain / rows), [&](int64_t begin, int64_t end) {
    std::fill(dw + begin, dw + end, T(0));
    std::fill(db + begin, db + end, T(0));
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * c;
      const T* gr = g + r * c;
      const T m = mean[r], rs = rstd[r];
      for (int64_t i = begin; i < end; ++i) {
        dw[i] += gr[i] * ((xr[i] - m) * rs);
        db[i] += gr[i];
      }
    }
  });
}

// rmsnorm_grad(g, x, w) -> dx, dw. Per row, with r = 1 / sqrt(mean(x^2) +
// eps), xhat = x * r and gw = g * w: dx = r * (gw - xhat * mean(gw * xhat));
// over the rows, dw = sum(g * xhat).
template <class T>
void rmsnorm_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  const auto* w = static_cast<const T*>(args.in[2]);
  auto* dx = static_cast<T*>(args.out[0]);
  auto* dw = static_cast<T*>(args.out[1]);
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const double eps = args.attrs.get_real("eps", 1e-6);
  T* rms = static_cast<T*>(scratch(static_cast<size_t>(rows) * sizeof(T)));  // (rows,)
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * c;
      const T* gr = g + r * c;
      T* dxr = dx + r * c;
      double sq = 0;
      for (int64_t i = 0; i < c; ++i) sq += static_cast<double>(xr[i]) * xr[i];
      const T rs = static_cast<T>(1 / std::sqrt(sq / static_cast<double>(c) + eps));
      rms[r] = rs;
      double sum_gw_xhat = 0;
      for (int64_t i = 0; i < c; ++i) sum_gw_xhat += gr[i] * w[i] * (xr[i] * rs);
      const T b = static_cast<T>(sum_gw_xhat / static_cast<double>(c));
      for (int64_t i = 0; i < c; ++i) dxr[i] = rs * (gr[i] * w[i] - xr[i] * rs * b);
    }
  });
  // Each column sums its rows in order, whatever the split.
  parallel_for(c, std::max<int64_t>(64, kElementwiseGrain / rows), [&](int64_t begin, int64_t end) {
    std::fill(dw + begin, dw + end, T(0));
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * c;
      const T* gr = g + r * c;
      const T rs = rms[r];
      for (int64_t i = begin; i < end; ++i) dw[i] += gr[i] * (xr[i] * rs);
    }
  });
}

}  // namespace

void add_norm_grad_kernels(KernelTable& table) {
  table.set_float(OpKind::softmax_grad, softmax_grad<float, false>, softmax_grad<double, false>);
  table.set_float(OpKind::log_softmax_grad, softmax_grad<float, true>, softmax_grad<double, true>);
  table.set_float(OpKind::layernorm_grad, layernorm_grad<float>, layernorm_grad<double>);
  table.set_float(OpKind::rmsnorm_grad, rmsnorm_grad<float>, rmsnorm_grad<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
