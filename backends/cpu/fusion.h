// Fusions the CPU executor makes on a verified function before it plans memory (internal to backends/cpu).
#pragma once

#include <span>
#include <vector>

#include "ir/module.h"

namespace pf::cpu {

/// A bias add folded into the GEMM that feeds it: `%mm = matmul %x, %w` and
/// `%y = add %mm, %b` (either operand order) with %b a vector as long as the
/// product's rows. The matmul's kernel gets %b as a third operand, fills each
/// row of its result with it and accumulates the product on top (BLAS beta =
/// 1, which also spares BLAS its own pass that zeroes the result); the add
/// does not run, and %mm reads %y's bytes.
struct BiasFusion {
  int matmul;  // op index
  int add;     // op index
  ValueId bias;
};

/// The bias adds of `f` that can be folded: %mm has no use but the add and
/// is not returned, %y has %mm's type, and %b is defined before the matmul.
/// `alias_of` (as layout_results gives it) must not alias %mm or %y yet.
std::vector<BiasFusion> find_bias_fusions(const Function& f, std::span<const ValueId> alias_of);

}  // namespace pf::cpu
