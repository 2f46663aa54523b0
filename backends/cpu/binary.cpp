// Elementwise binary kernels with NumPy broadcasting: add, sub, mul, div, and where(cond, a, b).
#include <algorithm>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

// The operations, as captureless lambdas: each kernel below is instantiated
// with one of their types.
constexpr auto kAdd = [](auto a, auto b) { return a + b; };
constexpr auto kSub = [](auto a, auto b) { return a - b; };
constexpr auto kMul = [](auto a, auto b) { return a * b; };
constexpr auto kDiv = [](auto a, auto b) { return a / b; };

// One row of a plan: the last dimension's strides are 0 or 1, so it is one
// of four loops, each of which the compiler vectorises.
template <class T, class F>
void binary_row(const T* ar, bool a_runs, const T* br, bool b_runs, T* cr, int64_t n) {
  F f;
  if (a_runs && b_runs) {
    for (int64_t i = 0; i < n; ++i) cr[i] = f(ar[i], br[i]);
  } else if (a_runs) {
    const T bv = *br;
    for (int64_t i = 0; i < n; ++i) cr[i] = f(ar[i], bv);
  } else if (b_runs) {
    const T av = *ar;
    for (int64_t i = 0; i < n; ++i) cr[i] = f(av, br[i]);
  } else {
    std::fill_n(cr, n, f(*ar, *br));
  }
}

// c = f(a, b) over a plan's rows. Same shapes (one flat loop) and plans of
// at most two dimensions (a bias over [rows, C], a mask over [B*H, T*T])
// are split over the device's threads; deeper plans walk their rows in order.
// Every element is computed alone, so the split never changes a result.
template <class T, class F>
void binary(const KernelArgs& args) {
  const auto* a = static_cast<const T*>(args.in[0]);
  const auto* b = static_cast<const T*>(args.in[1]);
  auto* c = static_cast<T*>(args.out[0]);
  const Shape& shape = args.out_types[0].shape;
  const int64_t total = args.out_types[0].numel();
  if (total == 0) return;
  // The common case needs no plan.
  if (args.in_types[0].shape == shape && args.in_types[1].shape == shape) {
    parallel_for(total, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      binary_row<T, F>(a + begin, true, b + begin, true, c + begin, end - begin);
    });
    return;
  }
  const Shape* operands[] = {&args.in_types[0].shape, &args.in_types[1].shape};
  const BroadcastPlan plan = plan_broadcast(shape, operands);
  const int64_t n = plan.dims.back();
  const bool a_runs = plan.strides[0].back() != 0, b_runs = plan.strides[1].back() != 0;
  if (plan.dims.size() == 1) {
    // One run against a scalar (scores * scale): split the run itself.
    parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
      binary_row<T, F>(a + (a_runs ? begin : 0), a_runs, b + (b_runs ? begin : 0), b_runs, c + begin, end - begin);
    });
    return;
  }
  if (plan.dims.size() == 2) {
    const int64_t sa = plan.dims.size() == 2 ? plan.strides[0][0] : 0;
    const int64_t sb = plan.dims.size() == 2 ? plan.strides[1][0] : 0;
    parallel_for(total / n, std::max<int64_t>(1, kElementwiseGrain / n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) binary_row<T, F>(a + r * sa, a_runs, b + r * sb, b_runs, c + r * n, n);
    });
    return;
  }
  for (RowWalk w(plan); !w.done(); w.next())
    binary_row<T, F>(a + w.offset(0), a_runs, b + w.offset(1), b_runs, c + w.row() * n, n);
}

// where(cond: bool, a, b): a where cond else b, all three broadcast.
template <class T>
void where(const KernelArgs& args) {
  const auto* cond = static_cast<const uint8_t*>(args.in[0]);  // bools are stored as bytes 0/1
  const auto* a = static_cast<const T*>(args.in[1]);
  const auto* b = static_cast<const T*>(args.in[2]);
  auto* y = static_cast<T*>(args.out[0]);
  const Shape& shape = args.out_types[0].shape;
  if (args.out_types[0].numel() == 0) return;
  const Shape* operands[] = {&args.in_types[0].shape, &args.in_types[1].shape, &args.in_types[2].shape};
  const BroadcastPlan plan = plan_broadcast(shape, operands);
  const int64_t n = plan.dims.back();
  const int64_t sc = plan.strides[0].back(), sa = plan.strides[1].back(), sb = plan.strides[2].back();
  auto row = [&](const uint8_t* cr, const T* ar, const T* br, T* yr) {
    if (sc && sa && sb) {
      for (int64_t i = 0; i < n; ++i) yr[i] = cr[i] ? ar[i] : br[i];
    } else if (sc && !sa && !sb) {
      // A mask against two scalars (masked_fill with a constant).
      const T av = *ar, bv = *br;
      for (int64_t i = 0; i < n; ++i) yr[i] = cr[i] ? av : bv;
    } else if (sc && sa && !sb) {
      const T bv = *br;
      for (int64_t i = 0; i < n; ++i) yr[i] = cr[i] ? ar[i] : bv;
    } else {
      for (int64_t i = 0; i < n; ++i) yr[i] = cr[i * sc] ? ar[i * sa] : br[i * sb];
    }
  };
  if (plan.dims.size() <= 2) {
    // A mask over [B*H, T*T]: rows are split over the device's threads.
    const bool two = plan.dims.size() == 2;
    const int64_t rc = two ? plan.strides[0][0] : 0, ra = two ? plan.strides[1][0] : 0;
    const int64_t rb = two ? plan.strides[2][0] : 0;
    const int64_t rows = args.out_types[0].numel() / n;
    parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) row(cond + r * rc, a + r * ra, b + r * rb, y + r * n);
    });
    return;
  }
  for (RowWalk w(plan); !w.done(); w.next()) row(cond + w.offset(0), a + w.offset(1), b + w.offset(2), y + w.row() * n);
}

}  // namespace

void add_binary_kernels(KernelTable& table) {
  table.set_float(OpKind::add, binary<float, decltype(kAdd)>, binary<double, decltype(kAdd)>);
  table.set_float(OpKind::sub, binary<float, decltype(kSub)>, binary<double, decltype(kSub)>);
  table.set_float(OpKind::mul, binary<float, decltype(kMul)>, binary<double, decltype(kMul)>);
  table.set_float(OpKind::div, binary<float, decltype(kDiv)>, binary<double, decltype(kDiv)>);
  table.set_float(OpKind::where, where<float>, where<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
