// Reductions over axes (reduce_sum, reduce_mean, reduce_max), sum_to (adjoint of broadcast_to), reduce_max_grad.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

struct Sum {
  template <class T>
  static T identity() {
    return T(0);
  }
  template <class T>
  static T combine(T acc, T x) {
    return acc + x;
  }
  template <class T>
  static T fold(const T* x, int64_t n) {
    T acc = 0;
    for (int64_t i = 0; i < n; ++i) acc += x[i];
    return acc;
  }
};
struct Max {
  template <class T>
  static T identity() {
    return -std::numeric_limits<T>::infinity();
  }
  template <class T>
  static T combine(T acc, T x) {
    return x > acc ? x : acc;
  }
  template <class T>
  static T fold(const T* x, int64_t n) {
    return max_of(x, n);
  }
};

// x's shape with each axis of `axes` set to 1: the layout of the result with
// or without keepdims (dropping size-1 axes moves no element).
Shape kept_shape(const Shape& shape, const std::vector<int64_t>& axes) {
  Shape kept = shape;
  for (int64_t a : axes) kept[normalize_axis(a, static_cast<int64_t>(shape.size()))] = 1;
  return kept;
}

// The input walked as an elementwise op whose "result" is the input and whose
// second operand is the output with the reduced axes kept as 1: the plan then
// gives the output stride 0 along reduced axes, and merges runs of reduced
// (or of kept) axes. Each row of the walk is either reduced to one value
// (output stride 0: row sums) or folded into a run of outputs (stride 1:
// column sums such as a bias gradient over [B*T, C]).
template <class T, class Op>
void reduce_into(const T* x, const TensorType& t, const Shape& kept, T* y, int64_t outputs) {
  std::fill_n(y, outputs, Op::template identity<T>());
  if (t.numel() == 0) return;
  const Shape* operands[] = {&t.shape, &kept};
  const BroadcastPlan plan = plan_broadcast(t.shape, operands);
  const int64_t n = plan.dims.back();
  const bool folds_row = plan.strides[1].back() == 0;
  if (plan.dims.size() == 2 && !folds_row && plan.strides[1][0] == 0) {
    // Column sums of [rows, n] (a bias gradient): ranges of columns are
    // split over the device's threads, each column still summed over the
    // rows in order, so the split never changes a result.
    const int64_t rows = plan.dims[0], sx = plan.strides[0][0];
    parallel_for(n, std::max<int64_t>(64, kElementwiseGrain / rows), [&](int64_t begin, int64_t end) {
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t i = begin; i < end; ++i) y[i] = Op::combine(y[i], x[r * sx + i]);
    });
    return;
  }
  if (plan.dims.size() == 2 && folds_row && plan.strides[1][0] == 1) {
    // Row sums of [rows, n]: each row is folded alone, rows split over threads.
    const int64_t sx = plan.strides[0][0];
    parallel_for(plan.dims[0], std::max<int64_t>(1, kElementwiseGrain / n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) y[r] = Op::combine(y[r], Op::fold(x + r * sx, n));
    });
    return;
  }
  for (RowWalk w(plan); !w.done(); w.next()) {
    const T* xr = x + w.offset(0);
    T* yr = y + w.offset(1);
    if (folds_row) {
      *yr = Op::combine(*yr, Op::fold(xr, n));
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] = Op::combine(yr[i], xr[i]);
    }
  }
}

template <class T, class Op, bool kMean>
void reduce(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const TensorType& t = args.in_types[0];
  const Shape kept = kept_shape(t.shape, args.attrs.get_ints("axes", {}));
  const int64_t outputs = args.out_types[0].numel();
  reduce_into<T, Op>(x, t, kept, y, outputs);
  if constexpr (kMean) {
    int64_t count = 1;
    for (int64_t a : args.attrs.get_ints("axes", {})) count *= t.shape[normalize_axis(a, t.rank())];
    // An empty reduction gives 0 / 0 = NaN, the mean of nothing.
    const T scale = T(1) / static_cast<T>(count);
    for (int64_t i = 0; i < outputs; ++i) y[i] *= scale;
  }
}

// sum_to(shape): the sum over the axes that broadcasting `shape` to x
// expands. `shape` padded on the left with 1s to x's rank is the kept shape,
// and has the result's layout.
template <class T>
void sum_to(const KernelArgs& args) {
  const TensorType& t = args.in_types[0];
  const Shape& target = args.out_types[0].shape;
  Shape kept(t.shape.size() - target.size(), 1);
  kept.insert(kept.end(), target.begin(), target.end());
  reduce_into<T, Sum>(static_cast<const T*>(args.in[0]), t, kept, static_cast<T*>(args.out[0]),
                      args.out_types[0].numel());
}

// reduce_max_grad(g, x, y): each element of x equal to its group's maximum y
// gets g / (the number of elements equal to it), as PyTorch's amax; the
// others get 0. g and y have the kept layout, walked as in reduce_into. A
// group whose maximum no element equals (a NaN maximum) gets no gradient: its
// share, g / 0, is never selected.
template <class T>
void reduce_max_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  const auto* y = static_cast<const T*>(args.in[2]);
  auto* dx = static_cast<T*>(args.out[0]);
  const TensorType& t = args.in_types[1];
  if (t.numel() == 0) return;
  const Shape kept = kept_shape(t.shape, args.attrs.get_ints("axes", {}));
  const int64_t outputs = args.in_types[2].numel();
  auto* ties = static_cast<int64_t*>(scratch(static_cast<size_t>(outputs) * sizeof(int64_t)));  // per group
  std::fill_n(ties, outputs, int64_t{0});
  const Shape* operands[] = {&t.shape, &kept};
  const BroadcastPlan plan = plan_broadcast(t.shape, operands);
  const int64_t n = plan.dims.back();
  const bool folds_row = plan.strides[1].back() == 0;
  for (RowWalk w(plan); !w.done(); w.next()) {
    const T* xr = x + w.offset(0);
    const T* yr = y + w.offset(1);
    int64_t* tr = ties + w.offset(1);
    if (folds_row) {
      int64_t count = 0;
      for (int64_t i = 0; i < n; ++i) count += xr[i] == *yr;
      *tr += count;
    } else {
      for (int64_t i = 0; i < n; ++i) tr[i] += xr[i] == yr[i];
    }
  }
  for (RowWalk w(plan); !w.done(); w.next()) {
    const T* xr = x + w.offset(0);
    const T* yr = y + w.offset(1);
    const T* gr = g + w.offset(1);
    const int64_t* tr = ties + w.offset(1);
    T* dxr = dx + w.offset(0);
    if (folds_row) {
      const T m = *yr, share = *gr / static_cast<T>(*tr);
      for (int64_t i = 0; i < n; ++i) dxr[i] = xr[i] == m ? share : T(0);
    } else {
      for (int64_t i = 0; i < n; ++i) dxr[i] = xr[i] == yr[i] ? gr[i] / static_cast<T>(tr[i]) : T(0);
    }
  }
}

}  // namespace

void add_reduction_kernels(KernelTable& table) {
  table.set_float(OpKind::reduce_sum, reduce<float, Sum, false>, reduce<double, Sum, false>);
  table.set_float(OpKind::reduce_mean, reduce<float, Sum, true>, reduce<double, Sum, true>);
  table.set_float(OpKind::reduce_max, reduce<float, Max, false>, reduce<double, Max, false>);
  table.set_float(OpKind::sum_to, sum_to<float>, sum_to<double>);
  table.set_float(OpKind::reduce_max_grad, reduce_max_grad<float>, reduce_max_grad<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
