// Gradients of 2-D pooling over NCHW: max_pool2d_grad (to the first maximum) and avg_pool2d_grad (spread evenly).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cpu/kernel_table.h"

namespace pf::cpu {

namespace {

// The window of one output along one axis: input indices [lo, hi), clipped to the input.
struct Span {
  int64_t lo, hi;
};

Span window(int64_t out, int64_t kernel, int64_t stride, int64_t pad, int64_t size) {
  const int64_t start = out * stride - pad;
  return {std::max<int64_t>(start, 0), std::min(start + kernel, size)};
}

// g: (N, C, OH, OW), x: (N, C, H, W) -> dx: (N, C, H, W). Each output's
// gradient goes to the first element of its window, in row-major order, that
// the forward took as the maximum: compares are strict (`>`), starting from
// -inf as the forward does, so ties go to the first and NaN never wins; a
// window of -inf and NaN only gives its gradient to its first element.
// Overlapping windows add.
template <class T>
void max_pool2d_grad(const KernelArgs& args) {
  const Shape &gs = args.in_types[0].shape, &xs = args.in_types[1].shape;
  const auto* gy = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  auto* dx = static_cast<T*>(args.out[0]);
  const std::vector<int64_t> k = args.attrs.get_ints("kernel", {1, 1});
  const std::vector<int64_t> s = args.attrs.get_ints("stride", k);
  const std::vector<int64_t> p = args.attrs.get_ints("padding", {0, 0});
  const int64_t planes = xs[0] * xs[1], h = xs[2], w = xs[3], oh = gs[2], ow = gs[3];
  std::fill_n(dx, args.out_types[0].numel(), T(0));
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * h * w;
    const T* gp = gy + pl * oh * ow;
    T* dp = dx + pl * h * w;
    for (int64_t oy = 0; oy < oh; ++oy) {
      const Span rows = window(oy, k[0], s[0], p[0], h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Span cols = window(ox, k[1], s[1], p[1], w);
        if (rows.lo >= rows.hi || cols.lo >= cols.hi) continue;  // a window of padding only
        int64_t best = rows.lo * w + cols.lo;
        T max = -std::numeric_limits<T>::infinity();
        for (int64_t iy = rows.lo; iy < rows.hi; ++iy)
          for (int64_t ix = cols.lo; ix < cols.hi; ++ix)
            if (xp[iy * w + ix] > max) {
              max = xp[iy * w + ix];
              best = iy * w + ix;
            }
        dp[best] += gp[oy * ow + ox];
      }
    }
  }
}

// g: (N, C, OH, OW) -> dx: (N, C, H, W) of attribute input_shape. Each
// output's gradient is spread as g / (kh * kw) over the inside of its window:
// the forward divides by the whole window, padding included.
template <class T>
void avg_pool2d_grad(const KernelArgs& args) {
  const Shape &gs = args.in_types[0].shape, &xs = args.out_types[0].shape;
  const auto* gy = static_cast<const T*>(args.in[0]);
  auto* dx = static_cast<T*>(args.out[0]);
  const std::vector<int64_t> k = args.attrs.get_ints("kernel", {1, 1});
  const std::vector<int64_t> s = args.attrs.get_ints("stride", k);
  const std::vector<int64_t> p = args.attrs.get_ints("padding", {0, 0});
  const int64_t planes = xs[0] * xs[1], h = xs[2], w = xs[3], oh = gs[2], ow = gs[3];
  const T inv_window = T(1) / static_cast<T>(k[0] * k[1]);
  std::fill_n(dx, args.out_types[0].numel(), T(0));
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* gp = gy + pl * oh * ow;
    T* dp = dx + pl * h * w;
    for (int64_t oy = 0; oy < oh; ++oy) {
      const Span rows = window(oy, k[0], s[0], p[0], h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const Span cols = window(ox, k[1], s[1], p[1], w);
        const T share = gp[oy * ow + ox] * inv_window;
        for (int64_t iy = rows.lo; iy < rows.hi; ++iy)
          for (int64_t ix = cols.lo; ix < cols.hi; ++ix) dp[iy * w + ix] += share;
      }
    }
  }
}

}  // namespace

void add_pool_grad_kernels(KernelTable& table) {
  table.set_float(OpKind::max_pool2d_grad, max_pool2d_grad<float>, max_pool2d_grad<double>);
  table.set_float(OpKind::avg_pool2d_grad, avg_pool2d_grad<float>, avg_pool2d_grad<double>);
}

}  // namespace pf::cpu
