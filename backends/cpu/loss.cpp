// Losses to a scalar: cross_entropy (with ignore_index) and mse_loss.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/vector_math.h"
#include "ir/diagnostic.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

// -log_softmax(row)[target] = log(sum(exp(row - max))) + max - row[target].
template <class T>
double nll_of_row(const T* row, int64_t v, int64_t target) {
  const T m = max_of(row, v);
  T s = 0;
  for (int64_t i = 0; i < v; ++i) s += std::exp(row[i] - m);
  return std::log(static_cast<double>(s)) + static_cast<double>(m) - static_cast<double>(row[target]);
}

// logits (..., V), targets (...) of i32 or i64: the mean over the targets
// that are not ignore_index (default -100, as in PyTorch); 0 when none count.
// Targets are checked first; then the rows' losses are computed apart (split
// over the device's threads) and summed in row order, so the split never
// changes the result.
template <class T, class Target>
T cross_entropy_of(const T* logits, const Target* targets, int64_t rows, int64_t v, int64_t ignore) {
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto t = static_cast<int64_t>(targets[r]);
    if (t == ignore) continue;
    if (t < 0 || t >= v)
      throw Error(fmt::format("cross_entropy: target {} at position {} is out of range [0, {})", t, r, v));
    ++counted;
  }
  auto* nll = static_cast<double*>(scratch(static_cast<size_t>(rows) * sizeof(double)));  // (rows,)
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(v, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const auto t = static_cast<int64_t>(targets[r]);
      nll[r] = t == ignore ? 0.0 : nll_of_row(logits + r * v, v, t);
    }
  });
  double total = 0;
  for (int64_t r = 0; r < rows; ++r)
    if (static_cast<int64_t>(targets[r]) != ignore) total += nll[r];
  return counted == 0 ? T(0) : static_cast<T>(total / static_cast<double>(counted));
}

template <class T>
void cross_entropy(const KernelArgs& args) {
  const auto* logits = static_cast<const T*>(args.in[0]);
  const int64_t v = args.in_types[0].shape.back();
  const int64_t rows = args.in_types[1].numel();
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  auto* loss = static_cast<T*>(args.out[0]);
  if (args.in_types[1].dtype == DType::i32)
    *loss = cross_entropy_of(logits, static_cast<const int32_t*>(args.in[1]), rows, v, ignore);
  else
    *loss = cross_entropy_of(logits, static_cast<const int64_t*>(args.in[1]), rows, v, ignore);
}

// mean((a - b)^2), summed in double; 0 for empty inputs, like cross_entropy
// with nothing counted.
template <class T>
void mse_loss(const KernelArgs& args) {
  const auto* a = static_cast<const T*>(args.in[0]);
  const auto* b = static_cast<const T*>(args.in[1]);
  const int64_t n = args.in_types[0].numel();
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    total += d * d;
  }
  *static_cast<T*>(args.out[0]) = n == 0 ? T(0) : static_cast<T>(total / static_cast<double>(n));
}

}  // namespace

void add_loss_kernels(KernelTable& table) {
  table.set_float(OpKind::cross_entropy, cross_entropy<float>, cross_entropy<double>);
  table.set_float(OpKind::mse_loss, mse_loss<float>, mse_loss<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
