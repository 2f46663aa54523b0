// 2-D pooling over NCHW: max_pool2d (padding never wins) and avg_pool2d (padding counts as zeros).
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "backends/cpu/kernel_table.h"

namespace pf::cpu {

namespace {

// x: (N, C, H, W) -> y: (N, C, OH, OW); stride defaults to the kernel, padding to 0.
template <class T, bool kMax>
void pool2d(const KernelArgs& args) {
  const Shape &xs = args.in_types[0].shape, &ys = args.out_types[0].shape;
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const std::vector<int64_t> k = args.attrs.get_ints("kernel", {1, 1});
  const std::vector<int64_t> s = args.attrs.get_ints("stride", k);
  const std::vector<int64_t> p = args.attrs.get_ints("padding", {0, 0});
  const int64_t planes = xs[0] * xs[1], h = xs[2], w = xs[3], oh = ys[2], ow = ys[3];
  // avg divides by the whole window, padding included (count_include_pad).
  const T inv_window = T(1) / static_cast<T>(k[0] * k[1]);
  for (int64_t pl = 0; pl < planes; ++pl) {
    const T* xp = x + pl * h * w;
    T* yp = y + pl * oh * ow;
    for (int64_t oy = 0; oy < oh; ++oy) {
      const int64_t y0 = oy * s[0] - p[0];
      const int64_t ylo = std::max<int64_t>(y0, 0), yhi = std::min(y0 + k[0], h);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t x0 = ox * s[1] - p[1];
        const int64_t xlo = std::max<int64_t>(x0, 0), xhi = std::min(x0 + k[1], w);
        T acc = kMax ? -std::numeric_limits<T>::infinity() : T(0);
        for (int64_t iy = ylo; iy < yhi; ++iy)
          for (int64_t ix = xlo; ix < xhi; ++ix) {
            const T v = xp[iy * w + ix];
            if constexpr (kMax)
              acc = v > acc ? v : acc;
            else
              acc += v;
          }
        yp[oy * ow + ox] = kMax ? acc : acc * inv_window;
      }
    }
  }
}

}  // namespace

void add_pool_kernels(KernelTable& table) {
  table.set_float(OpKind::max_pool2d, pool2d<float, true>, pool2d<double, true>);
  table.set_float(OpKind::avg_pool2d, pool2d<float, false>, pool2d<double, false>);
}

}  // namespace pf::cpu
