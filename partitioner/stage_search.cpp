// Exact min-period stage search by dynamic programming, and plan evaluation.
#include "partitioner/stage_search.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <optional>
#include <utility>

#include "ir/diagnostic.h"
#include "ir/units.h"
#include "partitioner/memory_fit.h"
#include "partitioner/stage_cost.h"

namespace pf {

namespace {

constexpr double kInfTime = std::numeric_limits<double>::infinity();

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string plural(int count, const char* noun) { return fmt::format("{} {}{}", count, noun, count == 1 ? "" : "s"); }

/// Like format_bytes, but rounded up to the tenth shown, so that a stated
/// requirement is never below the real one.
std::string format_bytes_up(int64_t bytes) {
  int64_t unit = 1;
  while (unit < (int64_t{1} << 50) && bytes / unit >= 1024) unit *= 1024;  // up to PiB, as format_bytes
  if (unit == 1) return format_bytes(static_cast<double>(bytes));
  const int64_t tenths = bytes / unit * 10 + (bytes % unit * 10 + unit - 1) / unit;
  return format_bytes(static_cast<double>(tenths) / 10.0 * static_cast<double>(unit));
}

void check_cuts(const CostGraph& graph, int stages, const std::vector<int>& cuts) {
  const int n = static_cast<int>(graph.nodes.size());
  if (static_cast<int>(cuts.size()) != stages - 1)
    throw Error(fmt::format("expected {} cuts for {}, got {}", stages - 1, plural(stages, "stage"), cuts.size()));
  int previous = 0;
  for (int c : cuts) {
    if (c < 1 || c > n - 1) throw Error(fmt::format("cut {} is outside 1..{}", c, n - 1));
    if (c <= previous) throw Error(fmt::format("cuts must increase, got {} after {}", c, previous));
    if (!graph.cut_candidates.empty() &&
        !std::binary_search(graph.cut_candidates.begin(), graph.cut_candidates.end(), c))
      throw Error(fmt::format("cut {} is not one of the graph's cut candidates", c));
    previous = c;
  }
}

/// Prices `cuts` stage by stage and device by device.
PartitionResult price(const StageCosts& costs, const std::vector<StageSlot>& slots, const PartitionOptions& options,
                      const std::vector<int>& cuts) {
  const int n = costs.ranges().nodes();
  const int stages = static_cast<int>(slots.size());
  PartitionResult result;
  result.cuts = cuts;
  for (const DeviceSpec& d : options.devices) result.devices.push_back({d.name, 0.0, 0, d.memory_bytes, true});
  double total = 0;
  for (int s = 0; s < stages; ++s) {
    const StageSlot& slot = slots[s];
    const RangeCosts& r = costs.ranges();
    StagePlan st;
    st.begin = s == 0 ? 0 : cuts[s - 1];
    st.end = s == stages - 1 ? n : cuts[s];
    st.device = slot.device;
    st.chunk = slot.chunk;
    st.sync_s = costs.sync_s(st.begin, st.end);
    st.compute_s = costs.compute_s(slot, st.begin, st.end) - st.sync_s;
    st.comm_s = costs.transfer_s(slot, st.begin, st.end);
    st.time_s = costs.time_s(slot, st.begin, st.end);
    st.param_bytes = r.param_bytes(st.begin, st.end);
    st.own_param_bytes = r.own_param_bytes(st.begin, st.end);
    st.stash_bytes = r.stash_bytes(st.begin, st.end);
    st.received_bytes = r.crossing_bytes(st.begin);
    st.sent_bytes = r.crossing_bytes(st.end);
    st.received_tensors = r.crossing_tensors(st.begin);
    st.sent_tensors = r.crossing_tensors(st.end);
    st.inflight = slot.inflight;
    st.memory_bytes = costs.memory_bytes(slot, st.begin, st.end);
    st.memory_limit = slot.memory_limit;
    DevicePlan& d = result.devices[slot.device];
    d.busy_s += st.time_s;
    d.memory_bytes += st.memory_bytes;
    total += st.time_s;
    result.stages.push_back(st);
  }
  double busiest = 0;
  for (DevicePlan& d : result.devices) {
    d.fits = d.memory_bytes <= d.memory_limit;
    result.fits_memory = result.fits_memory && d.fits;
    busiest = std::max(busiest, d.busy_s);
  }
  // With one stage per device the busiest device is the slowest stage; with
  // several, it is what limits the rate at which micro-batches go through.
  result.period_s = busiest;
  const double mean = total / static_cast<double>(result.devices.size());
  result.imbalance_pct = mean > 0 ? (busiest - mean) / mean * 100.0 : 0.0;
  return result;
}

/// The optimal slowest-stage time and a split that achieves it.
struct MinPeriod {
  double slowest_s;
  std::vector<int> cuts;
};

/// The DP. best[s][b]: the smallest possible slowest-stage time when stages
/// 0..s-1 cover the nodes before boundary b and each fits its memory share.
/// Because a stage's time and memory depend only on its own range, the
/// optimum for s stages extends an optimum for s - 1 stages, so
///   best[s][b] = min over a < b of max(best[s-1][a], time(s-1; a, b)).
/// Returns the optimum and its cuts, or nullopt when no split fits.
std::optional<MinPeriod> min_period(const StageCosts& costs, const std::vector<int>& bounds,
                                    const std::vector<StageSlot>& slots) {
  const int K = static_cast<int>(bounds.size()) - 1;
  const int S = static_cast<int>(slots.size());
  const int W = K + 1;
  const RangeCosts& r = costs.ranges();
  std::vector<double> best(static_cast<size_t>(S + 1) * W, kInfTime);  // (S + 1, K + 1)
  std::vector<int> from(static_cast<size_t>(S + 1) * W, -1);
  best[0] = 0.0;  // zero stages end at boundary 0
  for (int s = 1; s <= S; ++s) {
    const StageSlot& slot = slots[s - 1];
    // Every stage holds at least one piece, so stage s ends at boundary
    // s..K-(S-s); the last one ends at K.
    const int b_lo = s == S ? K : s;
    const int b_hi = K - (S - s);
    const double* prev_row = &best[static_cast<size_t>(s - 1) * W];
    for (int b = b_lo; b <= b_hi; ++b) {
      const int j = bounds[b];
      double cur = kInfTime;
      int arg = -1;
      // Walk the start leftwards: compute time and own memory only grow, so
      // once either rules a start out, every earlier start is ruled out too.
      for (int a = s == 1 ? 0 : b - 1; a >= s - 1; --a) {
        const int i = bounds[a];
        const double compute = costs.compute_s(slot, i, j);
        if (compute >= cur) break;
        const double value = std::max(prev_row[a], compute + costs.transfer_s(slot, i, j));
        if (value >= cur) continue;
        // Memory last: it is the dearest test, and only a start that would
        // improve on the best so far needs it.
        const int64_t own = costs.own_memory(slot, i, j);
        if (own > slot.memory_limit) break;
        if (own + r.crossing_bytes(i) * slot.inflight > slot.memory_limit) continue;
        cur = value;
        arg = a;
      }
      best[static_cast<size_t>(s) * W + b] = cur;
      from[static_cast<size_t>(s) * W + b] = arg;
    }
  }
  if (best[static_cast<size_t>(S) * W + K] == kInfTime) return std::nullopt;
  std::vector<int> cuts;
  for (int s = S, b = K; s > 1; --s) {
    b = from[static_cast<size_t>(s) * W + b];
    cuts.push_back(bounds[b]);
  }
  std::reverse(cuts.begin(), cuts.end());
  return MinPeriod{best[static_cast<size_t>(S) * W + K], cuts};
}

/// Second pass: many splits share the optimal slowest stage, and the first
/// pass picks one of them arbitrarily. Among those whose every stage takes at
/// most `cap` (the optimum) and fits, this one has the least total stage
/// time: the same period, with the least traffic and the shortest pipeline
/// fill and drain, which take about the sum of the stage times. An additive
/// objective under per-stage limits, so again an exact DP:
///   total[s][b] = min over a of total[s-1][a] + time(s-1; a, b), time <= cap.
/// The stage times are computed exactly as in the first pass, so its
/// optimum satisfies the cap bit for bit and this pass cannot come up empty;
/// `fallback` (the first pass's cuts) is returned if it ever did.
std::vector<int> min_total_cuts(const StageCosts& costs, const std::vector<int>& bounds,
                                const std::vector<StageSlot>& slots, double cap, const std::vector<int>& fallback) {
  const int K = static_cast<int>(bounds.size()) - 1;
  const int S = static_cast<int>(slots.size());
  const int W = K + 1;
  const RangeCosts& r = costs.ranges();
  std::vector<double> total(static_cast<size_t>(S + 1) * W, kInfTime);  // (S + 1, K + 1)
  std::vector<int> from(static_cast<size_t>(S + 1) * W, -1);
  total[0] = 0.0;
  for (int s = 1; s <= S; ++s) {
    const StageSlot& slot = slots[s - 1];
    const int b_lo = s == S ? K : s;
    const int b_hi = K - (S - s);
    const double* prev_row = &total[static_cast<size_t>(s - 1) * W];
    for (int b = b_lo; b <= b_hi; ++b) {
      const int j = bounds[b];
      double cur = kInfTime;
      int arg = -1;
      for (int a = s == 1 ? 0 : b - 1; a >= s - 1; --a) {
        const int i = bounds[a];
        const double compute = costs.compute_s(slot, i, j);
        if (compute > cap) break;
        if (prev_row[a] == kInfTime) continue;
        const double time = compute + costs.transfer_s(slot, i, j);
        if (time > cap) continue;
        const int64_t own = costs.own_memory(slot, i, j);
        if (own > slot.memory_limit) break;
        if (own + r.crossing_bytes(i) * slot.inflight > slot.memory_limit) continue;
        if (prev_row[a] + time < cur) {
          cur = prev_row[a] + time;
          arg = a;
        }
      }
      total[static_cast<size_t>(s) * W + b] = cur;
      from[static_cast<size_t>(s) * W + b] = arg;
    }
  }
  if (total[static_cast<size_t>(S) * W + K] == kInfTime) return fallback;
  std::vector<int> cuts;
  for (int s = S, b = K; s > 1; --s) {
    b = from[static_cast<size_t>(s) * W + b];
    cuts.push_back(bounds[b]);
  }
  std::reverse(cuts.begin(), cuts.end());
  return cuts;
}

/// Third pass, for devices holding several stages: the passes above bound a
/// device's time by v times its slowest stage, which a split whose stages
/// cannot be made equal (a few large products) meets with one device
/// holding two heavy stages and another two light ones. Moving one cut at a
/// time to any boundary between its neighbours, while the busiest device
/// gets less busy (or as busy and the stages' total shorter) and every stage
/// still fits its memory share, evens the devices out (the 784-4096x3 MLP
/// as a V on two devices: 33.6 -> 20.0 M multiply-adds on the busier one).
/// partition() runs it from the DP's split and from the baselines'.
struct Balanced {
  std::pair<double, double> score;  // (busiest device, sum of stage times); infinite where a stage does not fit
  std::vector<int> cuts;
};

Balanced balance_devices(const StageCosts& costs, const std::vector<int>& bounds, const std::vector<StageSlot>& slots,
                         int devices, std::vector<int> cuts) {
  const int K = static_cast<int>(bounds.size()) - 1;
  const int S = static_cast<int>(slots.size());
  const RangeCosts& r = costs.ranges();
  // Boundary indices of the stage starts: at[0] = 0, at[S] = K.
  std::vector<int> at{0};
  for (int c : cuts) at.push_back(static_cast<int>(std::lower_bound(bounds.begin(), bounds.end(), c) - bounds.begin()));
  at.push_back(K);
  auto stage_time = [&](int s, int a, int b) -> double {  // infinite when the stage does not fit
    const StageSlot& slot = slots[static_cast<size_t>(s)];
    const int i = bounds[a], j = bounds[b];
    const int64_t own = costs.own_memory(slot, i, j);
    if (own + r.crossing_bytes(i) * slot.inflight > slot.memory_limit) return kInfTime;
    return costs.time_s(slot, i, j);
  };
  // The split's stage times, its devices' busy times and their total; a
  // move of cut k changes stages k - 1 and k only.
  std::vector<double> times(static_cast<size_t>(S)), busy(static_cast<size_t>(devices), 0.0);
  double total = 0;
  for (int s = 0; s < S; ++s) {
    times[static_cast<size_t>(s)] = stage_time(s, at[s], at[s + 1]);
    busy[static_cast<size_t>(slots[s].device)] += times[static_cast<size_t>(s)];
    total += times[static_cast<size_t>(s)];
  }
  // The busiest device once `left`'s stage takes `dl` longer and `right`'s `dr`.
  auto busiest = [&](size_t left = 0, double dl = 0, size_t right = 0, double dr = 0) {
    double most = 0;
    for (size_t d = 0; d < busy.size(); ++d) {
      double b = busy[d];
      if (d == static_cast<size_t>(slots[left].device)) b += dl;
      if (d == static_cast<size_t>(slots[right].device)) b += dr;
      most = std::max(most, b);
    }
    return most;
  };
  std::pair<double, double> best{busiest(), total};
  // A start where some stage does not fit its share (a baseline's) is not
  // searched from: it scores infinite and is never chosen.
  if (best.second == kInfTime) return {best, std::move(cuts)};
  // Each accepted move lowers (busiest, total), so this ends; the bound
  // keeps a long chain of tiny gains from taking long.
  for (int round = 0; round < 16 * S; ++round) {
    int best_k = -1, best_b = -1;
    for (int k = 1; k < S; ++k) {
      const size_t left = static_cast<size_t>(k - 1), right = static_cast<size_t>(k);
      for (int b = at[k - 1] + 1; b < at[k + 1]; ++b) {
        if (b == at[k]) continue;
        const double dl = stage_time(k - 1, at[k - 1], b) - times[left];
        const double dr = stage_time(k, b, at[k + 1]) - times[right];
        const std::pair<double, double> score{busiest(left, dl, right, dr), total + dl + dr};
        if (score < best) {
          best = score;
          best_k = k;
          best_b = b;
        }
      }
    }
    if (best_k < 0) break;
    const size_t left = static_cast<size_t>(best_k - 1), right = static_cast<size_t>(best_k);
    at[best_k] = best_b;
    for (size_t s : {left, right}) {
      const double t = stage_time(static_cast<int>(s), at[s], at[s + 1]);
      busy[static_cast<size_t>(slots[s].device)] += t - times[s];
      total += t - times[s];
      times[s] = t;
    }
  }
  for (int k = 1; k < S; ++k) cuts[static_cast<size_t>(k - 1)] = bounds[at[k]];
  return {best, std::move(cuts)};
}

/// The message for a graph that fits nowhere: what memory per device the best
/// split needs, and how many devices of the largest given size would do.
std::string infeasible_message(const PartitionOptions& options, const StageCosts& costs, const std::vector<int>& bounds,
                               const std::vector<StageSlot>& slots) {
  const int K = static_cast<int>(bounds.size()) - 1;
  const int v = options.virtual_stages;
  const int p = static_cast<int>(options.devices.size());
  const int64_t need = min_device_memory(costs, bounds, slots, v);
  int64_t largest = 0;
  for (const DeviceSpec& d : options.devices) largest = std::max(largest, d.memory_bytes);
  // A piece whose own weights and one micro-batch of stash exceed a share
  // fits on no number of devices (every stage holding it needs at least
  // that): say so without searching.
  bool hopeless = false;
  const StageSlot lightest{0, 0, 1.0, 1, largest / v};
  for (int a = 0; a < K && !hopeless; ++a)
    hopeless = costs.own_memory(lightest, bounds[a], bounds[a + 1]) > lightest.memory_limit;
  const int enough = hopeless ? 0 : smallest_device_count(costs, bounds, options, largest);
  if (enough > 0)
    return fmt::format("the model needs at least {} of {}, or {} per device with {}", plural(enough, "device"),
                       format_bytes(static_cast<double>(largest)), format_bytes_up(need), plural(p, "device"));
  return fmt::format("the model needs {} per device with {}; no number of devices of {} is enough",
                     format_bytes_up(need), plural(p, "device"), format_bytes(static_cast<double>(largest)));
}

}  // namespace

PartitionResult evaluate(const CostGraph& graph, const PartitionOptions& options, const std::vector<int>& cuts) {
  const auto start = std::chrono::steady_clock::now();
  validate(graph);
  const std::vector<StageSlot> slots = stage_slots(graph, options);
  check_cuts(graph, options.stages, cuts);
  const StageCosts costs(graph, options);
  PartitionResult result = price(costs, slots, options, cuts);
  result.method = "fixed";
  result.search_s = seconds_since(start);
  return result;
}

PartitionResult partition(const CostGraph& graph, const PartitionOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!options.fixed_cuts.empty()) {
    PartitionResult result = evaluate(graph, options, options.fixed_cuts);
    for (size_t d = 0; d < result.devices.size(); ++d) {
      const DevicePlan& dev = result.devices[d];
      if (!dev.fits)
        throw DoesNotFit(fmt::format("the fixed cuts do not fit: device {} '{}' needs {} but has {}", d, dev.name,
                                     format_bytes_up(dev.memory_bytes),
                                     format_bytes(static_cast<double>(dev.memory_limit))));
    }
    result.search_s = seconds_since(start);
    return result;
  }
  validate(graph);
  const std::vector<StageSlot> slots = stage_slots(graph, options);
  const std::vector<int> bounds = stage_boundaries(graph);
  const StageCosts costs(graph, options);
  const std::optional<MinPeriod> best = min_period(costs, bounds, slots);
  if (!best) throw DoesNotFit(infeasible_message(options, costs, bounds, slots));
  std::vector<int> cuts = min_total_cuts(costs, bounds, slots, best->slowest_s, best->cuts);
  if (options.virtual_stages > 1) {
    // The local search from the DP's split and from each baseline's (a
    // different valley: the DP's bound can favour a split that no single
    // move makes even), keeping the best.
    std::vector<std::vector<int>> starts = {cuts};
    for (PartitionResult (*baseline)(const CostGraph&, const PartitionOptions&) : {&equal_layers, &equal_params}) {
      try {
        std::vector<int> c = baseline(graph, options).cuts;
        if (std::all_of(c.begin(), c.end(), [&](int x) { return std::binary_search(bounds.begin(), bounds.end(), x); }))
          starts.push_back(std::move(c));
      } catch (const Error&) {
        // No such baseline here (fewer layers than stages): the DP's start alone.
      }
    }
    std::optional<Balanced> chosen;
    for (std::vector<int>& from : starts) {
      Balanced b = balance_devices(costs, bounds, slots, static_cast<int>(options.devices.size()), std::move(from));
      if (!chosen || b.score < chosen->score) chosen = std::move(b);
    }
    cuts = std::move(chosen->cuts);
  }
  PartitionResult result = price(costs, slots, options, cuts);
  result.method = "dp";
  result.search_s = seconds_since(start);
  return result;
}

}  // namespace pf
