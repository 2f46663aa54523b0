// Reductions over a set of axes, with or without keepdims: reduce_sum, reduce_mean, reduce_max.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"

namespace pf::cpu {

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

// The input walked as an elementwise op whose "result" is the input and whose
// second operand is the output with the reduced axes kept as 1: the plan then
// gives the output stride 0 along reduced axes, and merges runs of reduced
// (or of kept) axes. Each row of the walk is either reduced to one value
// (output stride 0: row sums) or folded into a run of outputs (stride 1:
// column sums such as a bias gradient over [B*T, C]).
template <class T, class Op, bool kMean>
void reduce(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const TensorType& t = args.in_types[0];
  Shape kept = t.shape;
  int64_t count = 1;
  for (int64_t a : args.attrs.get_ints("axes", {})) {
    const int64_t axis = normalize_axis(a, t.rank());
    count *= kept[axis];
    kept[axis] = 1;
  }
  const int64_t outputs = args.out_types[0].numel();
  std::fill_n(y, outputs, Op::template identity<T>());
  if (t.numel() > 0) {
    const Shape* operands[] = {&t.shape, &kept};
    const BroadcastPlan plan = plan_broadcast(t.shape, operands);
    const int64_t n = plan.dims.back();
    const bool folds_row = plan.strides[1].back() == 0;
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
  if constexpr (kMean) {
    // An empty reduction gives 0 / 0 = NaN, the mean of nothing.
    const T scale = T(1) / static_cast<T>(count);
    for (int64_t i = 0; i < outputs; ++i) y[i] *= scale;
  }
}

}  // namespace

void add_reduction_kernels(KernelTable& table) {
  table.set_float(OpKind::reduce_sum, reduce<float, Sum, false>, reduce<double, Sum, false>);
  table.set_float(OpKind::reduce_mean, reduce<float, Sum, true>, reduce<double, Sum, true>);
  table.set_float(OpKind::reduce_max, reduce<float, Max, false>, reduce<double, Max, false>);
}

}  // namespace pf::cpu
