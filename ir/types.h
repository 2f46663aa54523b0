// Tensor types: a dtype and a shape, symbolic (as written) or concrete.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ir/dim_expr.h"
#include "ir/dtype.h"

namespace pf {

using Shape = std::vector<int64_t>;

/// A tensor type with concrete dimensions: what shape inference computes.
struct TensorType {
  DType dtype = DType::f32;
  Shape shape;

  int64_t rank() const { return static_cast<int64_t>(shape.size()); }
  int64_t numel() const;
  int64_t bytes() const { return numel() * dtype_size(dtype); }
  bool is_scalar() const { return shape.empty(); }
  std::string str() const;  // "f32[2,3]", "f32[]"
  bool operator==(const TensorType&) const = default;
};

/// The bytes a tensor of type `t` takes when floats are stored as
/// `float_dtype` (a bf16 stage's float tensors take half of f32's; integers
/// and bools keep their own dtype).
int64_t stored_bytes(const TensorType& t, DType float_dtype);

/// A tensor type as written in the source: `f32[B,T,3*C]`.
struct SymType {
  DType dtype = DType::f32;
  std::vector<DimExpr> dims;

  std::string str() const;
  /// Concrete type under `binding`; throws Error naming the unbound dimension.
  TensorType bind(const DimBinding& binding) const;
  static SymType from(const TensorType& t);
};

std::string shape_str(const Shape& shape);  // "[2,3]"

}  // namespace pf
