// Gradient of cross_entropy: softmax of the logits minus the one-hot target, scaled by g over the counted targets.
#include <fmt/format.h>

#include <algorithm>
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

// logits (rows, V), targets (rows) -> dlogits (rows, V). The forward is the
// mean over the counted targets (those that are not ignore_index), so each
// counted row gets g / count * (softmax(row) - onehot(target)) and an
// ignored row gets zeros; with nothing counted the forward is the constant 0
// and the gradient is all zeros. Targets are checked before anything is written.
template <class T, class Target>
void cross_entropy_grad_of(T g, const T* logits, const Target* targets, int64_t rows, int64_t v, int64_t ignore,
                           T* dx) {
  int64_t counted = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto t = static_cast<int64_t>(targets[r]);
    if (t == ignore) continue;
    if (t < 0 || t >= v)
      throw Error(fmt::format("cross_entropy_grad: target {} at position {} is out of range [0, {})", t, r, v));
    ++counted;
  }
  const T scale = counted == 0 ? T(0) : static_cast<T>(static_cast<double>(g) / static_cast<double>(counted));
  // Rows are independent: split over the device's threads.
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(v, 1));
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const auto t = static_cast<int64_t>(targets[r]);
      const T* row = logits + r * v;
      T* d = dx + r * v;
      if (t == ignore) {
        std::fill_n(d, v, T(0));
        continue;
      }
      // Shifted by the row's maximum so exp never overflows, as in the forward.
      const T m = max_of(row, v);
      T s = 0;
      for (int64_t i = 0; i < v; ++i) {
        d[i] = std::exp(row[i] - m);
        s += d[i];
      }
      const T r_scale = scale / s;
      for (int64_t i = 0; i < v; ++i) d[i] *= r_scale;
      d[t] -= scale;
    }
  });
}

template <class T>
void cross_entropy_grad(const KernelArgs& args) {
  const T g = *static_cast<const T*>(args.in[0]);
  const auto* logits = static_cast<const T*>(args.in[1]);
  const int64_t v = args.in_types[1].shape.back();
  const int64_t rows = args.in_types[2].numel();
  const int64_t ignore = args.attrs.get_int("ignore_index", -100);
  auto* dx = static_cast<T*>(args.out[0]);
  if (args.in_types[2].dtype == DType::i32)
    cross_entropy_grad_of(g, logits, static_cast<const int32_t*>(args.in[2]), rows, v, ignore, dx);
  else
    cross_entropy_grad_of(g, logits, static_cast<const int64_t*>(args.in[2]), rows, v, ignore, dx);
}

}  // namespace

void add_loss_grad_kernels(KernelTable& table) {
  table.set_float(OpKind::cross_entropy_grad, cross_entropy_grad<float>, cross_entropy_grad<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
