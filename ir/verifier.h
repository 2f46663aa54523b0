// The verifier: types every value of a module under a dimension binding and
// rejects what is ill-formed, with a located error.
#pragma once

#include "ir/module.h"

namespace pf {

struct VerifyOptions {
  /// The graph must return a float scalar first: the loss that training
  /// differentiates.
  bool require_loss = false;
};

/// Checks operand counts, attributes, calls (callee, arity, types, no
/// recursion), the shape rule of every op against its declared result types,
/// and returns; sets `Value::type` on every value. Throws a located Error.
void verify_module(Module& m, const DimBinding& binding, const VerifyOptions& options = {});

/// An op's attributes evaluated under `binding` (dims become integers).
OpAttrs evaluate_attrs(const Op& op, const DimBinding& binding);

}  // namespace pf
