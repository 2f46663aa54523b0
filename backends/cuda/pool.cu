// 2-D pooling over NCHW (max: padding never wins; avg: padding counts as zeros) and their gradients, as gathers without atomics (f32).
#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"

namespace pf::cuda {

namespace {

struct PoolGeometry {
  int64_t planes, h, w, oh, ow;
  int64_t kh, kw, sh, sw, ph, pw;
};

// stride defaults to the kernel, padding to 0; `x` is the input's shape, `y` the output's.
PoolGeometry geometry(const KernelArgs& args, const Shape& x, const Shape& y) {
  const std::vector<int64_t> k = args.attrs.get_ints("kernel", {1, 1});
  const std::vector<int64_t> s = args.attrs.get_ints("stride", k);
  const std::vector<int64_t> p = args.attrs.get_ints("padding", {0, 0});
  return {x[0] * x[1], x[2], x[3], y[2], y[3], k[0], k[1], s[0], s[1], p[0], p[1]};
}

struct Window {
  int64_t ylo, yhi, xlo, xhi;  // input rows [ylo, yhi) and columns [xlo, xhi), clipped
};

__device__ __forceinline__ Window window_of(const PoolGeometry& g, int64_t oy, int64_t ox) {
  const int64_t y0 = oy * g.sh - g.ph, x0 = ox * g.sw - g.pw;
  return {y0 > 0 ? y0 : 0, y0 + g.kh < g.h ? y0 + g.kh : g.h, x0 > 0 ? x0 : 0, x0 + g.kw < g.w ? x0 + g.kw : g.w};
}

template <bool kMax>
__global__ void pool_kernel(const float* x, float* y, PoolGeometry g, float inv_window) {
  PF_GRID_STRIDE(f, g.planes * g.oh * g.ow) {
    const int64_t pl = f / (g.oh * g.ow), rem = f - pl * g.oh * g.ow, oy = rem / g.ow, ox = rem - oy * g.ow;
    const float* xp = x + pl * g.h * g.w;
    const Window win = window_of(g, oy, ox);
    float acc = kMax ? -INFINITY : 0.f;
    for (int64_t iy = win.ylo; iy < win.yhi; ++iy)
      for (int64_t ix = win.xlo; ix < win.xhi; ++ix) {
        const float v = xp[iy * g.w + ix];
        acc = kMax ? (v > acc ? v : acc) : acc + v;
      }
    y[f] = kMax ? acc : acc * inv_window;
  }
}

template <bool kMax>
void pool(const KernelArgs& args, const LaunchContext& ctx) {
  const PoolGeometry g = geometry(args, args.in_types[0].shape, args.out_types[0].shape);
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  // avg divides by the whole window, padding included (count_include_pad).
  pool_kernel<kMax><<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const float*>(args.in[0]),
                                                                  static_cast<float*>(args.out[0]), g,
                                                                  1.f / static_cast<float>(g.kh * g.kw));
  PF_CUDA_CHECK_LAUNCH();
}

// The outputs along one axis whose window holds input index i: [lo, hi).
__device__ __forceinline__ void outputs_covering(int64_t i, int64_t k, int64_t s, int64_t p, int64_t out, int64_t* lo,
                                                 int64_t* hi) {
  // o * s - p <= i  and  i < o * s - p + k
  const int64_t first = i + p - k + 1;
  *lo = first <= 0 ? 0 : (first + s - 1) / s;
  const int64_t last = (i + p) / s + 1;
  *hi = last < out ? last : out;
}

// Each input element gathers the gradients of the outputs that took it as
// their maximum: the first element of the window, in row-major order, that
// beats everything before it (compares strict, from -inf, as the forward),
// or the window's first element when none does. Windows of padding only
// give nothing. Overlapping windows add, in output order: deterministic.
__global__ void max_pool_grad_kernel(const float* gy, const float* x, float* dx, PoolGeometry g) {
  PF_GRID_STRIDE(f, g.planes * g.h * g.w) {
    const int64_t pl = f / (g.h * g.w), rem = f - pl * g.h * g.w, iy = rem / g.w, ix = rem - iy * g.w;
    const float* xp = x + pl * g.h * g.w;
    const float* gp = gy + pl * g.oh * g.ow;
    int64_t oy_lo, oy_hi, ox_lo, ox_hi;
    outputs_covering(iy, g.kh, g.sh, g.ph, g.oh, &oy_lo, &oy_hi);
    outputs_covering(ix, g.kw, g.sw, g.pw, g.ow, &ox_lo, &ox_hi);
    float acc = 0.f;
    for (int64_t oy = oy_lo; oy < oy_hi; ++oy)
      for (int64_t ox = ox_lo; ox < ox_hi; ++ox) {
        const Window win = window_of(g, oy, ox);
        if (win.ylo >= win.yhi || win.xlo >= win.xhi) continue;
        int64_t best = win.ylo * g.w + win.xlo;
        float m = -INFINITY;
        for (int64_t y = win.ylo; y < win.yhi; ++y)
          for (int64_t xx = win.xlo; xx < win.xhi; ++xx)
            if (xp[y * g.w + xx] > m) {
              m = xp[y * g.w + xx];
              best = y * g.w + xx;
            }
        if (best == rem) acc += gp[oy * g.ow + ox];
      }
    dx[f] = acc;
  }
}

// Each input element gathers g / (kh * kw) from every window that holds it.
__global__ void avg_pool_grad_kernel(const float* gy, float* dx, PoolGeometry g, float inv_window) {
  PF_GRID_STRIDE(f, g.planes * g.h * g.w) {
    const int64_t pl = f / (g.h * g.w), rem = f - pl * g.h * g.w, iy = rem / g.w, ix = rem - iy * g.w;
    const float* gp = gy + pl * g.oh * g.ow;
    int64_t oy_lo, oy_hi, ox_lo, ox_hi;
    outputs_covering(iy, g.kh, g.sh, g.ph, g.oh, &oy_lo, &oy_hi);
    outputs_covering(ix, g.kw, g.sw, g.pw, g.ow, &ox_lo, &ox_hi);
    float acc = 0.f;
    for (int64_t oy = oy_lo; oy < oy_hi; ++oy)
      for (int64_t ox = ox_lo; ox < ox_hi; ++ox) acc += gp[oy * g.ow + ox] * inv_window;
    dx[f] = acc;
  }
}

void max_pool2d_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const PoolGeometry g = geometry(args, args.in_types[1].shape, args.in_types[0].shape);
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  max_pool_grad_kernel<<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const float*>(args.in[0]),
                                                                     static_cast<const float*>(args.in[1]),
                                                                     static_cast<float*>(args.out[0]), g);
  PF_CUDA_CHECK_LAUNCH();
}

void avg_pool2d_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const PoolGeometry g = geometry(args, args.out_types[0].shape, args.in_types[0].shape);
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  avg_pool_grad_kernel<<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const float*>(args.in[0]),
                                                                     static_cast<float*>(args.out[0]), g,
                                                                     1.f / static_cast<float>(g.kh * g.kw));
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_pool_kernels(KernelTable& t) {
  t.set_float(OpKind::max_pool2d, pool<true>, nullptr);
  t.set_float(OpKind::avg_pool2d, pool<false>, nullptr);
  t.set_float(OpKind::max_pool2d_grad, max_pool2d_grad, nullptr);
  t.set_float(OpKind::avg_pool2d_grad, avg_pool2d_grad, nullptr);
}

}  // namespace pf::cuda
