// What a gradient rule sees and uses: the forward op, its incoming
// gradients, and a builder that emits ops into the backward function.
// Internal to passes/.
#pragma once

#include <initializer_list>
#include <string>
#include <vector>

#include "ir/module.h"

namespace pf {

class BackwardBuilder;

/// The view of one forward op while its gradient rule runs.
class GradContext {
 public:
  GradContext(BackwardBuilder& builder, const Function& forward, const Op& op, const OpAttrs& attrs)
      : b_(builder), fwd_(forward), op_(op), attrs_(attrs) {}

  const Op& op() const { return op_; }
  const OpAttrs& attrs() const { return attrs_; }
  const TensorType& operand_type(int i) const { return fwd_.type_of(op_.operands[i]); }
  const TensorType& result_type(int i) const { return fwd_.type_of(op_.results[i]); }

  /// The gradient of result `i` in the backward function, or -1 if none
  /// reaches it.
  ValueId grad(int i = 0) const;
  /// Whether operand `i` needs a gradient.
  bool needs(int i) const;
  /// Forward operand or result `i` as a value of the backward function
  /// (stashed, re-declared as a parameter, or recomputed if a source).
  ValueId operand(int i);
  ValueId result(int i);
  /// Adds `g` to operand `i`'s gradient, summing away broadcast axes first.
  void accumulate(int i, ValueId g);

  /// Emits an op into the backward function; its results are typed by the
  /// op's shape rule. Attributes are concrete.
  ValueId emit(OpKind kind, std::vector<ValueId> operands, std::vector<NamedAttr> attrs = {});
  std::vector<ValueId> emit_multi(OpKind kind, std::vector<ValueId> operands,
                                  std::vector<NamedAttr> attrs = {});
  /// A float scalar constant of the forward's float dtype.
  ValueId scalar(double value);
  const TensorType& type(ValueId backward_value) const;
  /// The forward op's own attributes (layer and costs left out), to give
  /// a backward op the same `axis`, `eps`, `seed`...
  std::vector<NamedAttr> forward_attrs(std::initializer_list<std::string_view> names) const;

 private:
  BackwardBuilder& b_;
  const Function& fwd_;
  const Op& op_;
  const OpAttrs& attrs_;
};

/// Attribute helpers for rules.
NamedAttr attr_int(std::string name, int64_t v);
NamedAttr attr_ints(std::string name, const std::vector<int64_t>& v);
NamedAttr attr_bool(std::string name, bool v);
NamedAttr attr_real(std::string name, double v);
NamedAttr attr_dtype(std::string name, DType v);

using GradRule = void (*)(GradContext& ctx);

/// The rule for `kind`; nullptr for ops that are not differentiable.
/// Throws std::logic_error if the table has no entry for `kind`.
GradRule grad_rule(OpKind kind);

}  // namespace pf
