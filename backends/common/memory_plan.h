// Static memory planning for one function: liveness over the op order, then greedy best-fit offsets in one arena.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ir/module.h"

namespace pf::backend {

/// Every planned byte range starts on this boundary (a cache line, and enough
/// for any SIMD load a kernel may issue).
inline constexpr int64_t kArenaAlignment = 64;

/// Where every value of a function lives: an offset into one arena, or
/// outside it (arguments, parameters, outputs bound by the caller).
struct MemoryPlan {
  /// Per ValueId: the byte offset in the arena, or -1 for a value kept outside
  /// it (external, or an alias of an external value).
  std::vector<int64_t> offset;
  /// Per ValueId: the bytes reserved at `offset` (the value's size rounded up
  /// to kArenaAlignment); 0 for external values and for aliases, which own no
  /// bytes of their own.
  std::vector<int64_t> bytes;
  /// The arena's size: the end of the highest placed range.
  int64_t arena_bytes = 0;
  /// What the arena would need without reuse: the sum of `bytes`, for reporting.
  int64_t naive_bytes = 0;
};

/// How an executor storing floats as `float_dtype` stores each value of `f`:
/// integers and bools as their own type, floats in the float dtype, except
/// those a half float dtype keeps in f32 (keeps_f32_operand / _result).
std::vector<DType> stored_dtypes(const Function& f, DType float_dtype);

/// Plans a verified function's values into one arena, each of the size an
/// executor storing floats as `float_dtype` gives it (stored_dtypes).
///
/// Liveness: a value is live from its defining op's time (an argument from
/// before the first op) to its last use's; a returned value stays live to the end of
/// the function, so that the caller can read it after the run. The interval
/// is inclusive at both ends, so an op's results never share bytes with its
/// operands: kernels read their operands while they write their results.
///
/// Placement: values are taken largest first (ties: earlier definition
/// first); each goes into the smallest gap between the already placed values
/// whose live ranges overlap its own, or above the highest of them when no
/// gap is large enough (best fit, as in "greedy by size" offset planning).
/// Sizes are rounded up to kArenaAlignment, so every offset is aligned.
///
/// `external[v]` marks values not placed (their offset is -1). `alias_of`
/// (empty, or one entry per value) names for a value the value whose bytes it
/// reuses (-1: none): usually an earlier one (a reshape of its operand), or a
/// later one that the alias is written as (a product whose bias add is folded
/// into it). An alias gets its target's offset, and its definition, its uses
/// and being returned keep the target's bytes live. Chains resolve to the
/// value at their end, which is no alias.
///
/// `op_time` (empty, or one entry per op, non-decreasing) is when each op
/// runs; ops given the same time run at once, so the results of each may not
/// share bytes with the operands of any. Empty: op i runs at time i.
MemoryPlan plan_memory(const Function& f, DType float_dtype, const std::vector<bool>& external,
                       std::span<const ValueId> alias_of = {}, std::span<const int> op_time = {});

/// Alias groups from an `alias_of` as plan_memory takes it: root[v] is the
/// value whose bytes v reads (v itself when it aliases nothing), and
/// members[r] lists a root r first, then the values that read its bytes.
/// Throws pf::Error when the aliases form a cycle.
void alias_groups(const std::vector<ValueId>& alias_of, std::vector<ValueId>& root,
                  std::vector<std::vector<ValueId>>& members);

}  // namespace pf::backend
