// Gradient rules: one per differentiable op, in the order of ir/ops.def.
// Each rule reads the gradients of its op's results and adds the gradients
// of its operands; broadcasting is undone by `accumulate` (sum_to).
#include <fmt/format.h>

#include <array>
#include <stdexcept>

#include "passes/grad_context.h"

namespace pf {

namespace {

using Ctx = GradContext;

ValueId mul(Ctx& c, ValueId a, ValueId b) { return c.emit(OpKind::mul, {a, b}); }
ValueId neg(Ctx& c, ValueId a) { return c.emit(OpKind::neg, {a}); }

// ---- linear algebra ----

// Y = op(A) op(B), op = optional transpose. With G = dY:
//   d op(A) = G op(B)^T,  d op(B) = op(A)^T G.
// A weight of rank 2 multiplied by a batched activation ([B,T,C] x [C,N])
// gets its gradient from one GEMM over the flattened batch instead of a
// batched product followed by a reduction.
void grad_matmul(Ctx& c) {
  ValueId g = c.grad();
  bool ta = c.attrs().get_bool("transpose_a", false), tb = c.attrs().get_bool("transpose_b", false);
  const TensorType &a_type = c.operand_type(0), &b_type = c.operand_type(1);
  if (c.needs(0)) {
    ValueId b = c.operand(1);
    ValueId da = ta ? c.emit(OpKind::matmul, {b, g}, {attr_bool("transpose_a", tb), attr_bool("transpose_b", true)})
                    : c.emit(OpKind::matmul, {g, b}, {attr_bool("transpose_b", !tb)});
    c.accumulate(0, da);
  }
  if (c.needs(1)) {
    ValueId a = c.operand(0);
    if (b_type.rank() == 2 && a_type.rank() > 2 && !ta) {
      int64_t k = a_type.shape.back(), n = c.result_type(0).shape.back();
      ValueId a2 = c.emit(OpKind::reshape, {a}, {attr_ints("shape", {-1, k})});
      ValueId g2 = c.emit(OpKind::reshape, {g}, {attr_ints("shape", {-1, n})});
      c.accumulate(1, tb ? c.emit(OpKind::matmul, {g2, a2}, {attr_bool("transpose_a", true)})
                         : c.emit(OpKind::matmul, {a2, g2}, {attr_bool("transpose_a", true)}));
    } else {
      ValueId db = tb ? c.emit(OpKind::matmul, {g, a}, {attr_bool("transpose_a", true), attr_bool("transpose_b", ta)})
                      : c.emit(OpKind::matmul, {a, g}, {attr_bool("transpose_a", !ta)});
      c.accumulate(1, db);
    }
  }
}

// ---- elementwise binary ----

void grad_add(Ctx& c) {
  c.accumulate(0, c.grad());
  c.accumulate(1, c.grad());
}

void grad_sub(Ctx& c) {
  c.accumulate(0, c.grad());
  if (c.needs(1)) c.accumulate(1, neg(c, c.grad()));
}

void grad_mul(Ctx& c) {
  if (c.needs(0)) c.accumulate(0, mul(c, c.grad(), c.operand(1)));
  if (c.needs(1)) c.accumulate(1, mul(c, c.grad(), c.operand(0)));
}

// y = a / b:  da = g / b,  db = -g y / b.
void grad_div(Ctx& c) {
  ValueId g = c.grad(), b = c.operand(1);
  if (c.needs(0)) c.accumulate(0, c.emit(OpKind::div, {g, b}));
  if (c.needs(1)) c.accumulate(1, neg(c, c.emit(OpKind::div, {mul(c, g, c.result(0)), b})));
}

void grad_where(Ctx& c) {
  ValueId g = c.grad(), cond = c.operand(0), zero = c.scalar(0);
  if (c.needs(1)) c.accumulate(1, c.emit(OpKind::where, {cond, g, zero}));
  if (c.needs(2)) c.accumulate(2, c.emit(OpKind::where, {cond, zero, g}));
}

// ---- elementwise unary ----

void grad_neg(Ctx& c) { c.accumulate(0, neg(c, c.grad())); }
void grad_exp(Ctx& c) { c.accumulate(0, mul(c, c.grad(), c.result(0))); }
void grad_log(Ctx& c) { c.accumulate(0, c.emit(OpKind::div, {c.grad(), c.operand(0)})); }

// y = sqrt(x): dx = g / (2 y).
void grad_sqrt(Ctx& c) { c.accumulate(0, mul(c, c.emit(OpKind::div, {c.grad(), c.result(0)}), c.scalar(0.5))); }

// y = x^(-1/2): dx = -g y^3 / 2.
void grad_rsqrt(Ctx& c) {
  ValueId y3 = c.emit(OpKind::pow, {c.result(0)}, {attr_real("exponent", 3)});
  c.accumulate(0, mul(c, c.grad(), mul(c, y3, c.scalar(-0.5))));
}

// y = x^e: dx = g e x^(e-1).
void grad_pow(Ctx& c) {
  double e = c.attrs().get_real("exponent", 1);
  ValueId d = e == 1 ? c.scalar(1) : mul(c, c.emit(OpKind::pow, {c.operand(0)}, {attr_real("exponent", e - 1)}), c.scalar(e));
  c.accumulate(0, mul(c, c.grad(), d));
}

// y = tanh(x): dx = g (1 - y^2).
void grad_tanh(Ctx& c) {
  ValueId y = c.result(0);
  c.accumulate(0, mul(c, c.grad(), c.emit(OpKind::sub, {c.scalar(1), mul(c, y, y)})));
}

// y = sigmoid(x): dx = g y (1 - y).
void grad_sigmoid(Ctx& c) {
  ValueId y = c.result(0);
  c.accumulate(0, mul(c, c.grad(), mul(c, y, c.emit(OpKind::sub, {c.scalar(1), y}))));
}

// relu(x) > 0 exactly where x > 0: the output serves as the mask, and it is
// usually stashed anyway as the next op's input.
void grad_relu(Ctx& c) { c.accumulate(0, c.emit(OpKind::relu_grad, {c.grad(), c.result(0)})); }
void grad_gelu(Ctx& c) { c.accumulate(0, c.emit(OpKind::gelu_grad, {c.grad(), c.operand(0)})); }
void grad_gelu_erf(Ctx& c) { c.accumulate(0, c.emit(OpKind::gelu_erf_grad, {c.grad(), c.operand(0)})); }
void grad_silu(Ctx& c) { c.accumulate(0, c.emit(OpKind::silu_grad, {c.grad(), c.operand(0)})); }

// Both gradients in one pass over g, the gate and up (silu(gate) is
// recomputed, not stashed); with a route, over the slots in use.
void grad_swiglu(Ctx& c) {
  std::vector<ValueId> operands = {c.grad(), c.operand(0), c.operand(1)};
  if (c.op().operands.size() == 3) operands.push_back(c.operand(2));
  auto d = c.emit_multi(OpKind::swiglu_grad, operands, {});
  if (c.needs(0)) c.accumulate(0, d[0]);
  if (c.needs(1)) c.accumulate(1, d[1]);
}

// The mask is a pure function of (seed, index): dropping the gradient with
// the same seed and p drops exactly the same elements and scales the same.
void grad_dropout(Ctx& c) { c.accumulate(0, c.emit(OpKind::dropout, {c.grad()}, c.forward_attrs({"p", "seed"}))); }

void grad_cast(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::cast, {c.grad()}, {attr_dtype("to", c.operand_type(0).dtype)}));
}

// ---- normalisation ----

void grad_softmax(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::softmax_grad, {c.grad(), c.result(0)}, c.forward_attrs({"axis"})));
}

void grad_log_softmax(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::log_softmax_grad, {c.grad(), c.result(0)}, c.forward_attrs({"axis"})));
}

void grad_layernorm(Ctx& c) {
  auto d = c.emit_multi(OpKind::layernorm_grad, {c.grad(), c.operand(0), c.operand(1)}, c.forward_attrs({"eps"}));
  c.accumulate(0, d[0]);
  c.accumulate(1, d[1]);
  c.accumulate(2, d[2]);
}

void grad_rmsnorm(Ctx& c) {
  auto d = c.emit_multi(OpKind::rmsnorm_grad, {c.grad(), c.operand(0), c.operand(1)}, c.forward_attrs({"eps"}));
  c.accumulate(0, d[0]);
  c.accumulate(1, d[1]);
}

// A rotation's transpose turns by the opposite angles: the same positions,
// `inverse` flipped. The positions are integers and get no gradient.
void grad_rope(Ctx& c) {
  std::vector<ValueId> operands = {c.grad()};
  if (c.op().operands.size() == 2) operands.push_back(c.operand(1));
  std::vector<NamedAttr> attrs = c.forward_attrs({"theta", "axis"});
  attrs.push_back(attr_bool("inverse", !c.attrs().get_bool("inverse", false)));
  c.accumulate(0, c.emit(OpKind::rope, std::move(operands), std::move(attrs)));
}

// The flash-attention backward: attention_grad recomputes the scores from
// q, k and the forward's lse row by row, so no T x T matrix is stashed; it
// reads the output o for the row sums of g * o. lse is a by-product for
// the backward: a gradient reaching it is an error.
void grad_attention(Ctx& c) {
  if (c.grad(1) >= 0)
    throw Error("attention: its lse result is not differentiable; only the output may reach the loss", c.op().loc);
  auto d = c.emit_multi(OpKind::attention_grad,
                        {c.grad(), c.operand(0), c.operand(1), c.operand(2), c.result(0), c.result(1)},
                        c.forward_attrs({"causal", "scale", "layout"}));
  c.accumulate(0, d[0]);
  c.accumulate(1, d[1]);
  c.accumulate(2, d[2]);
}

void grad_embedding(Ctx& c) {
  std::vector<NamedAttr> attrs = c.forward_attrs({"offset", "vocab"});
  attrs.push_back(attr_int("rows", c.operand_type(0).shape[0]));
  c.accumulate(0, c.emit(OpKind::embedding_grad, {c.grad(), c.operand(1)}, std::move(attrs)));
}

// ---- mixture of experts ----

// The route is a choice (integers) and takes no gradient; the logits get
// theirs through the gates, the tokens through the slots they were sent to.
void grad_moe_gates(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::moe_gates_grad, {c.grad(), c.operand(0), c.operand(1)},
                         c.forward_attrs({"top_k", "renormalize", "first_expert"})));
}

// A slot's row is its token's: the token's gradient sums its slots'.
void grad_moe_dispatch(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::moe_combine, {c.grad(), c.operand(1)},
                         {attr_int("tokens", c.operand_type(0).shape[0])}));
}

// out[n] = sum over n's slots s of gate[s] y[s]: with D the gradient sent
// back to the slots, dy = gate D and dgate = the row sum of D y.
void grad_moe_combine(Ctx& c) {
  const ValueId slots = c.emit(OpKind::moe_dispatch, {c.grad(), c.operand(1)});
  if (c.op().operands.size() < 3) {
    c.accumulate(0, slots);
    return;
  }
  if (c.needs(0)) {
    Shape per_slot = c.operand_type(2).shape;
    per_slot.push_back(1);
    c.accumulate(0, mul(c, slots, c.emit(OpKind::reshape, {c.operand(2)}, {attr_ints("shape", per_slot)})));
  }
  if (c.needs(2))
    c.accumulate(2, c.emit(OpKind::reduce_sum, {mul(c, slots, c.operand(0))}, {attr_ints("axes", {2})}));
}

// Each expert's product over its slots in use, whose gradients are products
// over the same slots: Y = A op(B) gives dA = G op(B)^T (the slots' rows)
// and dB = A^T G summed over the slots (transposed under transpose_b); Y =
// A^T B over the slots gives dA = B G^T and dB = A G.
void grad_moe_matmul(Ctx& c) {
  const ValueId g = c.grad(), a = c.operand(0), b = c.operand(1), route = c.operand(2);
  const bool ta = c.attrs().get_bool("transpose_a", false), tb = c.attrs().get_bool("transpose_b", false);
  auto product = [&](ValueId x, ValueId y, bool transpose_a, bool transpose_b) {
    return c.emit(OpKind::moe_matmul, {x, y, route},
                  {attr_bool("transpose_a", transpose_a), attr_bool("transpose_b", transpose_b)});
  };
  if (ta) {
    if (c.needs(0)) c.accumulate(0, product(b, g, false, true));
    if (c.needs(1)) c.accumulate(1, product(a, g, false, false));
    return;
  }
  if (c.needs(0)) c.accumulate(0, product(g, b, false, !tb));
  if (c.needs(1)) c.accumulate(1, tb ? product(g, a, true, false) : product(a, g, true, false));
}

// ---- data movement ----

void grad_reshape(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::reshape, {c.grad()}, {attr_ints("shape", c.operand_type(0).shape)}));
}

void grad_transpose(Ctx& c) {
  std::vector<int64_t> perm = c.attrs().get_ints("perm", {});
  int64_t rank = static_cast<int64_t>(perm.size());
  std::vector<int64_t> inverse(perm.size());
  for (int64_t i = 0; i < rank; ++i) inverse[(perm[i] + rank) % rank] = i;
  c.accumulate(0, c.emit(OpKind::transpose, {c.grad()}, {attr_ints("perm", inverse)}));
}

int64_t axis_of(const Ctx& c, const TensorType& t) {
  int64_t axis = c.attrs().get_int("axis", -1);
  return axis < 0 ? axis + t.rank() : axis;
}

void grad_slice(Ctx& c) {
  int64_t axis = axis_of(c, c.operand_type(0));
  c.accumulate(0, c.emit(OpKind::slice_grad, {c.grad()},
                         {attr_int("axis", axis), attr_int("start", c.attrs().get_int("start", 0)),
                          attr_int("size", c.operand_type(0).shape[axis])}));
}

void grad_concat(Ctx& c) {
  int64_t axis = axis_of(c, c.operand_type(0));
  int64_t offset = 0;
  for (size_t i = 0; i < c.op().operands.size(); ++i) {
    int64_t size = c.operand_type(static_cast<int>(i)).shape[axis];
    if (c.needs(static_cast<int>(i)))
      c.accumulate(static_cast<int>(i),
                   c.emit(OpKind::slice, {c.grad()},
                          {attr_int("axis", axis), attr_int("start", offset), attr_int("end", offset + size)}));
    offset += size;
  }
}

void grad_split(Ctx& c) {
  int64_t axis = axis_of(c, c.operand_type(0));
  std::vector<ValueId> parts;
  for (size_t r = 0; r < c.op().results.size(); ++r) {
    ValueId g = c.grad(static_cast<int>(r));
    if (g < 0) g = c.emit(OpKind::broadcast_to, {c.scalar(0)}, {attr_ints("shape", c.result_type(static_cast<int>(r)).shape)});
    parts.push_back(g);
  }
  c.accumulate(0, parts.size() == 1 ? parts[0] : c.emit(OpKind::concat, parts, {attr_int("axis", axis)}));
}

// ---- reductions ----

// The reduced gradient with the reduced axes kept as size 1, broadcast back.
ValueId spread(Ctx& c, ValueId g) {
  const TensorType& x = c.operand_type(0);
  Shape kept = x.shape;
  for (int64_t a : c.attrs().get_ints("axes", {})) kept[(a + x.rank()) % x.rank()] = 1;
  if (c.type(g).shape != kept) g = c.emit(OpKind::reshape, {g}, {attr_ints("shape", kept)});
  return c.emit(OpKind::broadcast_to, {g}, {attr_ints("shape", x.shape)});
}

// ---- tensor parallelism ----

// Megatron's conjugate pair. tp_copy gives every rank the whole activation,
// and each rank's shared products send back a partial gradient of it: the
// ranks' sum is the gradient. tp_reduce sums partial products into the
// whole, which every rank then holds: each rank's gradient of its partial
// is the whole gradient, unchanged.
void grad_tp_copy(Ctx& c) { c.accumulate(0, c.emit(OpKind::tp_reduce, {c.grad()})); }
void grad_tp_reduce(Ctx& c) { c.accumulate(0, c.grad()); }

// Sequence parallelism's two pairs. A reduce-scatter's gradient is every
// rank's whole gradient of its partial product: the parts gathered. An
// all-gather for column-parallel products gets partial gradients back, which
// the ranks sum, each keeping its part. tp_scatter and tp_gather pass whole
// gradients that every rank holds alike: the parts gathered, or the rank's
// part taken.
void token_share_grad(Ctx& c, OpKind conjugate) {
  c.accumulate(0, c.emit(conjugate, {c.grad()}, c.forward_attrs({"axis", "size", "rank", "ranks"})));
}
void grad_tp_reduce_scatter(Ctx& c) { token_share_grad(c, OpKind::tp_all_gather); }
void grad_tp_all_gather(Ctx& c) { token_share_grad(c, OpKind::tp_reduce_scatter); }
void grad_tp_scatter(Ctx& c) { token_share_grad(c, OpKind::tp_gather); }
void grad_tp_gather(Ctx& c) { token_share_grad(c, OpKind::tp_scatter); }
// The expert-parallel pair, over the replicas: every replica's experts send
// back partial gradients of the tokens they were handed, which the replicas
// sum, each keeping its own; a replica's part of the combined sum took
// every replica's partial, whose gradient is the replicas' gradients gathered.
void grad_ep_all_gather(Ctx& c) { token_share_grad(c, OpKind::ep_reduce_scatter); }
void grad_ep_reduce_scatter(Ctx& c) { token_share_grad(c, OpKind::ep_all_gather); }

void grad_reduce_sum(Ctx& c) { c.accumulate(0, spread(c, c.grad())); }

void grad_reduce_mean(Ctx& c) {
  const TensorType& x = c.operand_type(0);
  int64_t n = 1;
  for (int64_t a : c.attrs().get_ints("axes", {})) n *= x.shape[(a + x.rank()) % x.rank()];
  c.accumulate(0, mul(c, spread(c, c.grad()), c.scalar(1.0 / static_cast<double>(n))));
}

void grad_reduce_max(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::reduce_max_grad, {c.grad(), c.operand(0), c.result(0)},
                         c.forward_attrs({"axes", "keepdims"})));
}

// ---- convolution and pooling ----

void grad_conv2d(Ctx& c) {
  ValueId g = c.grad();
  auto attrs = c.forward_attrs({"stride", "padding", "groups"});
  if (c.needs(0)) {
    auto a = attrs;
    a.push_back(attr_ints("input_shape", c.operand_type(0).shape));
    c.accumulate(0, c.emit(OpKind::conv2d_grad_input, {g, c.operand(1)}, a));
  }
  if (c.needs(1)) {
    auto a = attrs;
    a.push_back(attr_ints("weight_shape", c.operand_type(1).shape));
    c.accumulate(1, c.emit(OpKind::conv2d_grad_weight, {g, c.operand(0)}, a));
  }
  if (c.op().operands.size() == 3 && c.needs(2))
    c.accumulate(2, c.emit(OpKind::reduce_sum, {g}, {attr_ints("axes", {0, 2, 3})}));
}

void grad_max_pool2d(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::max_pool2d_grad, {c.grad(), c.operand(0)},
                         c.forward_attrs({"kernel", "stride", "padding"})));
}

void grad_avg_pool2d(Ctx& c) {
  auto attrs = c.forward_attrs({"kernel", "stride", "padding"});
  attrs.push_back(attr_ints("input_shape", c.operand_type(0).shape));
  c.accumulate(0, c.emit(OpKind::avg_pool2d_grad, {c.grad()}, attrs));
}

// ---- losses ----

void grad_cross_entropy(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::cross_entropy_grad, {c.grad(), c.operand(0), c.operand(1)},
                         c.forward_attrs({"ignore_index"})));
}

// The maximum only steadies the exponentials: the loss that the parts add
// up to does not depend on it, so it takes no gradient (tp_max, which
// gives it, has none either).
void grad_cross_entropy_parts(Ctx& c) {
  if (c.needs(1))
    throw Error("cross_entropy_parts: the maximum steadies the exponentials and takes no gradient; give it through "
                "tp_max",
                c.op().loc);
  c.accumulate(0, c.emit(OpKind::cross_entropy_parts_grad, {c.grad(), c.operand(0), c.operand(1), c.operand(2)},
                         c.forward_attrs({"offset", "vocab", "ignore_index"})));
}

void grad_cross_entropy_total(Ctx& c) {
  c.accumulate(0, c.emit(OpKind::cross_entropy_total_grad, {c.grad(), c.operand(0), c.operand(1)},
                         c.forward_attrs({"ignore_index"})));
}

// loss = mean((a - b)^2): da = 2 (a - b) g / n, db = -da.
void grad_mse_loss(Ctx& c) {
  double n = static_cast<double>(c.operand_type(0).numel());
  ValueId diff = c.emit(OpKind::sub, {c.operand(0), c.operand(1)});
  ValueId da = mul(c, mul(c, diff, c.scalar(2.0 / n)), c.grad());
  c.accumulate(0, da);
  if (c.needs(1)) c.accumulate(1, neg(c, da));
}

struct Entry {
  bool set = false;
  GradRule rule = nullptr;
};

std::array<Entry, kNumOps> build_table() {
  std::array<Entry, kNumOps> t{};
  auto rule = [&](OpKind k, GradRule r) { t[static_cast<int>(k)] = {true, r}; };
  auto none = [&](OpKind k) { t[static_cast<int>(k)] = {true, nullptr}; };
  // Sources have no float operand; param is a leaf; calls are inlined first.
  for (OpKind k : {OpKind::param, OpKind::constant, OpKind::dim_value, OpKind::causal_mask, OpKind::call}) none(k);
  rule(OpKind::matmul, grad_matmul);
  rule(OpKind::add, grad_add);
  rule(OpKind::sub, grad_sub);
  rule(OpKind::mul, grad_mul);
  rule(OpKind::div, grad_div);
  rule(OpKind::where, grad_where);
  rule(OpKind::neg, grad_neg);
  rule(OpKind::exp, grad_exp);
  rule(OpKind::log, grad_log);
  rule(OpKind::sqrt, grad_sqrt);
  rule(OpKind::rsqrt, grad_rsqrt);
  rule(OpKind::pow, grad_pow);
  rule(OpKind::tanh, grad_tanh);
  rule(OpKind::sigmoid, grad_sigmoid);
  rule(OpKind::relu, grad_relu);
  rule(OpKind::gelu, grad_gelu);
  rule(OpKind::gelu_erf, grad_gelu_erf);
  rule(OpKind::silu, grad_silu);
  rule(OpKind::swiglu, grad_swiglu);
  rule(OpKind::dropout, grad_dropout);
  rule(OpKind::cast, grad_cast);
  rule(OpKind::softmax, grad_softmax);
  rule(OpKind::log_softmax, grad_log_softmax);
  rule(OpKind::layernorm, grad_layernorm);
  rule(OpKind::rmsnorm, grad_rmsnorm);
  rule(OpKind::rope, grad_rope);
  rule(OpKind::attention, grad_attention);
  rule(OpKind::embedding, grad_embedding);
  // Which expert takes a token is a choice, constant to autodiff (as Switch and GShard treat it).
  none(OpKind::moe_route);
  none(OpKind::moe_load);
  rule(OpKind::moe_gates, grad_moe_gates);
  rule(OpKind::moe_dispatch, grad_moe_dispatch);
  rule(OpKind::moe_combine, grad_moe_combine);
  rule(OpKind::moe_matmul, grad_moe_matmul);
  rule(OpKind::reshape, grad_reshape);
  rule(OpKind::transpose, grad_transpose);
  rule(OpKind::slice, grad_slice);
  rule(OpKind::concat, grad_concat);
  rule(OpKind::split, grad_split);
  rule(OpKind::tp_copy, grad_tp_copy);
  rule(OpKind::tp_reduce, grad_tp_reduce);
  rule(OpKind::tp_reduce_scatter, grad_tp_reduce_scatter);
  rule(OpKind::tp_all_gather, grad_tp_all_gather);
  rule(OpKind::tp_scatter, grad_tp_scatter);
  rule(OpKind::tp_gather, grad_tp_gather);
  rule(OpKind::ep_all_gather, grad_ep_all_gather);
  rule(OpKind::ep_reduce_scatter, grad_ep_reduce_scatter);
  rule(OpKind::reduce_sum, grad_reduce_sum);
  rule(OpKind::reduce_mean, grad_reduce_mean);
  rule(OpKind::reduce_max, grad_reduce_max);
  rule(OpKind::conv2d, grad_conv2d);
  rule(OpKind::max_pool2d, grad_max_pool2d);
  rule(OpKind::avg_pool2d, grad_avg_pool2d);
  rule(OpKind::cross_entropy, grad_cross_entropy);
  rule(OpKind::cross_entropy_parts, grad_cross_entropy_parts);
  rule(OpKind::cross_entropy_total, grad_cross_entropy_total);
  rule(OpKind::mse_loss, grad_mse_loss);
  // The backward ops are what gradients are made of; they are not
  // differentiated again.
  for (OpKind k : {OpKind::broadcast_to, OpKind::sum_to, OpKind::relu_grad, OpKind::gelu_grad,
                   OpKind::gelu_erf_grad, OpKind::silu_grad, OpKind::swiglu_grad, OpKind::softmax_grad,
                   OpKind::log_softmax_grad, OpKind::layernorm_grad, OpKind::rmsnorm_grad, OpKind::attention_grad,
                   OpKind::embedding_grad, OpKind::slice_grad, OpKind::reduce_max_grad, OpKind::conv2d_grad_input,
                   OpKind::conv2d_grad_weight, OpKind::max_pool2d_grad, OpKind::avg_pool2d_grad,
                   OpKind::cross_entropy_grad, OpKind::cross_entropy_parts_grad, OpKind::cross_entropy_total_grad,
                   OpKind::moe_gates_grad})
    none(k);
  // Decoding reads a trained model step by step; nothing trains through it.
  none(OpKind::cached_attention);
  // A maximum over the group steadies a softmax of shares: constant to autodiff.
  none(OpKind::tp_max);
  return t;
}

}  // namespace

GradRule grad_rule(OpKind kind) {
  static const std::array<Entry, kNumOps> table = build_table();
  const Entry& e = table[static_cast<int>(kind)];
  if (!e.set) throw std::logic_error(fmt::format("op {} has no entry in the gradient table", op_name(kind)));
  return e.rule;
}

}  // namespace pf
