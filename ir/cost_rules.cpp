// Cost rules: FLOPs and bytes moved by one execution of each op, from its
// concrete types. These feed the roofline estimate of the partitioner; a
// measured profile replaces them where one is given.
#include <algorithm>
#include <numeric>

#include "ir/op_table.h"

namespace pf::rules {

namespace {

using Types = std::span<const TensorType>;

int64_t bytes_of(Types ts) {
  int64_t b = 0;
  for (const TensorType& t : ts) b += t.bytes();
  return b;
}

// Reads every operand and writes every result once.
OpCost streaming(Types in, Types out, int64_t flops_per_output) {
  int64_t n = 0;
  for (const TensorType& t : out) n += t.numel();
  return {n * flops_per_output, bytes_of(in) + bytes_of(out)};
}

OpCost free_of_cost(Types, Types, const OpAttrs&) { return {}; }

}  // namespace

OpCost cost_param(Types in, Types out, const OpAttrs& a) { return free_of_cost(in, out, a); }
OpCost cost_constant(Types in, Types out, const OpAttrs& a) { return free_of_cost(in, out, a); }
OpCost cost_dim_value(Types in, Types out, const OpAttrs& a) { return free_of_cost(in, out, a); }
OpCost cost_causal_mask(Types, Types out, const OpAttrs&) { return {0, bytes_of(out)}; }
OpCost cost_call(Types in, Types out, const OpAttrs& a) { return free_of_cost(in, out, a); }

OpCost cost_matmul(Types in, Types out, const OpAttrs& attrs) {
  const TensorType& a = in[0];
  int64_t k = a.shape[a.rank() - (attrs.get_bool("transpose_a", false) ? 2 : 1)];
  return {2 * out[0].numel() * k, bytes_of(in) + bytes_of(out)};
}

OpCost cost_add(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_sub(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_mul(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_div(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_where(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_neg(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
// Transcendentals count as a handful of FLOPs each (a polynomial and a scale).
OpCost cost_exp(Types in, Types out, const OpAttrs&) { return streaming(in, out, 4); }
OpCost cost_log(Types in, Types out, const OpAttrs&) { return streaming(in, out, 4); }
OpCost cost_sqrt(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_rsqrt(Types in, Types out, const OpAttrs&) { return streaming(in, out, 2); }
OpCost cost_pow(Types in, Types out, const OpAttrs&) { return streaming(in, out, 8); }
OpCost cost_tanh(Types in, Types out, const OpAttrs&) { return streaming(in, out, 6); }
OpCost cost_sigmoid(Types in, Types out, const OpAttrs&) { return streaming(in, out, 6); }
OpCost cost_relu(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
// gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
OpCost cost_gelu(Types in, Types out, const OpAttrs&) { return streaming(in, out, 14); }
// gelu_erf(x) = 0.5 x (1 + erf(x / sqrt(2))); erf as a polynomial and an exp.
OpCost cost_gelu_erf(Types in, Types out, const OpAttrs&) { return streaming(in, out, 20); }
// silu(x) = x sigmoid(x): an exp, an add and a division.
OpCost cost_silu(Types in, Types out, const OpAttrs&) { return streaming(in, out, 7); }
// silu, then a product; op_cost counts the share of a route's slots in use.
OpCost cost_swiglu(Types in, Types out, const OpAttrs&) { return streaming(in, out, 8); }
// A counter-based hash per element, a compare and a scale.
OpCost cost_dropout(Types in, Types out, const OpAttrs&) { return streaming(in, out, 4); }
OpCost cost_cast(Types in, Types out, const OpAttrs&) { return streaming(in, out, 0); }

// max, subtract, exp, sum, divide (or log).
OpCost cost_softmax(Types in, Types out, const OpAttrs&) { return streaming(in, out, 8); }
OpCost cost_log_softmax(Types in, Types out, const OpAttrs&) { return streaming(in, out, 8); }
// mean, variance, normalise, scale, shift.
OpCost cost_layernorm(Types in, Types out, const OpAttrs&) { return streaming(in, out, 8); }
OpCost cost_rmsnorm(Types in, Types out, const OpAttrs&) { return streaming(in, out, 5); }
// Two products and an add per element; the angles' sines and cosines, one
// pair per position and feature pair, are few beside them.
OpCost cost_rope(Types in, Types out, const OpAttrs&) { return streaming(in, out, 3); }

// Attention counts its products as matmul does (2 FLOPs per multiply-add):
// q k^T and p v are 2 T*T*D each per head; a causal mask skips half of
// every product (the upper triangle). The exps and the online softmax's
// rescaling are not counted, and no T x T score matrix reaches memory:
// q, k, v are read and o and lse written once.
namespace {
int64_t attention_products(const TensorType& q, const OpAttrs& attrs) {
  const AttentionHeads h = attention_heads(attrs, q);  // either layout: the same products
  const int64_t full = 2 * h.n * h.t * h.t * h.d;
  return attrs.get_bool("causal", false) ? full / 2 : full;
}
}  // namespace
OpCost cost_attention(Types in, Types out, const OpAttrs& attrs) {
  return {2 * attention_products(in[0], attrs), bytes_of(in) + bytes_of(out)};
}

// New positions' queries over a cache of S positions: q k^T and p v of
// N x S x D per head at most (a full cache), and the caches read once.
OpCost cost_cached_attention(Types in, Types out, const OpAttrs& attrs) {
  const AttentionHeads h = attention_heads(attrs, in[0]), cache = attention_heads(attrs, in[3]);
  return {4 * h.n * h.t * cache.t * h.d, bytes_of(in) + bytes_of(out)};
}

// A gather: reads the selected rows (as many bytes as it writes), not the table.
OpCost cost_embedding(Types in, Types out, const OpAttrs&) {
  return {0, in[1].bytes() + 2 * out[0].bytes()};
}

// tp_copy hands its operand on unchanged (a view); tp_reduce's sum over the
// group is priced here as one pass over the values, its traffic by the cost
// model's tensor parallelism (ring_all_reduce_s).
OpCost cost_tp_copy(Types, Types, const OpAttrs&) { return {}; }
OpCost cost_tp_reduce(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_tp_max(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
// The sequence-parallel ops copy the part in or out of the whole; their
// traffic is priced with tensor parallelism's (ring_all_reduce_s).
OpCost cost_tp_reduce_scatter(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_tp_all_gather(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_tp_scatter(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_tp_gather(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
// The expert-parallel ones too; their traffic is the expert-parallel group's.
OpCost cost_ep_all_gather(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
OpCost cost_ep_reduce_scatter(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }

// A reshape is a view: nothing moves.
OpCost cost_reshape(Types, Types, const OpAttrs&) { return {}; }
OpCost cost_transpose(Types in, Types out, const OpAttrs&) { return streaming(in, out, 0); }
OpCost cost_slice(Types, Types out, const OpAttrs&) { return {0, 2 * bytes_of(out)}; }
OpCost cost_concat(Types in, Types out, const OpAttrs&) { return streaming(in, out, 0); }
OpCost cost_split(Types in, Types out, const OpAttrs&) { return streaming(in, out, 0); }

OpCost cost_reduce_sum(Types in, Types out, const OpAttrs&) { return {in[0].numel(), bytes_of(in) + bytes_of(out)}; }
OpCost cost_reduce_mean(Types in, Types out, const OpAttrs&) { return {in[0].numel(), bytes_of(in) + bytes_of(out)}; }
OpCost cost_reduce_max(Types in, Types out, const OpAttrs&) { return {in[0].numel(), bytes_of(in) + bytes_of(out)}; }

OpCost cost_conv2d(Types in, Types out, const OpAttrs&) {
  const TensorType& w = in[1];
  int64_t per_output = 2 * w.shape[1] * w.shape[2] * w.shape[3];  // (C/groups) * kh * kw MACs
  int64_t flops = out[0].numel() * per_output + (in.size() == 3 ? out[0].numel() : 0);
  return {flops, bytes_of(in) + bytes_of(out)};
}

OpCost cost_max_pool2d(Types in, Types out, const OpAttrs& attrs) {
  auto k = attrs.get_ints("kernel", {1, 1});
  return {out[0].numel() * k[0] * k[1], bytes_of(in) + bytes_of(out)};
}
OpCost cost_avg_pool2d(Types in, Types out, const OpAttrs& attrs) { return cost_max_pool2d(in, out, attrs); }

// log-softmax over the classes, then a gather and a mean.
OpCost cost_cross_entropy(Types in, Types out, const OpAttrs&) {
  return {8 * in[0].numel(), bytes_of(in) + bytes_of(out)};
}
// An exponential, a sum and a pick per class: the softmax half of cross_entropy.
OpCost cost_cross_entropy_parts(Types in, Types out, const OpAttrs&) {
  return {4 * in[0].numel(), bytes_of(in) + bytes_of(out)};
}
// A log and a difference per row.
OpCost cost_cross_entropy_total(Types in, Types out, const OpAttrs&) {
  return {2 * in[1].numel(), bytes_of(in) + bytes_of(out)};
}
OpCost cost_mse_loss(Types in, Types out, const OpAttrs&) { return {3 * in[0].numel(), bytes_of(in) + bytes_of(out)}; }

// Backward ops.

// A broadcast copies; its adjoint adds every input element into its target.
OpCost cost_broadcast_to(Types in, Types out, const OpAttrs&) { return streaming(in, out, 0); }
OpCost cost_sum_to(Types in, Types out, const OpAttrs&) { return {in[0].numel(), bytes_of(in) + bytes_of(out)}; }
OpCost cost_relu_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 1); }
// The derivative of the tanh form: one exp, a polynomial and a few products.
OpCost cost_gelu_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 18); }
OpCost cost_gelu_erf_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 24); }
// The sigmoid again, then g (s + x s (1 - s)).
OpCost cost_silu_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 11); }
// Per element: g up, its silu_grad, and g silu(gate) for up's.
OpCost cost_swiglu_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 10); }
// A product and sum along the axis, then a subtract and a multiply.
OpCost cost_softmax_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 4); }
// A sum along the axis, an exp, a multiply and a subtract.
OpCost cost_log_softmax_grad(Types in, Types out, const OpAttrs&) { return streaming(in, out, 7); }

// Per element of x: the statistics again, x-hat, two row sums, dx, and the
// column sums of the parameters' gradients.
OpCost cost_layernorm_grad(Types in, Types out, const OpAttrs&) {
  return {16 * in[1].numel(), bytes_of(in) + bytes_of(out)};
}
OpCost cost_rmsnorm_grad(Types in, Types out, const OpAttrs&) {
  return {11 * in[1].numel(), bytes_of(in) + bytes_of(out)};
}

// The flash-attention backward: q k^T recomputed, then dv = p^T g,
// dp = g v^T, dq = ds k and dk = ds^T q: five products of the forward's two.
OpCost cost_attention_grad(Types in, Types out, const OpAttrs& attrs) {
  return {5 * attention_products(in[1], attrs), bytes_of(in) + bytes_of(out)};
}

// A router's choice: each token's top_k of E logits, a comparison each.
OpCost cost_moe_route(Types in, Types out, const OpAttrs& attrs) {
  return {in[0].numel() * attrs.get_int("top_k", 1), bytes_of(in) + bytes_of(out)};
}
// A softmax per slot over the token's logits.
OpCost cost_moe_gates(Types in, Types out, const OpAttrs&) {
  return {out[0].numel() * 4 * in[0].shape[1], bytes_of(in) + bytes_of(out)};
}
// Moves rows: each slot's (dispatch) or each token's (combine) written once,
// the rows read once.
OpCost cost_moe_dispatch(Types in, Types out, const OpAttrs&) { return {0, 2 * out[0].bytes() + in[1].bytes()}; }
OpCost cost_moe_combine(Types in, Types out, const OpAttrs&) { return streaming(in, out, 2); }
OpCost cost_moe_load(Types in, Types out, const OpAttrs& attrs) { return cost_moe_route(in, out, attrs); }
// Every slot's products; op_cost (passes/cost_summary.cpp) counts the
// share a balanced route fills, as the types alone do not say how many
// tokens choose each expert. A measured profile prices what runs.
OpCost cost_moe_matmul(Types in, Types out, const OpAttrs& attrs) {
  const int64_t k = attrs.get_bool("transpose_a", false) ? in[0].shape[1] : in[0].shape[2];
  return {2 * out[0].numel() * k, bytes_of(in) + bytes_of(out)};
}
OpCost cost_moe_gates_grad(Types in, Types out, const OpAttrs&) {
  return {out[0].numel() * 8, bytes_of(in) + bytes_of(out)};
}
OpCost cost_embedding_grad(Types in, Types out, const OpAttrs&) {
  return {in[0].numel(), in[0].bytes() + in[1].bytes() + out[0].bytes()};
}
// Reads g and writes the whole result, zeros included.
OpCost cost_slice_grad(Types in, Types out, const OpAttrs&) { return {0, bytes_of(in) + bytes_of(out)}; }
// Per element of x: a compare against its group's maximum, a count and a divide.
OpCost cost_reduce_max_grad(Types in, Types out, const OpAttrs&) {
  return {3 * in[1].numel(), bytes_of(in) + bytes_of(out)};
}

// Both convolution gradients are GEMMs of the forward's size: 2 * (C/groups)
// * kh * kw FLOPs per element of the forward's output, which g has the shape of.
OpCost cost_conv2d_grad_input(Types in, Types out, const OpAttrs&) {
  const TensorType& w = in[1];
  return {2 * in[0].numel() * w.shape[1] * w.shape[2] * w.shape[3], bytes_of(in) + bytes_of(out)};
}
OpCost cost_conv2d_grad_weight(Types in, Types out, const OpAttrs&) {
  const TensorType& w = out[0];
  return {2 * in[0].numel() * w.shape[1] * w.shape[2] * w.shape[3], bytes_of(in) + bytes_of(out)};
}

// Each output's window is visited once, as in the forward.
OpCost cost_max_pool2d_grad(Types in, Types out, const OpAttrs& attrs) {
  auto k = attrs.get_ints("kernel", {1, 1});
  return {in[0].numel() * k[0] * k[1], bytes_of(in) + bytes_of(out)};
}
OpCost cost_avg_pool2d_grad(Types in, Types out, const OpAttrs& attrs) { return cost_max_pool2d_grad(in, out, attrs); }

// softmax over the classes, minus the one-hot target, scaled.
OpCost cost_cross_entropy_grad(Types in, Types out, const OpAttrs&) {
  return {10 * in[1].numel(), bytes_of(in) + bytes_of(out)};
}

// The exponentials again, scaled, and the target's class.
OpCost cost_cross_entropy_parts_grad(Types in, Types out, const OpAttrs&) {
  return {4 * in[1].numel(), bytes_of(in) + bytes_of(out)};
}
OpCost cost_cross_entropy_total_grad(Types in, Types out, const OpAttrs&) {
  return {2 * in[2].numel(), bytes_of(in) + bytes_of(out)};
}

}  // namespace pf::rules
