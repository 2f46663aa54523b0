// Symbolic dimension expressions.
#include "ir/dim_expr.h"

#include <limits>

namespace pf {

DimExpr::DimExpr(int64_t value) {
  auto node = std::make_shared<Node>();
  node->kind = Kind::constant;
  node->value = value;
  node_ = std::move(node);
}

DimExpr DimExpr::symbol(std::string name) {
  auto node = std::make_shared<Node>();
  node->kind = Kind::symbol;
  node->name = std::move(name);
  return DimExpr(std::shared_ptr<const Node>(std::move(node)));
}

DimExpr DimExpr::binary(Kind kind, DimExpr lhs, DimExpr rhs) {
  auto node = std::make_shared<Node>();
  node->kind = kind;
  node->lhs = lhs.node_;
  node->rhs = rhs.node_;
  return DimExpr(std::shared_ptr<const Node>(std::move(node)));
}

DimExpr DimExpr::negate(DimExpr operand) {
  auto node = std::make_shared<Node>();
  node->kind = Kind::neg;
  node->lhs = operand.node_;
  return DimExpr(std::shared_ptr<const Node>(std::move(node)));
}

std::optional<int64_t> DimExpr::evaluate(const DimBinding& binding, std::string* missing) const {
  const Node& n = *node_;
  switch (n.kind) {
    case Kind::constant:
      return n.value;
    case Kind::symbol: {
      auto it = binding.find(n.name);
      if (it == binding.end()) {
        if (missing) *missing = n.name;
        return std::nullopt;
      }
      return it->second;
    }
    case Kind::neg: {
      auto v = DimExpr(n.lhs).evaluate(binding, missing);
      if (!v || *v == std::numeric_limits<int64_t>::min()) return std::nullopt;
      return -*v;
    }
    default:
      break;
  }
  auto a = DimExpr(n.lhs).evaluate(binding, missing);
  if (!a) return std::nullopt;
  auto b = DimExpr(n.rhs).evaluate(binding, missing);
  if (!b) return std::nullopt;
  int64_t r = 0;
  switch (n.kind) {
    case Kind::add:
      if (__builtin_add_overflow(*a, *b, &r)) return std::nullopt;
      return r;
    case Kind::sub:
      if (__builtin_sub_overflow(*a, *b, &r)) return std::nullopt;
      return r;
    case Kind::mul:
      if (__builtin_mul_overflow(*a, *b, &r)) return std::nullopt;
      return r;
    case Kind::div:
      if (*b == 0 || (*a == std::numeric_limits<int64_t>::min() && *b == -1)) return std::nullopt;
      return *a / *b;
    default:
      return std::nullopt;
  }
}

namespace {
int precedence(DimExpr::Kind k) {
  switch (k) {
    case DimExpr::Kind::add:
    case DimExpr::Kind::sub:
      return 1;
    case DimExpr::Kind::mul:
    case DimExpr::Kind::div:
      return 2;
    case DimExpr::Kind::neg:
      return 3;
    default:
      return 4;
  }
}
}  // namespace

void DimExpr::print(std::string& out, int parent_precedence, bool right_side) const {
  const Node& n = *node_;
  int p = precedence(n.kind);
  // Left-associative operators: a right operand of equal precedence needs
  // parentheses (a-(b-c)), a left one does not ((a-b)-c prints as a-b-c).
  bool parens = p < parent_precedence || (right_side && p == parent_precedence && p < 3);
  if (n.kind == Kind::constant && n.value < 0 && parent_precedence > 1) parens = true;
  if (parens) out += '(';
  switch (n.kind) {
    case Kind::constant:
      out += std::to_string(n.value);
      break;
    case Kind::symbol:
      out += n.name;
      break;
    case Kind::neg:
      out += '-';
      DimExpr(n.lhs).print(out, 3, false);
      break;
    default: {
      static constexpr char kOps[] = {0, 0, '+', '-', '*', '/'};
      DimExpr(n.lhs).print(out, p, false);
      out += kOps[static_cast<int>(n.kind)];
      DimExpr(n.rhs).print(out, p, true);
    }
  }
  if (parens) out += ')';
}

std::string DimExpr::str() const {
  std::string out;
  print(out, 0, false);
  return out;
}

bool DimExpr::mentions(std::string_view symbol) const {
  const Node& n = *node_;
  if (n.kind == Kind::symbol) return n.name == symbol;
  return (n.lhs && DimExpr(n.lhs).mentions(symbol)) || (n.rhs && DimExpr(n.rhs).mentions(symbol));
}

bool DimExpr::operator==(const DimExpr& other) const {
  if (node_ == other.node_) return true;
  const Node& a = *node_;
  const Node& b = *other.node_;
  if (a.kind != b.kind || a.value != b.value || a.name != b.name) return false;
  if (a.lhs && !(DimExpr(a.lhs) == DimExpr(b.lhs))) return false;
  if (a.rhs && !(DimExpr(a.rhs) == DimExpr(b.rhs))) return false;
  return true;
}

}  // namespace pf
