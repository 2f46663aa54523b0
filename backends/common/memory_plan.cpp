// Static memory planning: live intervals over the op order, placed largest first into the best-fitting gap.
#include "backends/common/memory_plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "ir/align.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"

namespace pf::backend {

namespace {

/// A value that owns arena bytes, with its inclusive live interval in op
/// indices (-1: before the first op; ops.size(): after the last).
struct Interval {
  ValueId value;
  int64_t bytes;
  int first;
  int last;
};

bool overlaps(const Interval& a, const Interval& b) { return a.first <= b.last && b.first <= a.last; }

/// The value whose bytes `v` uses: `v` itself, or the end of its alias chain.
ValueId resolve_alias(const Function& f, std::span<const ValueId> alias_of, ValueId v) {
  ValueId root = v;
  for (size_t steps = 0; !alias_of.empty() && alias_of[root] >= 0; ++steps) {
    if (steps == alias_of.size())
      throw Error(fmt::format("memory plan of @{}: the aliases of %{} form a cycle", f.name, f.values[v].name));
    root = alias_of[root];
  }
  return root;
}

}  // namespace

std::vector<DType> stored_dtypes(const Function& f, DType float_dtype) {
  std::vector<DType> out;
  out.reserve(f.values.size());
  for (const Value& v : f.values) out.push_back(v.type && !is_float(v.type->dtype) ? v.type->dtype : float_dtype);
  if (float_dtype != DType::bf16 && float_dtype != DType::f16) return out;
  for (const Op& op : f.ops) {
    for (size_t i = 0; i < op.operands.size(); ++i)
      if (keeps_f32_operand(op.kind, i)) out[static_cast<size_t>(op.operands[i])] = DType::f32;
    for (size_t i = 0; i < op.results.size(); ++i)
      if (keeps_f32_result(op.kind, i)) out[static_cast<size_t>(op.results[i])] = DType::f32;
  }
  return out;
}

MemoryPlan plan_memory(const Function& f, DType float_dtype, const std::vector<bool>& external,
                       std::span<const ValueId> alias_of, std::span<const int> op_time) {
  const size_t n = f.values.size();
  if (external.size() != n)
    throw Error(fmt::format("memory plan of @{}: {} external flags for {} values", f.name, external.size(), n));
  if (!alias_of.empty() && alias_of.size() != n)
    throw Error(fmt::format("memory plan of @{}: {} alias entries for {} values", f.name, alias_of.size(), n));
  if (!op_time.empty() && op_time.size() != f.ops.size())
    throw Error(fmt::format("memory plan of @{}: {} op times for {} ops", f.name, op_time.size(), f.ops.size()));
  auto time_of = [&](int op) { return op < 0 || op_time.empty() ? op : op_time[op]; };

  std::vector<ValueId> root(n);
  for (size_t v = 0; v < n; ++v) root[v] = resolve_alias(f, alias_of, static_cast<ValueId>(v));

  // Live intervals of the values that own bytes; an alias's uses extend its root's.
  const int ops = static_cast<int>(f.ops.size());
  const int end = ops == 0 ? 0 : time_of(ops - 1) + 1;
  std::vector<int> first(n), last(n);
  for (size_t v = 0; v < n; ++v) {
    first[v] = time_of(f.values[v].def_op);  // -1 for an argument: live before the first op
    last[v] = first[v];
  }
  // An alias written before its root (a GEMM writing its bias add's bytes) moves the start back.
  for (size_t v = 0; v < n; ++v)
    if (root[v] != static_cast<ValueId>(v)) first[root[v]] = std::min(first[root[v]], time_of(f.values[v].def_op));
  for (int i = 0; i < ops; ++i)
    for (ValueId u : f.ops[i].operands) last[root[u]] = std::max(last[root[u]], time_of(i));
  for (ValueId r : f.returns) last[root[r]] = end;

  const std::vector<DType> stored = stored_dtypes(f, float_dtype);
  MemoryPlan plan;
  plan.offset.assign(n, -1);
  plan.bytes.assign(n, 0);
  std::vector<Interval> todo;
  for (size_t v = 0; v < n; ++v) {
    if (root[v] != static_cast<ValueId>(v) || external[v]) continue;
    const Value& value = f.values[v];
    if (!value.type) throw Error(fmt::format("memory plan of @{}: %{} has no type (verify first)", f.name, value.name));
    plan.bytes[v] = align_up(value.type->numel() * dtype_size(stored[v]), kArenaAlignment);
    plan.naive_bytes += plan.bytes[v];
    if (plan.bytes[v] == 0) {
      plan.offset[v] = 0;  // nothing is ever written: any aligned offset will do
      continue;
    }
    todo.push_back({static_cast<ValueId>(v), plan.bytes[v], first[v], last[v]});
  }

  // Largest first: the big activations settle at the bottom and the small
  // ones fill the holes between them.
  std::stable_sort(todo.begin(), todo.end(), [](const Interval& a, const Interval& b) {
    if (a.bytes != b.bytes) return a.bytes > b.bytes;
    return a.first < b.first;
  });
  std::vector<Interval> placed;  // sorted by offset
  for (const Interval& cur : todo) {
    // Walk the placed values in offset order; a gap is the space between the
    // end of everything below (that overlaps in time) and the next one.
    int64_t below_end = 0;
    int64_t best = -1, best_gap = std::numeric_limits<int64_t>::max();
    for (const Interval& p : placed) {
      if (!overlaps(cur, p)) continue;
      const int64_t at = plan.offset[p.value];
      const int64_t gap = at - below_end;
      if (gap >= cur.bytes && gap < best_gap) {
        best = below_end;
        best_gap = gap;
      }
      below_end = std::max(below_end, at + p.bytes);
    }
    const int64_t at = best >= 0 ? best : below_end;
    plan.offset[cur.value] = at;
    plan.arena_bytes = std::max(plan.arena_bytes, at + cur.bytes);
    auto pos = std::upper_bound(placed.begin(), placed.end(), at,
                                [&](int64_t off, const Interval& p) { return off < plan.offset[p.value]; });
    placed.insert(pos, cur);
  }

  for (size_t v = 0; v < n; ++v)
    if (root[v] != static_cast<ValueId>(v)) plan.offset[v] = plan.offset[root[v]];
  return plan;
}

void alias_groups(const std::vector<ValueId>& alias_of, std::vector<ValueId>& root,
                  std::vector<std::vector<ValueId>>& members) {
  const size_t n = alias_of.size();
  root.assign(n, -1);
  members.assign(n, {});
  for (size_t v = 0; v < n; ++v) {
    ValueId r = static_cast<ValueId>(v);
    for (size_t steps = 0; alias_of[r] >= 0; ++steps) {
      if (steps == n) throw Error(fmt::format("alias groups: the aliases of value {} form a cycle", v));
      r = alias_of[r];
    }
    root[v] = r;
  }
  for (size_t v = 0; v < n; ++v) {
    std::vector<ValueId>& m = members[root[v]];
    if (root[v] == static_cast<ValueId>(v))
      m.insert(m.begin(), root[v]);
    else
      m.push_back(static_cast<ValueId>(v));
  }
}

}  // namespace pf::backend
