// Symbolic dimension expressions: `B`, `3*C`, `C/H`, `T-1`, `-1`.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace pf {

/// Values of the model's symbolic dimensions, e.g. {B: 8, T: 1024}.
using DimBinding = std::map<std::string, int64_t, std::less<>>;

/// An immutable integer expression over named dimensions. Cheap to copy
/// (shared nodes). Printing adds only the parentheses that precedence needs,
/// so canonical text round-trips.
class DimExpr {
 public:
  enum class Kind : uint8_t { constant, symbol, add, sub, mul, div, neg };

  DimExpr() : DimExpr(int64_t{0}) {}
  DimExpr(int64_t value);  // NOLINT: integers are dimension expressions
  static DimExpr symbol(std::string name);
  static DimExpr binary(Kind kind, DimExpr lhs, DimExpr rhs);
  static DimExpr negate(DimExpr operand);

  Kind kind() const { return node_->kind; }
  bool is_constant() const { return node_->kind == Kind::constant; }
  int64_t constant() const { return node_->value; }
  const std::string& name() const { return node_->name; }

  /// The value under `binding`; nullopt when a symbol is unbound (named
  /// through `missing`), on overflow, or on division by zero. Division
  /// truncates; shape rules catch the element counts it would break.
  std::optional<int64_t> evaluate(const DimBinding& binding, std::string* missing = nullptr) const;

  std::string str() const;
  /// Whether `symbol` occurs anywhere in the expression.
  bool mentions(std::string_view symbol) const;
  bool operator==(const DimExpr& other) const;

 private:
  struct Node {
    Kind kind = Kind::constant;
    int64_t value = 0;
    std::string name;
    std::shared_ptr<const Node> lhs, rhs;
  };
  explicit DimExpr(std::shared_ptr<const Node> node) : node_(std::move(node)) {}
  void print(std::string& out, int parent_precedence, bool right_side) const;

  std::shared_ptr<const Node> node_;
};

}  // namespace pf
