// The op table: operands and attributes of every op, tied to its rules.
#include "ir/op_table.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>

#include "ir/diagnostic.h"

namespace pf {

namespace {

using K = AttrKind;
constexpr bool req = true;
constexpr bool opt = false;

#define RULES(name) rules::shape_##name, rules::cost_##name
// A rank's part of the tokens: along `axis`, `size` in all, cut over `ranks` ranks.
#define TOKEN_SHARE_ATTRS {{"axis", K::dim, req}, {"size", K::dim, req}, {"rank", K::dim, req}, {"ranks", K::dim, req}}

const std::array<OpInfo, kNumOps>& table() {
  static const std::array<OpInfo, kNumOps> rows = {{
      {OpKind::param, "param", 0, 0,
       {{"init", K::init, req}, {"piece_of", K::string, opt}, {"rows", K::dims, opt}, {"whole_rows", K::dim, opt},
        {"axis", K::dim, opt}, {"segments", K::dim, opt}},
       RULES(param), true, false},
      {OpKind::constant, "constant", 0, 0, {{"value", K::real, req}}, RULES(constant), true},
      {OpKind::dim_value, "dim_value", 0, 0, {{"value", K::dim, req}}, RULES(dim_value), true},
      {OpKind::causal_mask, "causal_mask", 0, 0, {}, RULES(causal_mask), true},
      {OpKind::call, "call", 0, -1, {{"scope", K::string, req}, {"repeat", K::dim, opt}}, RULES(call), false, false},
      {OpKind::matmul, "matmul", 2, 2,
       {{"transpose_a", K::boolean, opt}, {"transpose_b", K::boolean, opt}}, RULES(matmul)},
      {OpKind::add, "add", 2, 2, {}, RULES(add)},
      {OpKind::sub, "sub", 2, 2, {}, RULES(sub)},
      {OpKind::mul, "mul", 2, 2, {}, RULES(mul)},
      {OpKind::div, "div", 2, 2, {}, RULES(div)},
      {OpKind::where, "where", 3, 3, {}, RULES(where)},
      {OpKind::neg, "neg", 1, 1, {}, RULES(neg)},
      {OpKind::exp, "exp", 1, 1, {}, RULES(exp)},
      {OpKind::log, "log", 1, 1, {}, RULES(log)},
      {OpKind::sqrt, "sqrt", 1, 1, {}, RULES(sqrt)},
      {OpKind::rsqrt, "rsqrt", 1, 1, {}, RULES(rsqrt)},
      {OpKind::pow, "pow", 1, 1, {{"exponent", K::real, req}}, RULES(pow)},
      {OpKind::tanh, "tanh", 1, 1, {}, RULES(tanh)},
      {OpKind::sigmoid, "sigmoid", 1, 1, {}, RULES(sigmoid)},
      {OpKind::relu, "relu", 1, 1, {}, RULES(relu)},
      {OpKind::gelu, "gelu", 1, 1, {}, RULES(gelu)},
      {OpKind::gelu_erf, "gelu_erf", 1, 1, {}, RULES(gelu_erf)},
      {OpKind::silu, "silu", 1, 1, {}, RULES(silu)},
      {OpKind::swiglu, "swiglu", 2, 3, {}, RULES(swiglu)},
      {OpKind::dropout, "dropout", 1, 1, {{"p", K::real, req}, {"seed", K::dim, req}}, RULES(dropout)},
      {OpKind::cast, "cast", 1, 1, {{"to", K::dtype, req}}, RULES(cast)},
      {OpKind::softmax, "softmax", 1, 1, {{"axis", K::dim, opt}}, RULES(softmax)},
      {OpKind::log_softmax, "log_softmax", 1, 1, {{"axis", K::dim, opt}}, RULES(log_softmax)},
      {OpKind::layernorm, "layernorm", 3, 3, {{"eps", K::real, opt}}, RULES(layernorm)},
      {OpKind::rmsnorm, "rmsnorm", 2, 2, {{"eps", K::real, opt}}, RULES(rmsnorm)},
      {OpKind::rope, "rope", 1, 2, {{"theta", K::real, opt}, {"axis", K::dim, opt}, {"inverse", K::boolean, opt}},
       RULES(rope)},
      {OpKind::attention, "attention", 3, 3,
       {{"causal", K::boolean, opt}, {"scale", K::real, opt}, {"layout", K::string, opt}}, RULES(attention)},
      {OpKind::cached_attention, "cached_attention", 6, 6, {{"scale", K::real, opt}, {"layout", K::string, opt}},
       RULES(cached_attention)},
      {OpKind::embedding, "embedding", 2, 2, {{"offset", K::dim, opt}, {"vocab", K::dim, opt}}, RULES(embedding)},
      {OpKind::moe_route, "moe_route", 1, 1,
       {{"top_k", K::dim, req},
        {"capacity_factor", K::real, opt},
        {"drop", K::string, opt},
        {"first_expert", K::dim, opt},
        {"experts", K::dim, opt}},
       RULES(moe_route)},
      {OpKind::moe_gates, "moe_gates", 2, 2,
       {{"top_k", K::dim, req}, {"renormalize", K::boolean, opt}, {"first_expert", K::dim, opt}},
       RULES(moe_gates)},
      {OpKind::moe_dispatch, "moe_dispatch", 2, 2, {}, RULES(moe_dispatch)},
      {OpKind::moe_combine, "moe_combine", 2, 3, {{"tokens", K::dim, req}}, RULES(moe_combine)},
      {OpKind::moe_load, "moe_load", 1, 1, {{"top_k", K::dim, req}}, RULES(moe_load)},
      {OpKind::moe_matmul, "moe_matmul", 3, 3, {{"transpose_a", K::boolean, opt}, {"transpose_b", K::boolean, opt}},
       RULES(moe_matmul)},
      {OpKind::reshape, "reshape", 1, 1, {{"shape", K::dims, req}}, RULES(reshape)},
      {OpKind::transpose, "transpose", 1, 1, {{"perm", K::dims, req}}, RULES(transpose)},
      {OpKind::slice, "slice", 1, 1,
       {{"axis", K::dim, req}, {"start", K::dim, req}, {"end", K::dim, req}}, RULES(slice)},
      {OpKind::concat, "concat", 1, -1, {{"axis", K::dim, req}}, RULES(concat)},
      {OpKind::split, "split", 1, 1, {{"axis", K::dim, req}, {"sizes", K::dims, req}}, RULES(split)},
      {OpKind::tp_copy, "tp_copy", 1, 1, {}, RULES(tp_copy), false, false},
      {OpKind::tp_reduce, "tp_reduce", 1, 1, {}, RULES(tp_reduce), false, false},
      {OpKind::tp_max, "tp_max", 1, 1, {}, RULES(tp_max), false, false},
      {OpKind::tp_reduce_scatter, "tp_reduce_scatter", 1, 1, TOKEN_SHARE_ATTRS, RULES(tp_reduce_scatter), false,
       false},
      {OpKind::tp_all_gather, "tp_all_gather", 1, 1, TOKEN_SHARE_ATTRS, RULES(tp_all_gather), false, false},
      {OpKind::tp_scatter, "tp_scatter", 1, 1, TOKEN_SHARE_ATTRS, RULES(tp_scatter), false, false},
      {OpKind::tp_gather, "tp_gather", 1, 1, TOKEN_SHARE_ATTRS, RULES(tp_gather), false, false},
      {OpKind::ep_all_gather, "ep_all_gather", 1, 1, TOKEN_SHARE_ATTRS, RULES(ep_all_gather), false, false},
      {OpKind::ep_reduce_scatter, "ep_reduce_scatter", 1, 1, TOKEN_SHARE_ATTRS, RULES(ep_reduce_scatter), false,
       false},
      {OpKind::reduce_sum, "reduce_sum", 1, 1, {{"axes", K::dims, req}, {"keepdims", K::boolean, opt}},
       RULES(reduce_sum)},
      {OpKind::reduce_mean, "reduce_mean", 1, 1, {{"axes", K::dims, req}, {"keepdims", K::boolean, opt}},
       RULES(reduce_mean)},
      {OpKind::reduce_max, "reduce_max", 1, 1, {{"axes", K::dims, req}, {"keepdims", K::boolean, opt}},
       RULES(reduce_max)},
      {OpKind::conv2d, "conv2d", 2, 3,
       {{"stride", K::dims, opt}, {"padding", K::dims, opt}, {"groups", K::dim, opt}}, RULES(conv2d)},
      {OpKind::max_pool2d, "max_pool2d", 1, 1,
       {{"kernel", K::dims, req}, {"stride", K::dims, opt}, {"padding", K::dims, opt}}, RULES(max_pool2d)},
      {OpKind::avg_pool2d, "avg_pool2d", 1, 1,
       {{"kernel", K::dims, req}, {"stride", K::dims, opt}, {"padding", K::dims, opt}}, RULES(avg_pool2d)},
      {OpKind::cross_entropy, "cross_entropy", 2, 2, {{"ignore_index", K::dim, opt}}, RULES(cross_entropy)},
      {OpKind::cross_entropy_parts, "cross_entropy_parts", 3, 3,
       {{"offset", K::dim, opt}, {"vocab", K::dim, opt}, {"ignore_index", K::dim, opt}}, RULES(cross_entropy_parts)},
      {OpKind::cross_entropy_total, "cross_entropy_total", 2, 2, {{"ignore_index", K::dim, opt}},
       RULES(cross_entropy_total)},
      {OpKind::mse_loss, "mse_loss", 2, 2, {}, RULES(mse_loss)},
      {OpKind::broadcast_to, "broadcast_to", 1, 1, {{"shape", K::dims, req}}, RULES(broadcast_to)},
      {OpKind::sum_to, "sum_to", 1, 1, {{"shape", K::dims, req}}, RULES(sum_to)},
      {OpKind::relu_grad, "relu_grad", 2, 2, {}, RULES(relu_grad)},
      {OpKind::gelu_grad, "gelu_grad", 2, 2, {}, RULES(gelu_grad)},
      {OpKind::gelu_erf_grad, "gelu_erf_grad", 2, 2, {}, RULES(gelu_erf_grad)},
      {OpKind::silu_grad, "silu_grad", 2, 2, {}, RULES(silu_grad)},
      {OpKind::swiglu_grad, "swiglu_grad", 3, 4, {}, RULES(swiglu_grad)},
      {OpKind::softmax_grad, "softmax_grad", 2, 2, {{"axis", K::dim, opt}}, RULES(softmax_grad)},
      {OpKind::log_softmax_grad, "log_softmax_grad", 2, 2, {{"axis", K::dim, opt}}, RULES(log_softmax_grad)},
      {OpKind::layernorm_grad, "layernorm_grad", 3, 3, {{"eps", K::real, opt}}, RULES(layernorm_grad)},
      {OpKind::rmsnorm_grad, "rmsnorm_grad", 3, 3, {{"eps", K::real, opt}}, RULES(rmsnorm_grad)},
      {OpKind::attention_grad, "attention_grad", 6, 6,
       {{"causal", K::boolean, opt}, {"scale", K::real, opt}, {"layout", K::string, opt}}, RULES(attention_grad)},
      {OpKind::embedding_grad, "embedding_grad", 2, 2,
       {{"rows", K::dim, req}, {"offset", K::dim, opt}, {"vocab", K::dim, opt}}, RULES(embedding_grad)},
      {OpKind::moe_gates_grad, "moe_gates_grad", 3, 3,
       {{"top_k", K::dim, req}, {"renormalize", K::boolean, opt}, {"first_expert", K::dim, opt}},
       RULES(moe_gates_grad)},
      {OpKind::slice_grad, "slice_grad", 1, 1,
       {{"axis", K::dim, req}, {"start", K::dim, req}, {"size", K::dim, req}}, RULES(slice_grad)},
      {OpKind::reduce_max_grad, "reduce_max_grad", 3, 3, {{"axes", K::dims, req}, {"keepdims", K::boolean, opt}},
       RULES(reduce_max_grad)},
      {OpKind::conv2d_grad_input, "conv2d_grad_input", 2, 2,
       {{"stride", K::dims, opt}, {"padding", K::dims, opt}, {"groups", K::dim, opt}, {"input_shape", K::dims, req}},
       RULES(conv2d_grad_input)},
      {OpKind::conv2d_grad_weight, "conv2d_grad_weight", 2, 2,
       {{"stride", K::dims, opt}, {"padding", K::dims, opt}, {"groups", K::dim, opt}, {"weight_shape", K::dims, req}},
       RULES(conv2d_grad_weight)},
      {OpKind::max_pool2d_grad, "max_pool2d_grad", 2, 2,
       {{"kernel", K::dims, req}, {"stride", K::dims, opt}, {"padding", K::dims, opt}}, RULES(max_pool2d_grad)},
      {OpKind::avg_pool2d_grad, "avg_pool2d_grad", 1, 1,
       {{"kernel", K::dims, req}, {"stride", K::dims, opt}, {"padding", K::dims, opt}, {"input_shape", K::dims, req}},
       RULES(avg_pool2d_grad)},
      {OpKind::cross_entropy_grad, "cross_entropy_grad", 3, 3, {{"ignore_index", K::dim, opt}},
       RULES(cross_entropy_grad)},
      {OpKind::cross_entropy_parts_grad, "cross_entropy_parts_grad", 4, 4,
       {{"offset", K::dim, opt}, {"vocab", K::dim, opt}, {"ignore_index", K::dim, opt}},
       RULES(cross_entropy_parts_grad)},
      {OpKind::cross_entropy_total_grad, "cross_entropy_total_grad", 3, 3, {{"ignore_index", K::dim, opt}},
       RULES(cross_entropy_total_grad)},
  }};
  return rows;
}

#undef RULES

// Every row must sit at its enum's index: checked once, at first use.
bool table_is_ordered() {
  for (int i = 0; i < kNumOps; ++i)
    if (static_cast<int>(table()[i].kind) != i) return false;
  return true;
}

}  // namespace

const OpInfo& op_info(OpKind kind) {
  static const bool ordered = table_is_ordered();
  if (!ordered) throw std::logic_error("op table rows are out of order");
  return table()[static_cast<int>(kind)];
}

std::string_view op_name(OpKind kind) { return op_info(kind).name; }

namespace {

bool is_unary_elementwise(OpKind kind) {
  switch (kind) {
    case OpKind::neg:
    case OpKind::exp:
    case OpKind::log:
    case OpKind::sqrt:
    case OpKind::rsqrt:
    case OpKind::pow:
    case OpKind::tanh:
    case OpKind::sigmoid:
    case OpKind::relu:
    case OpKind::gelu:
    case OpKind::gelu_erf:
    case OpKind::silu:
    case OpKind::cast:
      return true;
    default:
      return false;
  }
}

}  // namespace

bool is_elementwise(OpKind kind) {
  return is_unary_elementwise(kind) || kind == OpKind::add || kind == OpKind::sub || kind == OpKind::mul ||
         kind == OpKind::div || kind == OpKind::where || kind == OpKind::swiglu;
}

int route_operand(OpKind kind, size_t operands) {
  switch (kind) {
    case OpKind::moe_gates:
    case OpKind::moe_dispatch:
    case OpKind::moe_combine:
      return 1;
    case OpKind::moe_matmul:
    case OpKind::moe_gates_grad:
      return 2;
    case OpKind::swiglu:
      return operands == 3 ? 2 : -1;
    case OpKind::swiglu_grad:
      return operands == 4 ? 3 : -1;
    default:
      return -1;
  }
}

std::optional<OpKind> find_op(std::string_view name) {
  for (const OpInfo& info : table())
    if (info.name == name) return info.kind;
  return std::nullopt;
}

const AttrSpec* find_attr_spec(OpKind kind, std::string_view name) {
  for (const AttrSpec& spec : op_info(kind).attrs)
    if (spec.name == name) return &spec;
  for (const AttrSpec& spec : kCommonAttrs)
    if (spec.name == name) return &spec;
  return nullptr;
}

double attention_scale(const OpAttrs& attrs, const TensorType& q) {
  const int64_t d = q.rank() > 0 ? q.shape.back() : 1;
  return attrs.get_real("scale", 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(d, 1))));
}

DType attention_lse_dtype(DType q) { return q == DType::bf16 || q == DType::f16 ? DType::f32 : q; }

bool keeps_f32_operand(OpKind op, size_t operand) { return op == OpKind::attention_grad && operand == 5; }
bool keeps_f32_result(OpKind op, size_t result) { return op == OpKind::attention && result == 1; }

bool attention_bthd(const OpAttrs& attrs) {
  const std::string_view layout = attrs.get_string("layout", "bhtd");
  if (layout != "bhtd" && layout != "bthd")
    throw Error("layout must be \"bhtd\" or \"bthd\", got " + quote(std::string(layout)));
  return layout == "bthd";
}

AttentionHeads attention_heads(const OpAttrs& attrs, const TensorType& q) {
  const bool bthd = attention_bthd(attrs);
  const int64_t t = q.shape[q.rank() - (bthd ? 3 : 2)], d = q.shape.back();
  const int64_t inner = bthd ? q.shape[q.rank() - 2] : 1;
  return {t * d == 0 ? 0 : q.numel() / (t * d), inner, t, d};
}

RopeLayout rope_layout(const OpAttrs& attrs, const TensorType& x) {
  const int64_t rank = x.rank();
  int64_t axis = attrs.get_int("axis", -2);
  if (axis < 0) axis += rank;
  RopeLayout l{1, x.shape[static_cast<size_t>(axis)], 1, x.shape.back()};
  for (int64_t a = 0; a < axis; ++a) l.outer *= x.shape[static_cast<size_t>(a)];
  for (int64_t a = axis + 1; a < rank - 1; ++a) l.rows *= x.shape[static_cast<size_t>(a)];
  return l;
}

double rope_theta(const OpAttrs& attrs) { return attrs.get_real("theta", 10000.0); }

double rope_frequency(double theta, int64_t pair, int64_t features) {
  return std::pow(theta, -2.0 * static_cast<double>(pair) / static_cast<double>(features));
}

int64_t moe_capacity(const OpAttrs& attrs, int64_t tokens, int64_t experts) {
  if (!attrs.has("capacity_factor") || experts <= 0) return tokens;
  const double fair = static_cast<double>(tokens) * static_cast<double>(attrs.get_int("top_k", 1)) /
                      static_cast<double>(experts);
  const double slots = std::ceil(attrs.get_real("capacity_factor", 1.0) * fair);
  return std::clamp<int64_t>(slots >= static_cast<double>(tokens) ? tokens : static_cast<int64_t>(slots), 1,
                             std::max<int64_t>(tokens, 1));
}

bool moe_renormalize(const OpAttrs& attrs) { return attrs.get_bool("renormalize", true); }

bool moe_drops_by_probability(const OpAttrs& attrs) { return attrs.get_string("drop", "position") == "probs"; }

bool attention_groups_keys(const TensorType& q, const TensorType& k) {
  if (k.dtype != q.dtype || k.rank() != q.rank() || q.rank() < 3 || k == q) return false;
  const size_t lead = q.shape.size() - 2;
  for (size_t a = 0; a < q.shape.size(); ++a)
    if (k.shape[a] != q.shape[a] && (a >= lead || k.shape[a] != 1)) return false;
  return true;
}

std::vector<int64_t> attention_key_heads(const TensorType& q, const TensorType& k) {
  const size_t lead = q.rank() >= 2 ? q.shape.size() - 2 : 0;
  int64_t heads = 1;
  for (size_t a = 0; a < lead; ++a) heads *= q.shape[a];
  std::vector<int64_t> key(static_cast<size_t>(heads));
  for (int64_t n = 0; n < heads; ++n) {
    // n's index along each leading axis of q, mapped to k's (0 where k has size 1), innermost first.
    int64_t rest = n, flat = 0, stride = 1;
    for (size_t a = lead; a-- > 0;) {
      const int64_t i = rest % q.shape[a];
      rest /= q.shape[a];
      if (k.shape[a] != 1) flat += i * stride;
      stride *= k.shape[a];
    }
    key[static_cast<size_t>(n)] = flat;
  }
  return key;
}

const OpAttrs::Entry* OpAttrs::find(std::string_view name) const {
  for (const Entry& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

int64_t OpAttrs::get_int(std::string_view name, int64_t fallback) const {
  const Entry* e = find(name);
  return e && !e->ints.empty() ? e->ints[0] : fallback;
}

std::vector<int64_t> OpAttrs::get_ints(std::string_view name, std::vector<int64_t> fallback) const {
  const Entry* e = find(name);
  return e ? e->ints : fallback;
}

double OpAttrs::get_real(std::string_view name, double fallback) const {
  const Entry* e = find(name);
  return e ? e->real : fallback;
}

bool OpAttrs::get_bool(std::string_view name, bool fallback) const {
  const Entry* e = find(name);
  return e ? e->boolean : fallback;
}

DType OpAttrs::get_dtype(std::string_view name, DType fallback) const {
  const Entry* e = find(name);
  return e ? e->dtype : fallback;
}

std::string_view OpAttrs::get_string(std::string_view name, std::string_view fallback) const {
  const Entry* e = find(name);
  return e ? std::string_view(e->string) : fallback;
}

}  // namespace pf
