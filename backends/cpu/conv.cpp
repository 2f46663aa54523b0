// conv2d (NCHW, groups, stride, padding, optional bias): im2col into reused scratch, a GEMM per image and group.
#include <cstdint>

#include "backends/cpu/blas.h"
#include "backends/cpu/im2col.h"
#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"

namespace pf::cpu {

namespace {

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
  const int64_t groups = args.attrs.get_int("groups", 1);
  const int64_t n = xs[0], c = xs[1], o = ws[0], og = o / groups;
  const ConvGeometry g = conv_geometry(xs, ws, ys, args.attrs);
  const int64_t k = g.rows(), plane = g.plane();
  if (args.out_types[0].numel() == 0) return;
  // A 1x1 kernel with unit stride and no padding reads the input as it is.
  const bool direct = g.direct();
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
