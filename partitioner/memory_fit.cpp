// Memory-only searches behind the partitioner's "does not fit" message.
#include "partitioner/memory_fit.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <map>
#include <utility>

namespace pf {

namespace {

/// For every stage start a, a number f of micro-batches in flight and
/// whether the stage holds deferred values (StageSlot::holds_deferred), the
/// last boundary b such that the stage [a, b) fits `limit` (a itself when
/// not even one piece does). For a fixed start, memory only grows with the
/// end, so each entry is a binary search; rows are cached per (f, deferred).
class ReachTable {
 public:
  ReachTable(const StageCosts& costs, const std::vector<int>& bounds, int64_t limit)
      : costs_(costs), bounds_(bounds), limit_(limit) {}

  int pieces() const { return static_cast<int>(bounds_.size()) - 1; }

  const std::vector<int>& furthest(int inflight, bool holds_deferred = false) {
    auto it = rows_.find({inflight, holds_deferred});
    if (it != rows_.end()) return it->second;
    const int K = pieces();
    const StageSlot slot{0, 0, 1.0, inflight, limit_, holds_deferred};
    std::vector<int> row(K);
    for (int a = 0; a < K; ++a) {
      int lo = a, hi = K;
      while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (costs_.memory_bytes(slot, bounds_[a], bounds_[mid]) <= limit_)
          lo = mid;
        else
          hi = mid - 1;
      }
      row[a] = lo;
    }
    return rows_.emplace(std::pair{inflight, holds_deferred}, std::move(row)).first->second;
  }

 private:
  const StageCosts& costs_;
  const std::vector<int>& bounds_;
  int64_t limit_;
  std::map<std::pair<int, bool>, std::vector<int>> rows_;
};

/// Whether some split onto `slots` fits, stage by stage from the front: the
/// ends reachable after stage s are the union of the intervals (a, furthest(a)]
/// over reachable starts a, swept in O(K).
bool fits_from_front(ReachTable& table, const std::vector<StageSlot>& slots) {
  const int K = table.pieces();
  const int S = static_cast<int>(slots.size());
  if (S > K) return false;
  std::vector<char> reach(K + 1, 0), next(K + 1, 0);
  reach[0] = 1;
  for (int s = 0; s < S; ++s) {
    const std::vector<int>& furthest = table.furthest(slots[s].inflight, slots[s].holds_deferred);
    const int b_hi = K - (S - 1 - s);  // leave a piece for every later stage
    std::fill(next.begin(), next.end(), 0);
    int reach_end = -1;
    bool any = false;
    for (int b = 1; b <= b_hi; ++b) {
      if (reach[b - 1]) reach_end = std::max(reach_end, furthest[b - 1]);
      if (reach_end >= b) {
        next[b] = 1;
        any = true;
      }
    }
    if (!any) return false;
    reach.swap(next);
  }
  return reach[K] != 0;
}

/// For rules where a stage's in-flight count depends only on its distance d
/// from the last stage (1F1B: min(d + 1, m); GPipe: m), one sweep from the
/// back decides every stage count at once: after e steps, `tail` marks the
/// starts from which the rest splits into e fitting stages. Returns the
/// smallest device count q >= q_lo whose q * v stages fit, or 0.
int smallest_count_from_back(ReachTable& table, const std::function<int(int)>& inflight_at_distance, int v, int q_lo) {
  const int K = table.pieces();
  std::vector<char> tail(K + 1, 0), next(K + 1, 0);
  std::vector<int> after(K + 2, 0);  // after[i]: marked boundaries in [i, K]
  tail[K] = 1;
  for (int e = 1; e <= K; ++e) {
    for (int i = K; i >= 0; --i) after[i] = after[i + 1] + tail[i];
    const std::vector<int>& furthest = table.furthest(inflight_at_distance(e - 1));
    bool any = false;
    for (int a = 0; a < K; ++a) {
      // Some marked end in (a, furthest[a]].
      next[a] = furthest[a] > a && after[a + 1] - after[furthest[a] + 1] > 0;
      any = any || next[a];
    }
    next[K] = 0;
    if (!any) return 0;  // nothing splits into e stages, so nothing into more
    if (e % v == 0 && e / v >= q_lo && next[0]) return e / v;
    tail.swap(next);
  }
  return 0;
}

}  // namespace

int64_t min_device_memory(const StageCosts& costs, const std::vector<int>& bounds, const std::vector<StageSlot>& slots,
                          int virtual_stages) {
  constexpr int64_t kInf = std::numeric_limits<int64_t>::max();
  const int K = static_cast<int>(bounds.size()) - 1;
  const int S = static_cast<int>(slots.size());
  const int W = K + 1;
  std::vector<int64_t> need(static_cast<size_t>(S + 1) * W, kInf);  // (S + 1, K + 1)
  need[0] = 0;
  for (int s = 1; s <= S; ++s) {
    const StageSlot& slot = slots[s - 1];
    const int b_lo = s == S ? K : s;
    const int b_hi = K - (S - s);
    const int64_t* prev_row = &need[static_cast<size_t>(s - 1) * W];
    for (int b = b_lo; b <= b_hi; ++b) {
      int64_t cur = kInf;
      // As the start moves left the stage's own memory only grows: stop once
      // it alone reaches the best so far.
      for (int a = s == 1 ? 0 : b - 1; a >= s - 1; --a) {
        if (virtual_stages * costs.own_memory(slot, bounds[a], bounds[b]) >= cur) break;
        const int64_t prev = prev_row[a];
        if (prev >= cur) continue;
        cur = std::min(cur, std::max(prev, virtual_stages * costs.memory_bytes(slot, bounds[a], bounds[b])));
      }
      need[static_cast<size_t>(s) * W + b] = cur;
    }
  }
  return need[static_cast<size_t>(S) * W + K];
}

int smallest_device_count(const StageCosts& costs, const std::vector<int>& bounds, const PartitionOptions& options,
                          int64_t memory_bytes) {
  const int v = options.virtual_stages;
  const int m = options.microbatches;
  ReachTable table(costs, bounds, memory_bytes / v);
  if (options.rule == MemoryRule::gpipe)
    return smallest_count_from_back(
        table, [m](int) { return m; }, v, 1);
  const int K = table.pieces();
  if (options.rule == MemoryRule::written) {  // its lists run one number of devices
    const int p = static_cast<int>(options.written_stashed.size()) / v;
    return p * v <= K && fits_from_front(table, uniform_slots(options, p, memory_bytes)) ? p : 0;
  }
  if (counts_from_schedule(options.rule, v)) {
    // Each device count has a schedule of its own: try the counts in turn.
    for (int q = 1; q * v <= K; ++q)
      if (fits_from_front(table, uniform_slots(options, q, memory_bytes))) return q;
    return 0;
  }
  // 1F1B, and interleaved with one chunk.
  return smallest_count_from_back(
      table, [m](int d) { return std::min(d + 1, m); }, v, 1);
}

}  // namespace pf
