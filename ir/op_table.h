// The op table: one row per op with its operands and attributes, and the
// rules (shape, cost) that sit beside it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/attr.h"
#include "ir/types.h"

namespace pf {

enum class OpKind : uint8_t {
#define PF_OP(name) name,
#include "ir/ops.def"
#undef PF_OP
};

inline constexpr int kNumOps = 0
#define PF_OP(name) +1
#include "ir/ops.def"
#undef PF_OP
    ;

struct AttrSpec {
  std::string_view name;
  AttrKind kind;
  bool required;
};

/// Attributes every op may carry: its layer (set by inlining or by hand)
/// and its cost (set by the cost pass).
inline constexpr AttrSpec kCommonAttrs[] = {
    {"layer", AttrKind::string, false},
    {"flops", AttrKind::dim, false},
    {"bytes", AttrKind::dim, false},
};

class OpAttrs;

/// What a shape rule sees: the operands' concrete types, the attributes
/// evaluated under the binding, and the declared result types (which source
/// ops such as `param` take their shape from).
struct ShapeContext {
  std::string_view op;
  std::span<const TensorType> operands;
  const OpAttrs& attrs;
  std::span<const TensorType> declared;  // empty when not written
};

/// FLOPs and bytes read plus written by one execution of an op.
struct OpCost {
  int64_t flops = 0;
  int64_t bytes = 0;
};

using ShapeRule = std::vector<TensorType> (*)(const ShapeContext&);
using CostRule = OpCost (*)(std::span<const TensorType> operands, std::span<const TensorType> results,
                            const OpAttrs& attrs);

struct OpInfo {
  OpKind kind;
  std::string_view name;
  int min_operands;
  int max_operands;  // -1: any number
  std::vector<AttrSpec> attrs;
  ShapeRule shape;
  CostRule cost;
  /// A source op's result type must be written (`param`, `constant`, ...).
  bool needs_declared_type = false;
  /// May be merged with an identical op by CSE (no identity, no hidden state).
  bool pure = true;
};

const OpInfo& op_info(OpKind kind);
std::optional<OpKind> find_op(std::string_view name);
std::string_view op_name(OpKind kind);
/// Whether each element of the op's result comes from the same element of
/// each operand (broadcast): the unary math ops, cast, add, sub, mul, div,
/// where and swiglu (whose route, when it has one, only says which rows are
/// computed).
bool is_elementwise(OpKind kind);
/// Which operand of an op of `kind` with `operands` operands is a mixture of
/// experts' route (the op runs over its slots, or its tokens' choices): 1
/// for moe_gates, moe_dispatch and moe_combine, 2 for moe_matmul and
/// moe_gates_grad, the last for a swiglu or swiglu_grad given one; -1 for
/// none.
int route_operand(OpKind kind, size_t operands);
/// The spec of `name` for `kind` (own or common), or nullptr.
const AttrSpec* find_attr_spec(OpKind kind, std::string_view name);

/// Attributes of one op evaluated under a binding: dims become integers.
/// Shape and cost rules read them; a missing required attribute is caught by
/// the verifier before any rule runs.
class OpAttrs {
 public:
  struct Entry {
    std::string_view name;
    AttrKind kind;
    std::vector<int64_t> ints;  // dim: one value; dims: the list
    double real = 0;
    bool boolean = false;
    DType dtype = DType::f32;
    std::string string;  // string
  };

  void add(Entry e) { entries_.push_back(std::move(e)); }
  bool has(std::string_view name) const { return find(name) != nullptr; }
  int64_t get_int(std::string_view name, int64_t fallback) const;
  std::vector<int64_t> get_ints(std::string_view name, std::vector<int64_t> fallback) const;
  double get_real(std::string_view name, double fallback) const;
  bool get_bool(std::string_view name, bool fallback) const;
  DType get_dtype(std::string_view name, DType fallback) const;
  std::string_view get_string(std::string_view name, std::string_view fallback) const;

 private:
  const Entry* find(std::string_view name) const;
  std::vector<Entry> entries_;
};

/// The scale of attention and attention_grad: the `scale` attribute, or
/// 1/sqrt(D) for q of [..., T, D] when it is not written.
double attention_scale(const OpAttrs& attrs, const TensorType& q);

/// Where attention's heads sit in q, k, v and o: [..., H, T, D] under
/// `layout="bhtd"` (the default), or [..., T, H, D] under `layout="bthd"`,
/// as a qkv projection writes them, so that no transpose is needed (flash
/// attention's layout). lse is [..., H, T] in both.
struct AttentionHeads {
  int64_t n;      // heads in all: the product of every axis but T and D
  int64_t inner;  // heads between two rows of one head: H for "bthd", 1 for "bhtd"
  int64_t t, d;
  /// Where head `head`'s first row starts; its rows are row_stride() apart.
  int64_t offset(int64_t head) const { return head / inner * t * inner * d + head % inner * d; }
  int64_t row_stride() const { return inner * d; }
};

/// True for `layout="bthd"`, false for "bhtd" or none; another value throws
/// pf::Error (the shape rule reports it first).
bool attention_bthd(const OpAttrs& attrs);

/// The heads of q (which the shape rule has checked) under the op's layout.
AttentionHeads attention_heads(const OpAttrs& attrs, const TensorType& q);

/// rope turns each position's features in pairs (i, i + D/2) of D, as
/// Llama and GPT-NeoX do (their "rotate half"): pair i by position x
/// rope_frequency(theta, i, D) radians, the position being the index along
/// the op's `axis` (by default the one before the features) or, given a
/// second operand, the integer it holds there. x is walked as [outer,
/// positions, rows, D]: the rows between the positions' axis and the
/// features share each position's angles.
struct RopeLayout {
  int64_t outer, positions, rows, features;
};
RopeLayout rope_layout(const OpAttrs& attrs, const TensorType& x);
/// The `theta` attribute, 10000 when not written.
double rope_theta(const OpAttrs& attrs);
/// theta^(-2i/d): pair i's angle per position, from 1 for the first pair
/// down to nearly 1/theta for the last.
double rope_frequency(double theta, int64_t pair, int64_t features);

/// Grouped-query attention (layout "bhtd"): k of q's type but for axes
/// before [T, D] where it has size 1, each of its heads shared by the heads
/// of q along them (q [B, G, R, T, D] over k and v [B, G, 1, T, D]: R query
/// heads per key head).
bool attention_groups_keys(const TensorType& q, const TensorType& k);

/// The key head that each of q's heads reads (flat indices over the axes
/// before [T, D]): itself, or under grouped-query attention the one it
/// shares.
std::vector<int64_t> attention_key_heads(const TensorType& q, const TensorType& k);

/// The element type of attention's lse for q of type `q`: f32 for the half
/// types (the backward computes exp(s - lse), and a bf16 lse near 8 is off by
/// up to 0.03, every probability of its row by 3 %), q's own otherwise.
DType attention_lse_dtype(DType q);

/// The float operands and results that an executor storing floats in a half
/// type keeps in f32, for the same reason: attention's lse (its result 1,
/// and attention_grad's operand 5, where a backward reads it from the stash).
bool keeps_f32_operand(OpKind op, size_t operand);
bool keeps_f32_result(OpKind op, size_t result);

/// moe_route's slots per expert, for `tokens` tokens (the rows of its
/// logits) over `experts`: every token (none is ever dropped) without a
/// `capacity_factor`, else ceil(factor x tokens x top_k / experts), at least
/// 1 and at most `tokens`.
int64_t moe_capacity(const OpAttrs& attrs, int64_t tokens, int64_t experts);
/// Whether moe_gates' softmax runs over the token's top_k logits (true, the
/// default: Mixtral's and GShard's gate) or over every expert's (Switch's).
bool moe_renormalize(const OpAttrs& attrs);
/// Whether an expert with more choices than slots keeps those with the
/// highest router probability (drop="probs", Megatron-LM's probs policy)
/// rather than the first choices first in token order (drop="position",
/// the default: GShard's and Switch's priority).
bool moe_drops_by_probability(const OpAttrs& attrs);

// Shape and cost rules, defined in shape_rules.cpp and cost_rules.cpp.
namespace rules {
#define PF_OP(name)                                               \
  std::vector<TensorType> shape_##name(const ShapeContext& ctx); \
  OpCost cost_##name(std::span<const TensorType> in, std::span<const TensorType> out, const OpAttrs& attrs);
#include "ir/ops.def"
#undef PF_OP
}  // namespace rules

}  // namespace pf
