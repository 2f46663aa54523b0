// Convolution geometry, im2col and its adjoint col2im: shared by conv2d and its gradients.
#include "backends/cpu/im2col.h"

#include <algorithm>
#include <vector>

namespace pf::cpu {

namespace {

// For kernel column kx, the output columns [lo, hi) whose input column
// ox * sw - pw + kx lies inside [0, w): found once per kernel offset so the
// inner loops carry no bounds checks.
struct ColumnRange {
  int64_t lo, hi;
};

ColumnRange inside_columns(const ConvGeometry& g, int64_t kx) {
  const int64_t first = g.pw - kx;  // ox * sw must reach this
  const int64_t lo = first <= 0 ? 0 : std::min((first + g.sw - 1) / g.sw, g.ow);
  const int64_t last = g.w - 1 + g.pw - kx;  // ox * sw must not pass this
  const int64_t hi = std::max(lo, last < 0 ? int64_t{0} : std::min(last / g.sw + 1, g.ow));
  return {lo, hi};
}

template <class T>
void im2col_of(const T* x, const ConvGeometry& g, T* col) {
  const int64_t plane = g.plane();
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        T* rows = col + ((c * g.kh + ky) * g.kw + kx) * plane;
        const auto [lo, hi] = inside_columns(g, kx);
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

// The same walk as im2col with the copy reversed into an add: overlapping
// windows (stride < kernel) add into one input element.
template <class T>
void col2im_of(const T* col, const ConvGeometry& g, T* x) {
  const int64_t plane = g.plane();
  for (int64_t c = 0; c < g.c; ++c) {
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const T* rows = col + ((c * g.kh + ky) * g.kw + kx) * plane;
        const auto [lo, hi] = inside_columns(g, kx);
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int64_t iy = oy * g.sh - g.ph + ky;
          if (iy < 0 || iy >= g.h) continue;
          const T* r = rows + oy * g.ow;
          T* dst = x + (c * g.h + iy) * g.w + (lo * g.sw - g.pw + kx);
          if (g.sw == 1)
            for (int64_t ox = lo; ox < hi; ++ox) dst[ox - lo] += r[ox];
          else
            for (int64_t ox = lo; ox < hi; ++ox) dst[(ox - lo) * g.sw] += r[ox];
        }
      }
    }
  }
}

}  // namespace

ConvGeometry conv_geometry(const Shape& x, const Shape& weight, const Shape& y, const OpAttrs& attrs) {
  const std::vector<int64_t> stride = attrs.get_ints("stride", {1, 1});
  const std::vector<int64_t> pad = attrs.get_ints("padding", {0, 0});
  return {weight[1], x[2], x[3], weight[2], weight[3], stride[0], stride[1], pad[0], pad[1], y[2], y[3]};
}

void im2col(const float* x, const ConvGeometry& g, float* col) { im2col_of(x, g, col); }
void im2col(const double* x, const ConvGeometry& g, double* col) { im2col_of(x, g, col); }
void col2im(const float* col, const ConvGeometry& g, float* x) { col2im_of(col, g, x); }
void col2im(const double* col, const ConvGeometry& g, double* x) { col2im_of(col, g, x); }

}  // namespace pf::cpu
