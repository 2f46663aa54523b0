// Elementwise binary kernels with NumPy broadcasting: add, sub, mul, div, and where(cond, a, b).
#include <algorithm>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"

namespace pf::cpu {

namespace {

// The operations, as captureless lambdas: each kernel below is instantiated
// with one of their types.
constexpr auto kAdd = [](auto a, auto b) { return a + b; };
constexpr auto kSub = [](auto a, auto b) { return a - b; };
constexpr auto kMul = [](auto a, auto b) { return a * b; };
constexpr auto kDiv = [](auto a, auto b) { return a / b; };

// c = f(a, b) over a plan's rows. The last dimension's strides are 0 or 1,
// so each row is one of four loops, each of which the compiler vectorises.
template <class T, class F>
void binary(const KernelArgs& args) {
  const auto* a = static_cast<const T*>(args.in[0]);
  const auto* b = static_cast<const T*>(args.in[1]);
  auto* c = static_cast<T*>(args.out[0]);
  const Shape& shape = args.out_types[0].shape;
  const int64_t total = args.out_types[0].numel();
  if (total == 0) return;
  F f;
  // The common case needs no plan.
  if (args.in_types[0].shape == shape && args.in_types[1].shape == shape) {
    for (int64_t i = 0; i < total; ++i) c[i] = f(a[i], b[i]);
    return;
  }
  const Shape* operands[] = {&args.in_types[0].shape, &args.in_types[1].shape};
  const BroadcastPlan plan = plan_broadcast(shape, operands);
  const int64_t n = plan.dims.back();
  const bool a_runs = plan.strides[0].back() != 0, b_runs = plan.strides[1].back() != 0;
  for (RowWalk w(plan); !w.done(); w.next()) {
    const T* ar = a + w.offset(0);
    const T* br = b + w.offset(1);
    T* cr = c + w.row() * n;
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
  for (RowWalk w(plan); !w.done(); w.next()) {
    const uint8_t* cr = cond + w.offset(0);
    const T* ar = a + w.offset(1);
    const T* br = b + w.offset(2);
    T* yr = y + w.row() * n;
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
  }
}

}  // namespace

void add_binary_kernels(KernelTable& table) {
  table.set_float(OpKind::add, binary<float, decltype(kAdd)>, binary<double, decltype(kAdd)>);
  table.set_float(OpKind::sub, binary<float, decltype(kSub)>, binary<double, decltype(kSub)>);
  table.set_float(OpKind::mul, binary<float, decltype(kMul)>, binary<double, decltype(kMul)>);
  table.set_float(OpKind::div, binary<float, decltype(kDiv)>, binary<double, decltype(kDiv)>);
  table.set_float(OpKind::where, where<float>, where<double>);
}

}  // namespace pf::cpu
