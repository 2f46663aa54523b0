// Shape rules: the result types of every op from its operands' types and its
// attributes. A rule throws Error with a message naming the shapes; the
// verifier prefixes the op name and adds the location.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "ir/diagnostic.h"
#include "ir/op_table.h"

namespace pf::rules {

namespace {

using Types = std::vector<TensorType>;

[[noreturn]] void fail(const std::string& message) { throw Error(message); }

void require_float(const TensorType& t, std::string_view what) {
  if (!is_float(t.dtype)) fail(fmt::format("{} must be a float tensor, got {}", what, t.str()));
}

void require_same_dtype(const TensorType& a, const TensorType& b) {
  if (a.dtype != b.dtype) fail(fmt::format("dtypes of {} and {} differ; insert a cast", a.str(), b.str()));
}

int64_t normalize_axis(int64_t axis, int64_t rank, std::string_view name = "axis") {
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
  if (k != q || v != q) fail(fmt::format("q, k and v must have one type, got {}, {} and {}", q.str(), k.str(), v.str()));
  const double scale = ctx.attrs.get_real("scale", 1.0);
  if (!(scale > 0) || !std::isfinite(scale)) fail(fmt::format("scale must be positive and finite, got {}", scale));
  Shape rows(q.shape.begin(), q.shape.end() - 1);  // [..., H, T] or [..., T, H]
  if (bthd) std::swap(rows[rows.size() - 1], rows[rows.size() - 2]);
  return {q, {q.dtype, std::move(rows)}};
}

// relu_grad, gelu_grad: (g, x) -> x's type.
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

Types shape_param(const ShapeContext& ctx) {
  Types t = declared_type(ctx);
  require_float(t[0], "a parameter");
  // A piece: rows [begin, end) of a whole parameter of whole_rows rows.
  const bool piece = ctx.attrs.has("piece_of"), rows = ctx.attrs.has("rows"), whole = ctx.attrs.has("whole_rows");
  if (piece != rows || piece != whole) fail("a parameter piece needs piece_of, rows=[begin,end] and whole_rows");
  if (piece) {
    const std::vector<int64_t> r = ctx.attrs.get_ints("rows", {});
    const int64_t total = ctx.attrs.get_int("whole_rows", 0);
    if (ctx.attrs.get_string("piece_of", "").empty()) fail("piece_of must name the whole parameter");
    if (r.size() != 2 || r[0] < 0 || r[0] >= r[1] || r[1] > total)
      fail(fmt::format("rows must be [begin,end] with 0 <= begin < end <= whole_rows ({})", total));
    if (t[0].rank() < 1 || t[0].shape[0] != r[1] - r[0])
      fail(fmt::format("a piece of rows [{},{}) has {} rows, not the {} of its type {}", r[0], r[1], r[1] - r[0],
                       t[0].rank() < 1 ? 0 : t[0].shape[0], t[0].str()));
  }
  return t;
}
Types shape_constant(const ShapeContext& ctx) { return declared_type(ctx); }
Types shape_dim_value(const ShapeContext& ctx) {
  Types t = declared_type(ctx);
  if (!t[0].is_scalar() || !is_float(t[0].dtype)) fail(fmt::format("the result must be a float scalar, got {}", t[0].str()));
  return t;
}
Types shape_causal_mask(const ShapeContext& ctx) {
  Types t = declared_type(ctx);
  const TensorType& m = t[0];
  if (m.dtype != DType::boolean || m.rank() < 2 || m.shape[m.rank() - 1] != m.shape[m.rank() - 2])
    fail(fmt::format("the result must be bool[...,N,N], got {}", m.str()));
  return t;
}
Types shape_call(const ShapeContext&) { fail("a call's types come from its callee"); }

Types shape_matmul(const ShapeContext& ctx) {
  const TensorType &a = ctx.operands[0], &b = ctx.operands[1];
  require_float(a, "the left operand");
  require_same_dtype(a, b);
  if (a.rank() < 2 || b.rank() < 2)
    fail(fmt::format("operands must have rank >= 2, got {} and {}", a.str(), b.str()));
  bool ta = ctx.attrs.get_bool("transpose_a", false), tb = ctx.attrs.get_bool("transpose_b", false);
  int64_t m = a.shape[a.rank() - (ta ? 1 : 2)], ka = a.shape[a.rank() - (ta ? 2 : 1)];
  int64_t kb = b.shape[b.rank() - (tb ? 1 : 2)], n = b.shape[b.rank() - (tb ? 2 : 1)];
  if (ka != kb)
    fail(fmt::format("contraction sizes differ: {}{} and {}{} ({} vs {})", a.str(), ta ? " (transposed)" : "",
                     b.str(), tb ? " (transposed)" : "", ka, kb));
  TensorType batch_a{a.dtype, Shape(a.shape.begin(), a.shape.end() - 2)};
  TensorType batch_b{b.dtype, Shape(b.shape.begin(), b.shape.end() - 2)};
  Shape out;
  try {
    out = broadcast(batch_a, batch_b);
  } catch (const Error&) {
    fail(fmt::format("batch dimensions of {} and {} do not broadcast", a.str(), b.str()));
  }
  out.push_back(m);
  out.push_back(n);
  return one(a.dtype, out);
}

Types shape_add(const ShapeContext& ctx) { return binary(ctx); }
Types shape_sub(const ShapeContext& ctx) { return binary(ctx); }
Types shape_mul(const ShapeContext& ctx) { return binary(ctx); }
Types shape_div(const ShapeContext& ctx) { return binary(ctx); }

Types shape_where(const ShapeContext& ctx) {
  const TensorType &c = ctx.operands[0], &a = ctx.operands[1], &b = ctx.operands[2];
  if (c.dtype != DType::boolean) fail(fmt::format("the condition must be bool, got {}", c.str()));
  require_same_dtype(a, b);
  TensorType ab{a.dtype, broadcast(a, b)};
  return one(a.dtype, broadcast(c, ab));
}

Types shape_neg(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_exp(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_log(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_sqrt(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_rsqrt(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_pow(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_tanh(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_sigmoid(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_relu(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_gelu(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_gelu_erf(const ShapeContext& ctx) { return unary_float(ctx); }

Types shape_dropout(const ShapeContext& ctx) {
  double p = ctx.attrs.get_real("p", 0);
  if (!(p >= 0 && p < 1)) fail(fmt::format("p must be in [0, 1), got {}", format_real(p)));
  return unary_float(ctx);
}

Types shape_cast(const ShapeContext& ctx) {
  return one(ctx.attrs.get_dtype("to", DType::f32), ctx.operands[0].shape);
}

Types shape_softmax(const ShapeContext& ctx) { return softmax_like(ctx); }
Types shape_log_softmax(const ShapeContext& ctx) { return softmax_like(ctx); }

Types shape_layernorm(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the input");
  if (x.rank() == 0) fail("the input must have rank >= 1");
  int64_t c = x.shape.back();
  require_vector_of(ctx.operands[1], c, x, "the weight");
  require_vector_of(ctx.operands[2], c, x, "the bias");
  if (!(ctx.attrs.get_real("eps", 1e-5) > 0)) fail("eps must be positive");
  return {x};
}

Types shape_rmsnorm(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the input");
  if (x.rank() == 0) fail("the input must have rank >= 1");
  require_vector_of(ctx.operands[1], x.shape.back(), x, "the weight");
  if (!(ctx.attrs.get_real("eps", 1e-6) > 0)) fail("eps must be positive");
  return {x};
}

Types shape_attention(const ShapeContext& ctx) { return attention_like(ctx); }

Types shape_embedding(const ShapeContext& ctx) {
  const TensorType &table = ctx.operands[0], &ids = ctx.operands[1];
  require_float(table, "the table");
  if (table.rank() != 2) fail(fmt::format("the table must be [V,C], got {}", table.str()));
  if (!is_integer(ids.dtype)) fail(fmt::format("the indices must be i32 or i64, got {}", ids.str()));
  Shape out = ids.shape;
  out.push_back(table.shape[1]);
  return one(table.dtype, out);
}

Types shape_reshape(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  Shape shape = ctx.attrs.get_ints("shape", {});
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer >= 0) fail("at most one dimension may be -1");
      infer = static_cast<int>(i);
    } else if (shape[i] < 0) {
      fail(fmt::format("dimension {} of the shape is negative", shape[i]));
    } else if (__builtin_mul_overflow(known, shape[i], &known)) {
      fail("the shape has too many elements");
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.numel() % known != 0)
      fail(fmt::format("cannot infer -1: {} elements do not divide by {}", x.numel(), known));
    shape[infer] = x.numel() / known;
    known = x.numel();
  }
  if (known != x.numel())
    fail(fmt::format("{} has {} elements, the shape {} has {}", x.str(), x.numel(), shape_str(shape), known));
  return one(x.dtype, shape);
}

Types shape_transpose(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  std::vector<int64_t> perm = ctx.attrs.get_ints("perm", {});
  if (static_cast<int64_t>(perm.size()) != x.rank())
    fail(fmt::format("perm has {} entries for {} of rank {}", perm.size(), x.str(), x.rank()));
  std::vector<bool> seen(perm.size(), false);
  Shape out;
  for (int64_t p : perm) {
    int64_t a = normalize_axis(p, x.rank(), "perm entry");
    if (seen[a]) fail(fmt::format("perm {} is not a permutation", shape_str(perm)));
    seen[a] = true;
    out.push_back(x.shape[a]);
  }
  return one(x.dtype, out);
}

Types shape_slice(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  int64_t axis = normalize_axis(ctx.attrs.get_int("axis", 0), x.rank());
  int64_t start = ctx.attrs.get_int("start", 0), end = ctx.attrs.get_int("end", 0);
  if (start < 0 || start > end || end > x.shape[axis])
    fail(fmt::format("range [{}, {}) is not within axis {} of size {}", start, end, axis, x.shape[axis]));
  Shape out = x.shape;
  out[axis] = end - start;
  return one(x.dtype, out);
}

Types shape_concat(const ShapeContext& ctx) {
  const TensorType& first = ctx.operands[0];
  int64_t axis = normalize_axis(ctx.attrs.get_int("axis", 0), first.rank());
  Shape out = first.shape;
  for (size_t i = 1; i < ctx.operands.size(); ++i) {
    const TensorType& t = ctx.operands[i];
    require_same_dtype(first, t);
    bool ok = t.rank() == first.rank();
    for (int64_t d = 0; ok && d < t.rank(); ++d) ok = d == axis || t.shape[d] == first.shape[d];
    if (!ok) fail(fmt::format("{} and {} differ outside axis {}", first.str(), t.str(), axis));
    out[axis] += t.shape[axis];
  }
  return one(first.dtype, out);
}

Types shape_split(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  int64_t axis = normalize_axis(ctx.attrs.get_int("axis", 0), x.rank());
  std::vector<int64_t> sizes = ctx.attrs.get_ints("sizes", {});
  int64_t total = 0;
  Types out;
  for (int64_t s : sizes) {
    if (s < 0) fail(fmt::format("split size {} is negative", s));
    total += s;
    Shape shape = x.shape;
    shape[axis] = s;
    out.push_back({x.dtype, shape});
  }
  if (total != x.shape[axis])
    fail(fmt::format("sizes {} add up to {}, but axis {} of {} is {}", shape_str(sizes), total, axis, x.str(),
                     x.shape[axis]));
  return out;
}

Types shape_reduce_sum(const ShapeContext& ctx) { return reduce(ctx); }
Types shape_reduce_mean(const ShapeContext& ctx) {
  require_float(ctx.operands[0], "the operand");
  return reduce(ctx);
}
Types shape_reduce_max(const ShapeContext& ctx) { return reduce(ctx); }

Types shape_conv2d(const ShapeContext& ctx) {
  const TensorType &x = ctx.operands[0], &w = ctx.operands[1];
  require_float(x, "the input");
  require_same_dtype(x, w);
  if (x.rank() != 4) fail(fmt::format("the input must be [N,C,H,W], got {}", x.str()));
  if (w.rank() != 4) fail(fmt::format("the weight must be [O,C/groups,kh,kw], got {}", w.str()));
  int64_t groups = ctx.attrs.get_int("groups", 1);
  if (groups <= 0) fail(fmt::format("groups must be positive, got {}", groups));
  int64_t c = x.shape[1], o = w.shape[0];
  if (c % groups != 0 || o % groups != 0)
    fail(fmt::format("groups {} must divide the input channels {} and output channels {}", groups, c, o));
  if (w.shape[1] != c / groups)
    fail(fmt::format("the weight {} needs {} input channels per group, got {}", w.str(), c / groups, w.shape[1]));
  if (ctx.operands.size() == 3) {
    require_vector_of(ctx.operands[2], o, w, "the bias");
  }
  auto s = pair_attr(ctx, "stride", {1, 1});
  auto p = pair_attr(ctx, "padding", {0, 0});
  return one(x.dtype, {x.shape[0], o, window_out(x.shape[2], w.shape[2], s[0], p[0], "height"),
                       window_out(x.shape[3], w.shape[3], s[1], p[1], "width")});
}

Types shape_max_pool2d(const ShapeContext& ctx) { return pool(ctx); }
Types shape_avg_pool2d(const ShapeContext& ctx) { return pool(ctx); }

Types shape_cross_entropy(const ShapeContext& ctx) {
  const TensorType &logits = ctx.operands[0], &targets = ctx.operands[1];
  require_float(logits, "the logits");
  if (logits.rank() < 1) fail("the logits must have a class axis");
  if (!is_integer(targets.dtype)) fail(fmt::format("the targets must be i32 or i64, got {}", targets.str()));
  Shape expect(logits.shape.begin(), logits.shape.end() - 1);
  if (targets.shape != expect)
    fail(fmt::format("targets {} must have the shape of the logits {} without the class axis, {}", targets.str(),
                     logits.str(), shape_str(expect)));
  return one(logits.dtype, {});
}

Types shape_mse_loss(const ShapeContext& ctx) {
  const TensorType &a = ctx.operands[0], &b = ctx.operands[1];
  require_float(a, "the prediction");
  require_same_dtype(a, b);
  if (a.shape != b.shape) fail(fmt::format("prediction {} and target {} differ in shape", a.str(), b.str()));
  return one(a.dtype, {});
}

// Backward ops.

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
  return {fwd[0], fwd[0], fwd[0]};
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

}  // namespace pf::rules
