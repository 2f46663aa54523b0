// Tensor types.
#include "ir/types.h"

#include "ir/diagnostic.h"

namespace pf {

int64_t TensorType::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

int64_t stored_bytes(const TensorType& t, DType float_dtype) {
  return t.numel() * dtype_size(is_float(t.dtype) ? float_dtype : t.dtype);
}

std::string shape_str(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string TensorType::str() const { return std::string(dtype_name(dtype)) + shape_str(shape); }

std::string SymType::str() const {
  std::string out = std::string(dtype_name(dtype)) + "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) out += ',';
    out += dims[i].str();
  }
  return out + "]";
}

TensorType SymType::bind(const DimBinding& binding) const {
  TensorType t;
  t.dtype = dtype;
  for (const DimExpr& d : dims) {
    std::string missing;
    auto v = d.evaluate(binding, &missing);
    if (!v) {
      if (!missing.empty()) throw Error("unknown dimension '" + missing + "'; declare it with 'dim " + missing + " = N'");
      throw Error("dimension '" + d.str() + "' overflows or divides by zero");
    }
    if (*v < 0) throw Error("dimension '" + d.str() + "' is negative (" + std::to_string(*v) + ")");
    t.shape.push_back(*v);
  }
  // Keep every later size computation (bytes, FLOPs) far from int64 overflow.
  constexpr int64_t kMaxElements = int64_t{1} << 50;
  int64_t n = 1;
  for (int64_t d : t.shape)
    if (d != 0 && (__builtin_mul_overflow(n, d, &n) || n > kMaxElements))
      throw Error("tensor type " + t.str() + " has more than 2^50 elements");
  return t;
}

SymType SymType::from(const TensorType& t) {
  SymType s;
  s.dtype = t.dtype;
  for (int64_t d : t.shape) s.dims.emplace_back(d);
  return s;
}

}  // namespace pf
