// conv2d (NCHW, groups, stride, padding, optional bias): im2col into reused scratch, a GEMM per image and group.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"

namespace pf::cpu {

namespace {

struct ConvGeometry {
  int64_t c, h, w;  // input channels of one group, height, width
  int64_t kh, kw;   // kernel
  int64_t sh, sw;   // stride
  int64_t ph, pw;   // padding
  int64_t oh, ow;   // output height, width
};

// x: (C/groups, H, W) -> col: (C/groups * kh * kw, OH * OW), zeros where the
// window reads padding. For each kernel offset, the output columns whose
// input column is inside the image form one range [lo, hi), found once.
template <class T>
void im2col(const T* x, const ConvGeometry& g, T* col) {
  const int64_t plane = g.oh * g.ow;
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        T* rows = col + ((c * g.kh + ky) * g.kw + kx) * plane;
        // Input column of output column ox: ox * sw - pw + kx, inside iff in [0, W).
        const int64_t first = g.pw - kx;  // ox * sw must reach this
        const int64_t lo = first <= 0 ? 0 : std::min((first + g.sw - 1) / g.sw, g.ow);
        const int64_t last = g.w - 1 + g.pw - kx;  // ox * sw must not pass this
        const int64_t hi = std::max(lo, last < 0 ? int64_t{0} : std::min(last / g.sw + 1, g.ow));
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          T* r = rows + oy * g.ow;
          const int64_t iy = oy * g.sh - g.ph + ky;
          if (iy < 0 || iy >= g.h) {
            std::fill_n(r, g.ow, T(0));
            continue;
          }
          std::fill_n(r, lo, T(0));
          const T* src = x + (c * g.h + iy) * g.w;
          const int64_t ix0 = lo * g.sw - g.pw + kx;
          if (g.sw == 1)
            std::copy_n(src + ix0, hi - lo, r + lo);
          else
            for (int64_t ox = lo; ox < hi; ++ox) r[ox] = src[ix0 + (ox - lo) * g.sw];
          std::fill_n(r + hi, g.ow - hi, T(0));
        }
      }
    }
  }
}

// x: (N, C, H, W), weight: (O, C/groups, kh, kw), bias: (O,), y: (N, O, OH, OW).
// Per image and group, y_g (O/groups, OH*OW) = w_g (O/groups, K) x col (K, OH*OW)
// with K = C/groups * kh * kw.
template <class T>
void conv2d(const KernelArgs& args) {
  const Shape &xs = args.in_types[0].shape, &ws = args.in_types[1].shape, &ys = args.out_types[0].shape;
  const auto* x = static_cast<const T*>(args.in[0]);
  const auto* weight = static_cast<const T*>(args.in[1]);
  const T* bias = args.in.size() == 3 ? static_cast<const T*>(args.in[2]) : nullptr;
  auto* y = static_cast<T*>(args.out[0]);
  const std::vector<int64_t> stride = args.attrs.get_ints("stride", {1, 1});
  const std::vector<int64_t> pad = args.attrs.get_ints("padding", {0, 0});
  const int64_t groups = args.attrs.get_int("groups", 1);
  const int64_t n = xs[0], c = xs[1], o = ws[0], og = o / groups;
  const ConvGeometry g{ws[1], xs[2], xs[3], ws[2], ws[3], stride[0], stride[1], pad[0], pad[1], ys[2], ys[3]};
  const int64_t k = g.c * g.kh * g.kw, plane = g.oh * g.ow;
  if (args.out_types[0].numel() == 0) return;
  // A 1x1 kernel with unit stride and no padding reads the input as it is.
  const bool direct = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0;
  T* col = direct ? nullptr : static_cast<T*>(scratch(static_cast<size_t>(k * plane) * sizeof(T)));
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      const T* xg = x + (img * c + grp * g.c) * g.h * g.w;
      if (!direct) im2col(xg, g, col);
      T* yg = y + (img * o + grp * og) * plane;
      gemm(false, false, og, plane, k, weight + grp * og * k, k, direct ? xg : col, plane, yg, plane);
      if (bias)
        for (int64_t oc = 0; oc < og; ++oc) {
          const T bv = bias[grp * og + oc];
          T* row = yg + oc * plane;
          for (int64_t i = 0; i < plane; ++i) row[i] += bv;
        }
    }
  }
}

}  // namespace

void add_conv_kernels(KernelTable& table) { table.set_float(OpKind::conv2d, conv2d<float>, conv2d<double>); }

}  // namespace pf::cpu
