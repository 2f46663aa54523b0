// Fusions the CPU executor makes on a verified function before it plans memory (internal to backends/cpu).
#pragma once

#include <span>
#include <vector>

#include "ir/module.h"
#include "ir/types.h"

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

/// Two GEMMs that run at once, one per thread, when the device has two: the
/// input and the weight gradient of a linear layer (or of an attention
/// product) read the same upstream gradient and not each other's results, and
/// cost the same. Two whole single-threaded GEMMs side by side beat each split
/// over both threads in turn by 4-12 % (each thread packs only its own
/// operands, and nobody waits for the slower half twice).
struct GemmPair {
  int first;   // op index
  int second;  // a later op index; only reshapes that run no kernel lie between
};

/// The bias adds of `f` that can be folded: %mm has no use but the add and
/// is not returned, %y has %mm's type, and %b is defined before the matmul.
/// `alias_of` (as CompiledFunction::reshape_aliases gives it) must not alias
/// %mm or %y yet.
std::vector<BiasFusion> find_bias_fusions(const Function& f, std::span<const ValueId> alias_of);

/// Pairs of matmuls of `f` that may run at once: neither takes part in a bias
/// fusion, the second reads no result of the first, each has at least 2^22
/// multiply-adds and neither more than 1.5 times the other's. `root` is
/// alias_groups' over the executor's final aliases (a reshape whose root is
/// another value runs no kernel).
std::vector<GemmPair> find_gemm_pairs(const Function& f, const DimBinding& binding, std::span<const ValueId> root,
                                      std::span<const BiasFusion> fusions);

/// When each op of `f` runs, for plan_memory: op i at time i, except that
/// the second op of a pair (and the reshapes before it) run at the first's.
std::vector<int> run_times(const Function& f, std::span<const GemmPair> pairs);

}  // namespace pf::cpu
