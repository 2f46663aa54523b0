// Convolution geometry, im2col and its adjoint col2im: shared by conv2d and its gradients (internal).
#pragma once

#include <cstdint>

#include "ir/op_table.h"
#include "ir/types.h"

namespace pf::cpu {

/// One group of a 2-D convolution over NCHW: an input plane stack of c
/// channels read by kh x kw windows into an oh x ow output.
struct ConvGeometry {
  int64_t c, h, w;  // input channels of one group, height, width
  int64_t kh, kw;   // kernel
  int64_t sh, sw;   // stride
  int64_t ph, pw;   // padding
  int64_t oh, ow;   // output height, width

  /// Rows of the column matrix: c * kh * kw.
  int64_t rows() const { return c * kh * kw; }
  /// Columns of the column matrix: oh * ow.
  int64_t plane() const { return oh * ow; }
  /// A 1x1 kernel with unit stride and no padding: the column matrix is the
  /// input itself, (c, h * w), so no im2col or col2im is needed.
  bool direct() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};

/// The geometry of the convolution of x (N, C, H, W) by weight (O, C/groups,
/// kh, kw) into y (N, O, OH, OW) under the op's stride and padding attributes
/// (defaults [1,1] and [0,0]).
ConvGeometry conv_geometry(const Shape& x, const Shape& weight, const Shape& y, const OpAttrs& attrs);

/// x: (c, h, w) -> col: (c * kh * kw, oh * ow), zeros where a window reads padding.
void im2col(const float* x, const ConvGeometry& g, float* col);
void im2col(const double* x, const ConvGeometry& g, double* col);

/// The adjoint of im2col: adds each element of col (c * kh * kw, oh * ow)
/// into the element of x (c, h, w) that im2col read it from; elements that
/// came from padding are dropped. x is added to, not cleared.
void col2im(const float* col, const ConvGeometry& g, float* x);
void col2im(const double* col, const ConvGeometry& g, double* x);

}  // namespace pf::cpu
