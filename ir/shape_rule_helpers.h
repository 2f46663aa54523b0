// What the shape rules of forward and backward ops share: checks of
// operand types and attributes, and rules that several ops use. Internal to
// shape_rules*.cpp.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/op_table.h"

namespace pf::rules {

using Types = std::vector<TensorType>;

// Each is described where it is defined (shape_rule_helpers.cpp).

[[noreturn]] void fail(const std::string& message);
void require_float(const TensorType& t, std::string_view what);
void require_same_dtype(const TensorType& a, const TensorType& b);
int64_t normalize_axis(int64_t axis, int64_t rank, std::string_view name = "axis");
Shape broadcast(const TensorType& a, const TensorType& b);
Types one(DType dtype, Shape shape);
Types declared_type(const ShapeContext& ctx);
Types binary(const ShapeContext& ctx);
Types unary_float(const ShapeContext& ctx);
Types reduce(const ShapeContext& ctx);
Types softmax_like(const ShapeContext& ctx);
void require_vector_of(const TensorType& v, int64_t n, const TensorType& x, std::string_view what);
int64_t window_out(int64_t in, int64_t k, int64_t stride, int64_t pad, std::string_view axis);
std::vector<int64_t> pair_attr(const ShapeContext& ctx, std::string_view name, std::vector<int64_t> fallback);
Types pool(const ShapeContext& ctx);
void require_gradient_of(const TensorType& g, const TensorType& v, const std::string& what);
Shape bounded_shape(Shape shape, const std::string& what);
Shape shape_attr(const ShapeContext& ctx, std::string_view name);
Shape four_dims_attr(const ShapeContext& ctx, std::string_view name, std::string_view layout);
bool broadcasts_to(const Shape& from, const Shape& to);
/// The `offset` and `vocab` attributes of an op that holds `rows` classes of a
/// vocabulary shared over a tensor-parallel group (embedding, the parts of a
/// cross-entropy): its classes are offset..offset+rows of vocab (by default
/// offset 0 and vocab offset + rows, the whole vocabulary).
void require_vocabulary_range(const ShapeContext& ctx, int64_t rows, std::string_view what);
TensorType forward_result(const ShapeContext& ctx, ShapeRule rule, std::span<const TensorType> operands);
Types attention_like(const ShapeContext& ctx);
void require_route(const TensorType& route, int64_t experts);
TensorType swiglu_operands(const ShapeContext& ctx, size_t first);

}  // namespace pf::rules
