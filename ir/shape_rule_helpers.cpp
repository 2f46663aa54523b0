// The checks and rules that the shape rules share.
#include "ir/shape_rule_helpers.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "ir/diagnostic.h"

namespace pf::rules {

[[noreturn]] void fail(const std::string& message) { throw Error(message); }

void require_float(const TensorType& t, std::string_view what) {
  if (!is_float(t.dtype)) fail(fmt::format("{} must be a float tensor, got {}", what, t.str()));
}

void require_same_dtype(const TensorType& a, const TensorType& b) {
  if (a.dtype != b.dtype) fail(fmt::format("dtypes of {} and {} differ; insert a cast", a.str(), b.str()));
}

int64_t normalize_axis(int64_t axis, int64_t rank, std::string_view name) {
  if (axis < -rank || axis >= rank)
    fail(fmt::format("{} {} is out of range for rank {}", name, axis, rank));
  return axis < 0 ? axis + rank : axis;
}

Shape broadcast(const TensorType& a, const TensorType& b) {
  size_t rank = std::max(a.shape.size(), b.shape.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.shape.size() ? 1 : a.shape[i - (rank - a.shape.size())];
    int64_t db = i < rank - b.shape.size() ? 1 : b.shape[i - (rank - b.shape.size())];
    if (da != db && da != 1 && db != 1) fail(fmt::format("shapes {} and {} do not broadcast", a.str(), b.str()));
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Types one(DType dtype, Shape shape) { return {TensorType{dtype, std::move(shape)}}; }

Types declared_type(const ShapeContext& ctx) {
  if (ctx.declared.size() != 1) fail("needs its result type written after ':'");
  return {ctx.declared[0]};
}

Types binary(const ShapeContext& ctx) {
  const TensorType &a = ctx.operands[0], &b = ctx.operands[1];
  require_same_dtype(a, b);
  if (a.dtype == DType::boolean) fail(fmt::format("arithmetic on bool tensor {}", a.str()));
  return one(a.dtype, broadcast(a, b));
}

Types unary_float(const ShapeContext& ctx) {
  require_float(ctx.operands[0], "the operand");
  return {ctx.operands[0]};
}

Types reduce(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  std::vector<int64_t> axes = ctx.attrs.get_ints("axes", {});
  if (axes.empty()) fail("needs at least one axis in 'axes'");
  std::vector<bool> reduced(x.shape.size(), false);
  for (int64_t a : axes) {
    int64_t n = normalize_axis(a, x.rank());
    if (reduced[n]) fail(fmt::format("axis {} is reduced twice", a));
    reduced[n] = true;
  }
  bool keep = ctx.attrs.get_bool("keepdims", false);
  Shape out;
  for (size_t i = 0; i < x.shape.size(); ++i) {
    if (!reduced[i]) out.push_back(x.shape[i]);
    else if (keep) out.push_back(1);
  }
  return one(x.dtype, out);
}

Types softmax_like(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the operand");
  if (x.rank() == 0) fail("needs a tensor of rank >= 1, got a scalar");
  normalize_axis(ctx.attrs.get_int("axis", -1), x.rank());
  return {x};
}

void require_vector_of(const TensorType& v, int64_t n, const TensorType& x, std::string_view what) {
  if (v.shape != Shape{n}) fail(fmt::format("{} {} must be [{}] to match the last axis of {}", what, v.str(), n, x.str()));
  require_same_dtype(v, x);
}

// Spatial output size of a window of `k` with `stride` and `pad`.
int64_t window_out(int64_t in, int64_t k, int64_t stride, int64_t pad, std::string_view axis) {
  if (stride <= 0) fail(fmt::format("stride must be positive, got {}", stride));
  if (pad < 0) fail(fmt::format("padding must not be negative, got {}", pad));
  if (k <= 0) fail(fmt::format("kernel size must be positive, got {}", k));
  // Attribute values are bounded by the verifier (|v| <= 2^50), so this
  // arithmetic cannot overflow.
  int64_t span = in + 2 * pad - k;
  if (span < 0) fail(fmt::format("the {} window of {} does not fit an input of {} with padding {}", axis, k, in, pad));
  return span / stride + 1;
}

std::vector<int64_t> pair_attr(const ShapeContext& ctx, std::string_view name, std::vector<int64_t> fallback) {
  std::vector<int64_t> v = ctx.attrs.get_ints(name, std::move(fallback));
  if (v.size() != 2) fail(fmt::format("'{}' takes two values [h,w], got {}", name, v.size()));
  return v;
}

Types pool(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the input");
  if (x.rank() != 4) fail(fmt::format("the input must be [N,C,H,W], got {}", x.str()));
  auto k = pair_attr(ctx, "kernel", {});
  auto s = pair_attr(ctx, "stride", k);
  auto p = pair_attr(ctx, "padding", {0, 0});
  if (2 * p[0] > k[0] || 2 * p[1] > k[1]) fail("padding may be at most half the kernel");
  return one(x.dtype, {x.shape[0], x.shape[1], window_out(x.shape[2], k[0], s[0], p[0], "height"),
                       window_out(x.shape[3], k[1], s[1], p[1], "width")});
}

// An incoming gradient has the type of the value it is the gradient of;
// `what` names that value ("the input", "the conv2d of f32[..] and f32[..]").
void require_gradient_of(const TensorType& g, const TensorType& v, const std::string& what) {
  require_same_dtype(g, v);
  if (g.shape != v.shape) fail(fmt::format("the gradient {} must have the type {} of {}", g.str(), v.str(), what));
}

// A result shape that comes from attributes rather than from operands (most
// backward ops): no negative sizes and, as for a written type, at most 2^50
// elements, so that byte and FLOP counts stay far from overflow. `what`
// names it in messages.
Shape bounded_shape(Shape shape, const std::string& what) {
  constexpr int64_t kMaxElements = int64_t{1} << 50;
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) fail(fmt::format("dimension {} of {} {} is negative", d, what, shape_str(shape)));
    if (d != 0 && (__builtin_mul_overflow(n, d, &n) || n > kMaxElements))
      fail(fmt::format("{} {} has more than 2^50 elements", what, shape_str(shape)));
  }
  return shape;
}

Shape shape_attr(const ShapeContext& ctx, std::string_view name) {
  return bounded_shape(ctx.attrs.get_ints(name, {}), fmt::format("'{}'", name));
}

// An NCHW-style shape attribute of exactly four sizes; `layout` names them.
Shape four_dims_attr(const ShapeContext& ctx, std::string_view name, std::string_view layout) {
  Shape s = shape_attr(ctx, name);
  if (s.size() != 4) fail(fmt::format("'{}' must be {}, got {}", name, layout, shape_str(s)));
  return s;
}

// True when `from` broadcasts to `to` by NumPy rules (aligned on the right,
// size 1 stretches, missing leading axes are added).
bool broadcasts_to(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  const size_t lead = to.size() - from.size();
  for (size_t i = 0; i < from.size(); ++i)
    if (from[i] != 1 && from[i] != to[lead + i]) return false;
  return true;
}

// The result type of forward rule `rule` on `operands` under the same
// attributes: backward ops check their gradient against it.
void require_vocabulary_range(const ShapeContext& ctx, int64_t rows, std::string_view what) {
  const int64_t offset = ctx.attrs.get_int("offset", 0);
  if (offset < 0) fail(fmt::format("offset must not be negative, got {}", offset));
  if (offset > std::numeric_limits<int64_t>::max() - rows) fail(fmt::format("offset {} is too large", offset));
  const int64_t vocab = ctx.attrs.get_int("vocab", offset + rows);
  if (offset + rows > vocab)
    fail(fmt::format("{} {}..{} do not fit in a vocabulary of {}: offset + rows may not exceed vocab", what, offset,
                     offset + rows, vocab));
}

TensorType forward_result(const ShapeContext& ctx, ShapeRule rule, std::span<const TensorType> operands) {
  return rule(ShapeContext{ctx.op, operands, ctx.attrs, {}})[0];
}

// attention: q, k, v [..., H, T, D] (layout "bhtd", the default) or
// [..., T, H, D] ("bthd") of one float type; results o of q's type and
// lse [..., H, T] (the log-sum-exp of each row of the scaled, masked scores,
// which the backward reads instead of recomputing it) in either layout.
Types attention_like(const ShapeContext& ctx) {
  const TensorType &q = ctx.operands[0], &k = ctx.operands[1], &v = ctx.operands[2];
  const bool bthd = attention_bthd(ctx.attrs);
  require_float(q, "q");
  if (q.rank() < (bthd ? 3 : 2))
    fail(fmt::format("q must be {}, got {}", bthd ? "[..., T, H, D] under layout \"bthd\"" : "[..., T, D]", q.str()));
  if (v != k || (k != q && (bthd || !attention_groups_keys(q, k))))
    fail(fmt::format("q, k and v must have one type (or k and v size 1 on axes before [T, D] where q has heads that "
                     "share them, under layout \"bhtd\"), got {}, {} and {}",
                     q.str(), k.str(), v.str()));
  const double scale = ctx.attrs.get_real("scale", 1.0);
  if (!(scale > 0) || !std::isfinite(scale)) fail(fmt::format("scale must be positive and finite, got {}", scale));
  Shape rows(q.shape.begin(), q.shape.end() - 1);  // [..., H, T] or [..., T, H]
  if (bthd) std::swap(rows[rows.size() - 1], rows[rows.size() - 2]);
  return {q, {attention_lse_dtype(q.dtype), std::move(rows)}};
}

// A mixture of experts' route: i32 [E, capacity], E the experts (of the
// logits where given; -1: any).
void require_route(const TensorType& route, int64_t experts) {
  if (route.dtype != DType::i32 || route.rank() != 2)
    fail(fmt::format("the route must be i32[experts, capacity] (moe_route's result), got {}", route.str()));
  if (experts >= 0 && route.shape[0] != experts)
    fail(fmt::format("the route {} is for {} experts, the logits for {}", route.str(), route.shape[0], experts));
}

// swiglu's operands from `first` on: gate and up of one float type, then
// optionally the route whose slots they are ([E, capacity, ...] under an
// i32 [E, capacity]). Returns their type.
TensorType swiglu_operands(const ShapeContext& ctx, size_t first) {
  const TensorType &gate = ctx.operands[first], &up = ctx.operands[first + 1];
  require_float(gate, "the gate");
  if (up != gate) fail(fmt::format("the gate and up must have one type, got {} and {}", gate.str(), up.str()));
  if (ctx.operands.size() > first + 2) {
    const TensorType& route = ctx.operands[first + 2];
    require_route(route, -1);
    if (gate.rank() < 3 || gate.shape[0] != route.shape[0] || gate.shape[1] != route.shape[1])
      fail(fmt::format("the gate must be [{}, {}, features] (an expert's slots, as the route {}), got {}",
                       route.shape[0], route.shape[1], route.str(), gate.str()));
  }
  return gate;
}

}  // namespace pf::rules
