// Shape rules of the backward ops: each result has the type of the value it
// is the gradient of, which the forward rule gives.
#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "ir/shape_rule_helpers.h"

namespace pf::rules {

namespace {

// relu_grad, gelu_grad, gelu_erf_grad, silu_grad: (g, x) -> x's type.
Types activation_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &x = ctx.operands[1];
  require_float(x, "the input");
  require_gradient_of(g, x, "the input");
  return {x};
}

// softmax_grad, log_softmax_grad: (g, y) with y the forward's output.
Types softmax_grad_like(const ShapeContext& ctx, std::string_view forward) {
  const TensorType &g = ctx.operands[0], &y = ctx.operands[1];
  const TensorType out = forward_result(ctx, softmax_like, {&y, 1});
  require_gradient_of(g, out, fmt::format("the {} output", forward));
  return {out};
}

// layernorm_grad, rmsnorm_grad: (g, x, w) -> dx and one dw-like result per
// parameter (`params`: 2 for layernorm's weight and bias, 1 for rmsnorm's).
Types norm_grad(const ShapeContext& ctx, double default_eps, int params) {
  const TensorType &g = ctx.operands[0], &x = ctx.operands[1], &w = ctx.operands[2];
  require_float(x, "the input");
  if (x.rank() == 0) fail("the input must have rank >= 1");
  require_gradient_of(g, x, "the input");
  require_vector_of(w, x.shape.back(), x, "the weight");
  if (!(ctx.attrs.get_real("eps", default_eps) > 0)) fail("eps must be positive");
  Types out = {x};
  for (int i = 0; i < params; ++i) out.push_back(w);
  return out;
}

}  // namespace

Types shape_broadcast_to(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  Shape shape = shape_attr(ctx, "shape");
  if (!broadcasts_to(x.shape, shape)) fail(fmt::format("{} does not broadcast to {}", x.str(), shape_str(shape)));
  return one(x.dtype, shape);
}

Types shape_sum_to(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the operand");
  Shape shape = shape_attr(ctx, "shape");
  if (!broadcasts_to(shape, x.shape))
    fail(fmt::format("the shape {} does not broadcast to {}", shape_str(shape), x.str()));
  return one(x.dtype, shape);
}

Types shape_relu_grad(const ShapeContext& ctx) { return activation_grad(ctx); }
Types shape_gelu_grad(const ShapeContext& ctx) { return activation_grad(ctx); }
Types shape_gelu_erf_grad(const ShapeContext& ctx) { return activation_grad(ctx); }
Types shape_silu_grad(const ShapeContext& ctx) { return activation_grad(ctx); }
// swiglu_grad: (g, gate, up (, route)) -> the gate's gradient, then up's.
Types shape_swiglu_grad(const ShapeContext& ctx) {
  const TensorType x = swiglu_operands(ctx, 1);
  require_gradient_of(ctx.operands[0], x, "the swiglu");
  return {x, x};
}
Types shape_softmax_grad(const ShapeContext& ctx) { return softmax_grad_like(ctx, "softmax"); }
Types shape_log_softmax_grad(const ShapeContext& ctx) { return softmax_grad_like(ctx, "log_softmax"); }
Types shape_layernorm_grad(const ShapeContext& ctx) { return norm_grad(ctx, 1e-5, 2); }
Types shape_rmsnorm_grad(const ShapeContext& ctx) { return norm_grad(ctx, 1e-6, 1); }

// attention_grad: (g, q, k, v, o, lse) -> dq, dk, dv, with o and lse the
// forward's results for q, k, v under the same attributes.
Types shape_attention_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &o = ctx.operands[4], &lse = ctx.operands[5];
  const Types fwd = attention_like(ShapeContext{ctx.op, ctx.operands.subspan(1, 3), ctx.attrs, {}});
  if (o != fwd[0]) fail(fmt::format("o {} must have the type {} of q", o.str(), fwd[0].str()));
  if (lse != fwd[1]) fail(fmt::format("lse {} must be {} for q {}", lse.str(), fwd[1].str(), fwd[0].str()));
  require_gradient_of(g, fwd[0], "the attention output");
  return {fwd[0], ctx.operands[2], ctx.operands[3]};
}

Types shape_embedding_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &ids = ctx.operands[1];
  require_float(g, "the gradient");
  if (g.rank() == 0) fail(fmt::format("the gradient must be [...,C], got {}", g.str()));
  if (!is_integer(ids.dtype)) fail(fmt::format("the indices must be i32 or i64, got {}", ids.str()));
  Shape expect(g.shape.begin(), g.shape.end() - 1);
  if (ids.shape != expect)
    fail(fmt::format("indices {} must have the shape of the gradient {} without its last axis, {}", ids.str(), g.str(),
                     shape_str(expect)));
  int64_t rows = ctx.attrs.get_int("rows", 0);
  if (rows < 0) fail(fmt::format("rows must not be negative, got {}", rows));
  require_vocabulary_range(ctx, rows, "rows");
  return one(g.dtype, bounded_shape({rows, g.shape.back()}, "the result"));
}

Types shape_slice_grad(const ShapeContext& ctx) {
  const TensorType& g = ctx.operands[0];
  int64_t axis = normalize_axis(ctx.attrs.get_int("axis", 0), g.rank());
  int64_t start = ctx.attrs.get_int("start", 0), size = ctx.attrs.get_int("size", 0);
  // Attributes are bounded by 2^50, so start + g.shape[axis] cannot overflow.
  if (start < 0 || start + g.shape[axis] > size)
    fail(fmt::format("range [{}, {}) of the gradient {} is not within axis {} of size {}", start,
                     start + g.shape[axis], g.str(), axis, size));
  Shape out = g.shape;
  out[axis] = size;
  return one(g.dtype, bounded_shape(out, "the result"));
}

Types shape_reduce_max_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &x = ctx.operands[1], &y = ctx.operands[2];
  require_float(x, "the input");
  const TensorType max = forward_result(ctx, reduce, {&x, 1});
  if (y != max)
    fail(fmt::format("the maximum {} must have the type {} of the reduce_max of {}", y.str(), max.str(), x.str()));
  require_gradient_of(g, y, "the maximum");
  return {x};
}

Types shape_conv2d_grad_input(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &w = ctx.operands[1];
  require_float(g, "the gradient");
  const TensorType x{g.dtype, four_dims_attr(ctx, "input_shape", "[N,C,H,W]")};
  const TensorType fwd[] = {x, w};
  require_gradient_of(g, forward_result(ctx, shape_conv2d, fwd),
                      fmt::format("the conv2d of {} and {}", x.str(), w.str()));
  return {x};
}

Types shape_conv2d_grad_weight(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &x = ctx.operands[1];
  require_float(g, "the gradient");
  const TensorType w{g.dtype, four_dims_attr(ctx, "weight_shape", "[O,C/groups,kh,kw]")};
  const TensorType fwd[] = {x, w};
  require_gradient_of(g, forward_result(ctx, shape_conv2d, fwd),
                      fmt::format("the conv2d of {} and {}", x.str(), w.str()));
  return {w};
}

Types shape_max_pool2d_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &x = ctx.operands[1];
  require_gradient_of(g, forward_result(ctx, pool, {&x, 1}), fmt::format("the max_pool2d of {}", x.str()));
  return {x};
}

Types shape_avg_pool2d_grad(const ShapeContext& ctx) {
  const TensorType& g = ctx.operands[0];
  require_float(g, "the gradient");
  const TensorType x{g.dtype, four_dims_attr(ctx, "input_shape", "[N,C,H,W]")};
  require_gradient_of(g, forward_result(ctx, pool, {&x, 1}), fmt::format("the avg_pool2d of {}", x.str()));
  return {x};
}

Types shape_cross_entropy_grad(const ShapeContext& ctx) {
  const TensorType &g = ctx.operands[0], &logits = ctx.operands[1];
  const TensorType loss = forward_result(ctx, shape_cross_entropy, ctx.operands.subspan(1));
  require_gradient_of(g, loss, "the loss");
  return {logits};
}

Types shape_cross_entropy_parts_grad(const ShapeContext& ctx) {
  const TensorType& g = ctx.operands[0];
  const TensorType parts = forward_result(ctx, shape_cross_entropy_parts, ctx.operands.subspan(1));
  require_gradient_of(g, parts, "the parts");
  return {ctx.operands[1]};
}

Types shape_cross_entropy_total_grad(const ShapeContext& ctx) {
  const TensorType& g = ctx.operands[0];
  const TensorType loss = forward_result(ctx, shape_cross_entropy_total, ctx.operands.subspan(1));
  require_gradient_of(g, loss, "the loss");
  return {ctx.operands[1]};
}

}  // namespace pf::rules
