// Gradients of conv2d: conv2d_grad_input (GEMM, then col2im) and conv2d_grad_weight (im2col, then GEMM).
#include <algorithm>
#include <cstdint>

#include "backends/cpu/blas.h"
#include "backends/cpu/im2col.h"
#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"

namespace pf::cpu {

namespace {

// g: (N, O, OH, OW), weight: (O, C/groups, kh, kw) -> dx: (N, C, H, W) of
// attribute input_shape, the transposed convolution. Per image and group,
// col (K, OH*OW) = w_g^T (K, O/groups) x g_g (O/groups, OH*OW), K = C/groups
// * kh * kw, and col2im adds each column back onto the window it came from.
template <class T>
void conv2d_grad_input(const KernelArgs& args) {
  const Shape &gs = args.in_types[0].shape, &ws = args.in_types[1].shape, &xs = args.out_types[0].shape;
  const auto* gy = static_cast<const T*>(args.in[0]);
  const auto* weight = static_cast<const T*>(args.in[1]);
  auto* dx = static_cast<T*>(args.out[0]);
  const int64_t groups = args.attrs.get_int("groups", 1);
  const int64_t n = xs[0], c = xs[1], o = ws[0], og = o / groups;
  const ConvGeometry g = conv_geometry(xs, ws, gs, args.attrs);
  const int64_t k = g.rows(), plane = g.plane();
  if (args.out_types[0].numel() == 0) return;
  // A 1x1 kernel with unit stride and no padding: the GEMM writes dx itself.
  const bool direct = g.direct();
  T* col = nullptr;
  if (!direct) {
    col = static_cast<T*>(scratch(static_cast<size_t>(k * plane) * sizeof(T)));
    std::fill_n(dx, args.out_types[0].numel(), T(0));  // col2im adds
  }
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      const T* gg = gy + (img * o + grp * og) * plane;
      T* dxg = dx + (img * c + grp * g.c) * g.h * g.w;
      gemm(true, false, k, plane, og, weight + grp * og * k, k, gg, plane, direct ? dxg : col, plane);
      if (!direct) col2im(col, g, dxg);
    }
  }
}

// g: (N, O, OH, OW), x: (N, C, H, W) -> dw: (O, C/groups, kh, kw) of
// attribute weight_shape. Per group, dw_g (O/groups, K) is the sum over the
// images of g_g (O/groups, OH*OW) x col^T (OH*OW, K), accumulated by BLAS
// (into what dw holds when the kernel is asked to accumulate).
template <class T>
void conv2d_grad_weight(const KernelArgs& args) {
  const Shape &gs = args.in_types[0].shape, &xs = args.in_types[1].shape, &ws = args.out_types[0].shape;
  const auto* gy = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  auto* dw = static_cast<T*>(args.out[0]);
  const int64_t groups = args.attrs.get_int("groups", 1);
  const int64_t n = xs[0], c = xs[1], o = ws[0], og = o / groups;
  const ConvGeometry g = conv_geometry(xs, ws, gs, args.attrs);
  const int64_t k = g.rows(), plane = g.plane();
  if (!args.accumulate) std::fill_n(dw, args.out_types[0].numel(), T(0));  // no images: no gradient
  if (args.out_types[0].numel() == 0) return;
  const bool direct = g.direct();
  T* col = direct ? nullptr : static_cast<T*>(scratch(static_cast<size_t>(k * plane) * sizeof(T)));
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t grp = 0; grp < groups; ++grp) {
      const T* xg = x + (img * c + grp * g.c) * g.h * g.w;
      if (!direct) im2col(xg, g, col);
      gemm_accumulate(false, true, og, k, plane, gy + (img * o + grp * og) * plane, plane, direct ? xg : col, plane,
                      dw + grp * og * k, k);
    }
  }
}

}  // namespace

void add_conv_grad_kernels(KernelTable& table) {
  table.set_float(OpKind::conv2d_grad_input, conv2d_grad_input<float>, conv2d_grad_input<double>);
  table.set_float(OpKind::conv2d_grad_weight, conv2d_grad_weight<float>, conv2d_grad_weight<double>);
}

}  // namespace pf::cpu
