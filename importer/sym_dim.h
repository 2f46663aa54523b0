// Dimensions as the importer sees them while it walks an ONNX graph: a
// product of an integer and named symbols ("4*batch"), enough to follow the
// shapes a PyTorch export computes at run time (Shape, Gather, Concat,
// Reshape with -1) and print them as Pipeforge dimension expressions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pf::onnx_import {

struct SymDim {
  int64_t coef = 1;
  std::vector<std::string> symbols;  // sorted; a symbol may repeat

  static SymDim of(int64_t value);
  static SymDim named(std::string symbol);

  bool is_number() const { return symbols.empty(); }
  /// "8", "batch", "4*batch".
  std::string str() const;
  bool operator==(const SymDim&) const = default;
};

SymDim operator*(const SymDim& a, const SymDim& b);
/// a / b when it divides exactly (the symbols of b among a's, the
/// coefficient evenly); nullopt otherwise.
std::optional<SymDim> divide(const SymDim& a, const SymDim& b);
/// a + b and a - b: numbers, or the same symbols; nullopt otherwise.
std::optional<SymDim> add(const SymDim& a, const SymDim& b, int64_t sign = 1);

using SymShape = std::vector<SymDim>;

/// The product of `dims`.
SymDim product(const SymShape& dims);
/// "[batch,8,32]".
std::string shape_text(const SymShape& shape);

}  // namespace pf::onnx_import
