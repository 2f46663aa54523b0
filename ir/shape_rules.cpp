// Shape rules: the result types of every op from its operands' types and its
// attributes. A rule throws Error with a message naming the shapes; the
// verifier prefixes the op name and adds the location. The backward ops'
// rules are in shape_rules_grad.cpp.
#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "ir/param_piece.h"
#include "ir/shape_rule_helpers.h"

namespace pf::rules {

Types shape_param(const ShapeContext& ctx) {
  Types t = declared_type(ctx);
  require_float(t[0], "a parameter");
  // A piece: indices [begin, end) along `axis` of each of `segments` equal
  // blocks of a whole parameter of whole_rows indices there.
  const bool piece = ctx.attrs.has("piece_of"), rows = ctx.attrs.has("rows"), whole = ctx.attrs.has("whole_rows");
  if (piece != rows || piece != whole) fail("a parameter piece needs piece_of, rows=[begin,end] and whole_rows");
  if (!piece && (ctx.attrs.has("axis") || ctx.attrs.has("segments")))
    fail("axis and segments describe a parameter piece; add piece_of, rows=[begin,end] and whole_rows");
  if (piece) {
    const std::vector<int64_t> r = ctx.attrs.get_ints("rows", {});
    const int64_t total = ctx.attrs.get_int("whole_rows", 0);
    const int64_t axis = ctx.attrs.get_int("axis", 0), segments = ctx.attrs.get_int("segments", 1);
    if (ctx.attrs.get_string("piece_of", "").empty()) fail("piece_of must name the whole parameter");
    if (axis < 0 || axis >= t[0].rank())
      fail(fmt::format("axis must name a dimension of {}, got {}", t[0].str(), axis));
    if (segments < 1 || total % segments != 0)
      fail(fmt::format("segments must divide whole_rows ({}) into equal blocks, got {}", total, segments));
    if (r.size() != 2 || r[0] < 0 || r[0] >= r[1] || r[1] > total / segments)
      fail(segments == 1
               ? fmt::format("rows must be [begin,end] with 0 <= begin < end <= whole_rows ({})", total)
               : fmt::format("rows must be [begin,end] with 0 <= begin < end <= whole_rows / segments ({})",
                             total / segments));
    const int64_t size = (r[1] - r[0]) * segments, have = t[0].shape[static_cast<size_t>(axis)];
    if (have != size)
      fail(axis == 0 && segments == 1
               ? fmt::format("a piece of rows [{},{}) has {} rows, not the {} of its type {}", r[0], r[1], size, have,
                             t[0].str())
               : fmt::format("a piece of [{},{}) of {} blocks along axis {} has {} there, not the {} of its type {}",
                             r[0], r[1], segments, axis, size, have, t[0].str()));
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
Types shape_silu(const ShapeContext& ctx) { return unary_float(ctx); }
// swiglu: gate, up (, route) -> their type.
Types shape_swiglu(const ShapeContext& ctx) { return {swiglu_operands(ctx, 0)}; }

Types shape_dropout(const ShapeContext& ctx) {
  double p = ctx.attrs.get_real("p", 0);
  if (!(p >= 0 && p < 1)) fail(fmt::format("p must be in [0, 1), got {}", format_real(p)));
  return unary_float(ctx);
}

Types shape_cast(const ShapeContext& ctx) {
  return one(ctx.attrs.get_dtype("to", DType::f32), ctx.operands[0].shape);
}

Types shape_tp_copy(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_tp_reduce(const ShapeContext& ctx) { return unary_float(ctx); }
Types shape_tp_max(const ShapeContext& ctx) { return unary_float(ctx); }

namespace {

/// The sequence-parallel ops: `size` along `axis` in all, of which rank
/// `rank` of `ranks` holds [part_begin(rank), part_begin(rank + 1)). The
/// operand is the whole (`to_part`) or the rank's part, the result the other.
Types token_share(const ShapeContext& ctx, bool to_part) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the operand");
  const int64_t axis = normalize_axis(ctx.attrs.get_int("axis", 0), x.rank());
  const int64_t size = ctx.attrs.get_int("size", 0), ranks = ctx.attrs.get_int("ranks", 1),
                rank = ctx.attrs.get_int("rank", 0);
  if (ranks < 1) fail(fmt::format("ranks must be at least 1, got {}", ranks));
  if (rank < 0 || rank >= ranks) fail(fmt::format("rank {} is not one of {} ranks", rank, ranks));
  if (size < ranks) fail(fmt::format("size {} leaves some of the {} ranks no part", size, ranks));
  const int64_t part = part_begin(size, ranks, rank + 1) - part_begin(size, ranks, rank);
  const int64_t in = to_part ? size : part;
  if (x.shape[axis] != in)
    fail(fmt::format("axis {} of {} must be {} ({} of size {}), got {}", axis, x.str(), in,
                     to_part ? "the whole" : fmt::format("rank {}'s part of {} ranks", rank, ranks), size,
                     x.shape[axis]));
  Shape out = x.shape;
  out[axis] = to_part ? part : size;
  return one(x.dtype, out);
}

}  // namespace

Types shape_tp_reduce_scatter(const ShapeContext& ctx) { return token_share(ctx, true); }
Types shape_tp_all_gather(const ShapeContext& ctx) { return token_share(ctx, false); }
Types shape_tp_scatter(const ShapeContext& ctx) { return token_share(ctx, true); }
Types shape_tp_gather(const ShapeContext& ctx) { return token_share(ctx, false); }
Types shape_ep_all_gather(const ShapeContext& ctx) { return token_share(ctx, false); }
Types shape_ep_reduce_scatter(const ShapeContext& ctx) { return token_share(ctx, true); }

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

namespace {

// Integer positions for x's `axis` of P: [P] for every sequence alike, or
// [B, P] for x [B, ..., P, ...] each its own; `each` says what [P] holds.
void require_positions(const TensorType& positions, const TensorType& x, size_t axis, const std::string& each) {
  const int64_t p = x.shape[axis];
  const bool per_sequence = axis > 0 && positions.shape == Shape{x.shape[0], p};
  if (!is_integer(positions.dtype) || (positions.shape != Shape{p} && !per_sequence))
    fail(fmt::format("positions must be i32[{}] or i64[{}] ({}){}, got {}", p, p, each,
                     axis > 0 ? fmt::format(", or [{},{}] (each sequence's own)", x.shape[0], p) : "",
                     positions.str()));
}

}  // namespace

// rope: x [..., P, ..., D] with its positions at `axis` (by default the one
// before the last) and D even, and optionally the positions, i32[P] or i64[P]
// (every sequence's), or [B, P] for x [B, ..., P, ...] (each sequence's own).
Types shape_rope(const ShapeContext& ctx) {
  const TensorType& x = ctx.operands[0];
  require_float(x, "the input");
  if (x.rank() < 2) fail("the input must have rank >= 2 (positions, then features), got " + x.str());
  const int64_t axis = normalize_axis(ctx.attrs.get_int("axis", -2), x.rank());
  if (axis == x.rank() - 1) fail("axis must be the positions' axis, not the last one (the features)");
  if (x.shape.back() % 2 != 0)
    fail(fmt::format("the features (the last axis, {}) must be even: rope turns them in pairs", x.shape.back()));
  if (!(rope_theta(ctx.attrs) > 1)) fail("theta must be greater than 1");
  if (ctx.operands.size() == 2) {
    require_positions(ctx.operands[1], x, static_cast<size_t>(axis),
                      fmt::format("one per position of axis {}", axis));
  }
  return {x};
}

Types shape_attention(const ShapeContext& ctx) { return attention_like(ctx); }

// cached_attention: q, k, v as attention's (N new positions) and the caches
// k_cache, v_cache of their type with S positions in place of N; positions
// [N] integers, the first of which says how many cache rows are filled, or
// [B, N] for each of the B sequences (q's first axis) its own.
Types shape_cached_attention(const ShapeContext& ctx) {
  const Types fresh = attention_like(ShapeContext{ctx.op, ctx.operands.subspan(0, 3), ctx.attrs, {}});
  const TensorType &q = ctx.operands[0], &k = ctx.operands[1], &k_cache = ctx.operands[3], &v_cache = ctx.operands[4];
  const TensorType& positions = ctx.operands[5];
  const size_t axis = q.rank() - (attention_bthd(ctx.attrs) ? 3 : 2);  // the positions' axis
  if (v_cache != k_cache)
    fail(fmt::format("k_cache and v_cache must have one type, got {} and {}", k_cache.str(), v_cache.str()));
  Shape expected = k_cache.shape;
  if (k_cache.rank() == k.rank()) expected[axis] = k.shape[axis];
  if (k_cache.dtype != k.dtype || expected != k.shape || k_cache.shape[axis] < k.shape[axis])
    fail(fmt::format("the caches must be k's type with at least as many positions (axis {}), got {} for k {}", axis,
                     k_cache.str(), k.str()));
  require_positions(positions, q, axis, "one per new position");
  return {fresh[0]};
}

Types shape_embedding(const ShapeContext& ctx) {
  const TensorType &table = ctx.operands[0], &ids = ctx.operands[1];
  require_float(table, "the table");
  if (table.rank() != 2) fail(fmt::format("the table must be [V,C], got {}", table.str()));
  if (!is_integer(ids.dtype)) fail(fmt::format("the indices must be i32 or i64, got {}", ids.str()));
  require_vocabulary_range(ctx, table.shape[0], "table rows");
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

// logits [..., v] (the classes offset..offset+v of `vocab`), the rows'
// maximum [...] and the targets [...] -> [..., 2]: per row, the sum of
// exp(logit - maximum) and the target's logit - maximum (0 where the target
// is another rank's class).
Types shape_cross_entropy_parts(const ShapeContext& ctx) {
  const TensorType &logits = ctx.operands[0], &max = ctx.operands[1], &targets = ctx.operands[2];
  const TensorType loss = shape_cross_entropy(ShapeContext{ctx.op, std::array{logits, targets}, ctx.attrs, {}})[0];
  require_same_dtype(logits, max);
  Shape rows(logits.shape.begin(), logits.shape.end() - 1);
  if (max.shape != rows)
    fail(fmt::format("the maximum {} must have the shape of the logits {} without the class axis, {}", max.str(),
                     logits.str(), shape_str(rows)));
  require_vocabulary_range(ctx, logits.shape.back(), "classes");
  rows.push_back(2);
  return one(loss.dtype, rows);
}

// parts [..., 2] summed over the group, targets [...] -> the mean over the
// counted targets of log(sum) - target logit.
Types shape_cross_entropy_total(const ShapeContext& ctx) {
  const TensorType &parts = ctx.operands[0], &targets = ctx.operands[1];
  require_float(parts, "the parts");
  if (!is_integer(targets.dtype)) fail(fmt::format("the targets must be i32 or i64, got {}", targets.str()));
  Shape expect = targets.shape;
  expect.push_back(2);
  if (parts.shape != expect)
    fail(fmt::format("parts {} must have the targets' shape {} and a last axis of 2, {}", parts.str(),
                     targets.str(), shape_str(expect)));
  return one(parts.dtype, {});
}

Types shape_mse_loss(const ShapeContext& ctx) {
  const TensorType &a = ctx.operands[0], &b = ctx.operands[1];
  require_float(a, "the prediction");
  require_same_dtype(a, b);
  if (a.shape != b.shape) fail(fmt::format("prediction {} and target {} differ in shape", a.str(), b.str()));
  return one(a.dtype, {});
}

}  // namespace pf::rules
