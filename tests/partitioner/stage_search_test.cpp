// Stage search: the DP against brute force on random DAGs, and hand-made cases.
#include "partitioner/stage_search.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <optional>
#include <random>

#include "ir/diagnostic.h"
#include "ir/units.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

constexpr int64_t kMiB = int64_t{1} << 20;
constexpr int64_t kGiB = int64_t{1} << 30;

// ---------------------------------------------------------------------------
// An independent reference: the cost model written straight from its
// definition (loops over nodes and tensors, no prefix sums), and a search
// that tries every set of cuts.

struct NaiveStage {
  double time_s = 0;
  int64_t memory_bytes = 0;
  int64_t limit = 0;
};

NaiveStage naive_stage(const CostGraph& g, const PartitionOptions& o, int stage, int begin, int end) {
  const int v = o.virtual_stages;
  const int p = o.stages / v;
  const int here = o.placement.device(stage, p);
  const DeviceSpec& device = o.devices[static_cast<size_t>(here)];
  // A neighbour on the same device takes its hand-off in memory: no transfer.
  const bool local_in = stage > 0 && o.placement.device(stage - 1, p) == here;
  const bool local_out = stage + 1 < o.stages && o.placement.device(stage + 1, p) == here;
  double work = 0;
  int64_t params = 0, stash = 0;
  for (int k = begin; k < end; ++k) {
    work += g.nodes[k].forward_s + g.nodes[k].backward_s;
    params += g.nodes[k].param_bytes;
    stash += g.nodes[k].stash_bytes;
  }
  int64_t received = 0, sent = 0;
  int transfers_in = 0, transfers_out = 0;
  for (const CostTensor& t : g.tensors) {
    if (t.producer < 0 || t.consumers.empty()) continue;
    const int last = *std::max_element(t.consumers.begin(), t.consumers.end());
    if (t.producer < begin && last >= begin) {
      received += t.bytes;
      ++transfers_in;
    }
    if (t.producer < end && last >= end) {
      sent += t.bytes;
      ++transfers_out;
    }
  }
  NaiveStage s;
  auto comm_of = [&](int64_t bytes, int transfers) {
    return 2.0 * static_cast<double>(bytes) / o.link.bandwidth_bytes_per_s + 2.0 * o.link.latency_s * transfers;
  };
  const double comm =
      (local_in ? 0.0 : comm_of(received, transfers_in)) + (local_out ? 0.0 : comm_of(sent, transfers_out));
  s.time_s = work / device.speed + comm;
  const int inflight = inflight_microbatches(o.rule, stage, o.stages, o.microbatches, v);
  s.memory_bytes = 2 * params + std::llround(params * o.optimizer_state_factor) + (stash + received) * inflight;
  s.limit = device.memory_bytes / v;
  return s;
}

struct NaivePlan {
  bool fits = true;
  double period_s = 0;  // the busiest device's time
  double bound_s = 0;   // v times the slowest stage: the DP's objective, at least period_s
  std::vector<NaiveStage> stages;
};

NaivePlan naive_plan(const CostGraph& g, const PartitionOptions& o, const std::vector<int>& cuts) {
  NaivePlan plan;
  const int n = static_cast<int>(g.nodes.size());
  const int p = o.stages / o.virtual_stages;
  std::vector<double> busy(static_cast<size_t>(p), 0.0);
  double slowest = 0;
  for (int s = 0; s < o.stages; ++s) {
    const int begin = s == 0 ? 0 : cuts[s - 1];
    const int end = s == o.stages - 1 ? n : cuts[s];
    NaiveStage st = naive_stage(g, o, s, begin, end);
    plan.fits = plan.fits && st.memory_bytes <= st.limit;
    slowest = std::max(slowest, st.time_s);
    busy[static_cast<size_t>(o.placement.device(s, p))] += st.time_s;
    plan.stages.push_back(st);
  }
  plan.period_s = *std::max_element(busy.begin(), busy.end());
  plan.bound_s = o.virtual_stages * slowest;
  return plan;
}

/// Calls `visit` with every set of cuts that splits `g` into `stages` stages.
void for_each_split(const CostGraph& g, int stages, const std::function<void(const std::vector<int>&)>& visit) {
  std::vector<int> positions = g.cut_candidates;
  if (positions.empty())
    for (int i = 1; i < static_cast<int>(g.nodes.size()); ++i) positions.push_back(i);
  std::vector<int> cuts;
  std::function<void(size_t)> choose = [&](size_t from) {
    if (static_cast<int>(cuts.size()) == stages - 1) {
      visit(cuts);
      return;
    }
    for (size_t k = from; k < positions.size(); ++k) {
      cuts.push_back(positions[k]);
      choose(k + 1);
      cuts.pop_back();
    }
  };
  choose(0);
}

double total_time(const NaivePlan& plan) {
  double total = 0;
  for (const NaiveStage& st : plan.stages) total += st.time_s;
  return total;
}

struct BruteForce {
  std::optional<double> bound_s;  // the least v times slowest stage; nullopt: nothing fits
  double period_s = 0;            // the least busiest device
  double total_s = 0;             // the least sum of stage times among splits of the least bound
  int splits = 0;                 // how many cut sets were tried
};

BruteForce brute_force(const CostGraph& g, const PartitionOptions& o) {
  BruteForce out;
  std::vector<NaivePlan> fitting;
  out.period_s = std::numeric_limits<double>::infinity();
  for_each_split(g, o.stages, [&](const std::vector<int>& cuts) {
    ++out.splits;
    NaivePlan plan = naive_plan(g, o, cuts);
    if (!plan.fits) return;
    if (!out.bound_s || plan.bound_s < *out.bound_s) out.bound_s = plan.bound_s;
    out.period_s = std::min(out.period_s, plan.period_s);
    fitting.push_back(std::move(plan));
  });
  out.total_s = std::numeric_limits<double>::infinity();
  for (const NaivePlan& plan : fitting)
    if (plan.bound_s <= *out.bound_s * (1 + 1e-12)) out.total_s = std::min(out.total_s, total_time(plan));
  return out;
}

/// Bytes as format_bytes prints them, rounded up to the tenth shown.
std::string bytes_up(int64_t bytes) {
  int64_t unit = 1;
  while (unit < (int64_t{1} << 50) && bytes / unit >= 1024) unit *= 1024;
  if (unit == 1) return format_bytes(static_cast<double>(bytes));
  return format_bytes(static_cast<double>((bytes * 10 + unit - 1) / unit) / 10.0 * static_cast<double>(unit));
}

/// The "does not fit" message, by brute force: the least uniform device
/// memory over every split, and the least count of the largest device that
/// any split fits.
std::string brute_force_message(const CostGraph& g, const PartitionOptions& o) {
  const int v = o.virtual_stages;
  int64_t need = std::numeric_limits<int64_t>::max();
  for_each_split(g, o.stages, [&](const std::vector<int>& cuts) {
    int64_t worst = 0;
    for (const NaiveStage& st : naive_plan(g, o, cuts).stages) worst = std::max(worst, v * st.memory_bytes);
    need = std::min(need, worst);
  });
  int64_t largest = 0;
  for (const DeviceSpec& d : o.devices) largest = std::max(largest, d.memory_bytes);
  const int pieces =
      g.cut_candidates.empty() ? static_cast<int>(g.nodes.size()) : static_cast<int>(g.cut_candidates.size()) + 1;
  int enough = 0;
  for (int q = 1; q * v <= pieces && enough == 0; ++q) {
    PartitionOptions u = o;
    u.stages = q * v;
    u.devices.assign(q, DeviceSpec{"u", 1.0, largest});
    for_each_split(g, u.stages, [&](const std::vector<int>& cuts) {
      if (naive_plan(g, u, cuts).fits) enough = q;
    });
  }
  const int p = o.stages / v;
  const std::string with = fmt::format("{} device{}", p, p == 1 ? "" : "s");
  if (enough > 0)
    return fmt::format("the model needs at least {} device{} of {}, or {} per device with {}", enough,
                       enough == 1 ? "" : "s", format_bytes(static_cast<double>(largest)), bytes_up(need), with);
  return fmt::format("the model needs {} per device with {}; no number of devices of {} is enough", bytes_up(need),
                     with, format_bytes(static_cast<double>(largest)));
}

// ---------------------------------------------------------------------------
// Random cases.

struct RandomCase {
  CostGraph graph;
  PartitionOptions options;
};

RandomCase random_case(std::mt19937& rng) {
  auto uniform = [&](double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(rng); };
  auto integer = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  auto chance = [&](double p) { return uniform(0, 1) < p; };

  RandomCase c;
  CostGraph& g = c.graph;
  const int n = integer(6, 12);
  for (int i = 0; i < n; ++i) {
    CostNode node;
    node.name = fmt::format("n{}", i);
    node.forward_s = uniform(0.05, 1.0);
    node.backward_s = node.forward_s * uniform(1.0, 2.5);
    node.param_bytes = chance(0.3) ? 0 : integer(10, 1000);
    node.stash_bytes = integer(0, 300);
    g.nodes.push_back(node);
  }
  for (int i = 0; i + 1 < n; ++i) {
    CostTensor t{i, {i + 1}, integer(0, 200), fmt::format("t{}", i)};
    // Skip edges, sometimes two, crossing several positions.
    for (int k = 0; k < 2; ++k)
      if (i + 2 < n && chance(0.35)) t.consumers.push_back(integer(i + 2, n - 1));
    g.tensors.push_back(t);
    if (chance(0.15)) g.tensors.push_back({i, {integer(i + 1, n - 1)}, integer(1, 400), fmt::format("side{}", i)});
  }
  if (chance(0.5)) g.tensors.push_back({-1, {0, integer(1, n - 1)}, 500, "input"});
  if (chance(0.3)) g.tensors.push_back({n - 1, {}, 700, "loss"});  // an output: never transferred
  if (chance(0.5))
    for (int i = 1; i < n; ++i)
      if (chance(0.6)) g.cut_candidates.push_back(i);
  const int pieces = g.cut_candidates.empty() ? n : static_cast<int>(g.cut_candidates.size()) + 1;

  PartitionOptions& o = c.options;
  o.rule = static_cast<MemoryRule>(integer(0, 4));
  if (o.rule == MemoryRule::zero_bubble_v && pieces < 2) o.rule = MemoryRule::zero_bubble;
  o.virtual_stages =
      (o.rule == MemoryRule::interleaved || o.rule == MemoryRule::gpipe) && pieces >= 2 && chance(0.4) ? 2 : 1;
  if (o.rule == MemoryRule::zero_bubble_v) {
    o.virtual_stages = 2;
    o.placement = StagePlacement::v_shape();
  }
  const int p = integer(1, std::min(4, pieces / o.virtual_stages));
  o.stages = p * o.virtual_stages;
  o.microbatches = integer(1, 8);
  o.optimizer_state_factor = integer(0, 2);
  o.link = {uniform(50, 500), uniform(0, 0.02)};

  // Memory around what an even split would need, so that some cases are
  // roomy, some tight and some impossible.
  int64_t params = 0, stash = 0;
  for (const CostNode& node : g.nodes) {
    params += node.param_bytes;
    stash += node.stash_bytes;
  }
  const double even = (params * (2 + o.optimizer_state_factor) + stash * std::min(o.microbatches, p) + 200.0) / p;
  for (int d = 0; d < p; ++d)
    o.devices.push_back(
        {fmt::format("d{}", d), uniform(0.5, 2.0), static_cast<int64_t>(even * uniform(0.5, 1.8) * o.virtual_stages)});
  return c;
}

TEST(StageSearch, MatchesBruteForceOnRandomDags) {
  std::mt19937 rng(20240611);
  int feasible = 0, infeasible = 0, interleaved = 0, with_count = 0, without_count = 0;
  int feasible_chunked = 0, devices_at_best = 0;
  for (int trial = 0; trial < 400; ++trial) {
    RandomCase c = random_case(rng);
    const CostGraph& g = c.graph;
    const PartitionOptions& o = c.options;
    SCOPED_TRACE(::testing::Message() << "trial " << trial << ": " << g.nodes.size() << " nodes, " << o.stages
                                      << " stages, rule " << memory_rule_name(o.rule) << ", v " << o.virtual_stages);
    if (o.virtual_stages > 1) ++interleaved;
    const BruteForce expected = brute_force(g, o);
    ASSERT_GT(expected.splits, 0);
    if (!expected.bound_s) {
      ++infeasible;
      try {
        partition(g, o);
        ADD_FAILURE() << "the DP found a split where brute force found none";
      } catch (const Error& e) {
        EXPECT_EQ(e.what(), brute_force_message(g, o));
        (std::string(e.what()).find("at least") != std::string::npos ? with_count : without_count) += 1;
      }
      continue;
    }
    ++feasible;
    const PartitionResult got = partition(g, o);
    // Re-price the DP's choice with the reference: it fits, and the
    // reported numbers are the reference's.
    const NaivePlan check = naive_plan(g, o, got.cuts);
    EXPECT_TRUE(check.fits);
    EXPECT_TRUE(got.fits_memory);
    EXPECT_NEAR(check.period_s, got.period_s, 1e-9 * got.period_s);
    if (o.virtual_stages == 1) {
      // One stage per device: the optimum, and among the optimal splits the
      // one whose stages add up to least.
      EXPECT_NEAR(got.period_s, expected.period_s, 1e-9 * expected.period_s);
      EXPECT_NEAR(total_time(check), expected.total_s, 1e-9 * expected.total_s);
    } else {
      // Several: never above the DP's bound, never below the best split.
      EXPECT_LE(got.period_s, *expected.bound_s * (1 + 1e-9));
      EXPECT_GE(got.period_s, expected.period_s * (1 - 1e-9));
      ++feasible_chunked;
      devices_at_best += got.period_s <= expected.period_s * (1 + 1e-9);
    }
    ASSERT_EQ(got.stages.size(), check.stages.size());
    for (size_t s = 0; s < got.stages.size(); ++s) {
      EXPECT_LE(got.stages[s].memory_bytes, got.stages[s].memory_limit);
      EXPECT_EQ(got.stages[s].memory_bytes, check.stages[s].memory_bytes);
      EXPECT_NEAR(got.stages[s].time_s, check.stages[s].time_s, 1e-9 * check.stages[s].time_s);
      EXPECT_LT(got.stages[s].begin, got.stages[s].end);
    }
    for (const DevicePlan& d : got.devices) EXPECT_LE(d.memory_bytes, d.memory_limit);
    // No baseline that keeps every stage within its share beats the DP.
    for (const PartitionResult& base : {equal_layers(g, o), equal_params(g, o)}) {
      const NaivePlan b = naive_plan(g, o, base.cuts);
      if (b.fits) {
        EXPECT_GE(b.period_s, got.period_s * (1 - 1e-9)) << base.method;
      }
    }
  }
  // The comparison means something only if both outcomes occur often.
  EXPECT_GE(feasible, 100);
  EXPECT_GE(infeasible, 50);
  EXPECT_GE(interleaved, 40);
  EXPECT_GE(with_count, 20);     // messages naming a device count
  EXPECT_GE(without_count, 20);  // and ones saying no count is enough
  std::printf("random DAGs: %d feasible, %d infeasible, %d with 2 virtual stages (%d of the %d feasible at the "
              "least busiest device of any split)\n",
              feasible, infeasible, interleaved, devices_at_best, feasible_chunked);
}

// ---------------------------------------------------------------------------
// Hand-made cases.

/// n nodes in a chain, each forward 1 s and backward 2 s, passing `bytes`.
CostGraph chain(int n, int64_t bytes = 0) {
  CostGraph g;
  for (int i = 0; i < n; ++i) g.nodes.push_back({fmt::format("n{}", i), "", 1.0, 2.0, 0, 0});
  for (int i = 0; i + 1 < n; ++i) g.tensors.push_back({i, {i + 1}, bytes, fmt::format("t{}", i)});
  return g;
}

PartitionOptions roomy(int devices, MemoryRule rule = MemoryRule::one_f_one_b) {
  PartitionOptions o;
  o.stages = devices;
  o.microbatches = 8;
  o.rule = rule;
  for (int d = 0; d < devices; ++d) o.devices.push_back({fmt::format("gpu{}", d), 1.0, 80 * kGiB});
  o.link = {1e9, 0.0};
  return o;
}

TEST(StageSearch, EqualChainSplitsEvenly) {
  const PartitionResult r = partition(chain(8), roomy(4));
  EXPECT_EQ(r.method, "dp");
  EXPECT_EQ(r.cuts, (std::vector<int>{2, 4, 6}));
  EXPECT_DOUBLE_EQ(r.period_s, 6.0);
  EXPECT_DOUBLE_EQ(r.imbalance_pct, 0.0);
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(r.stages[s].device, s);
    EXPECT_DOUBLE_EQ(r.stages[s].compute_s, 6.0);
  }
}

TEST(StageSearch, OneStageTakesEverything) {
  const PartitionResult r = partition(chain(5, 100), roomy(1));
  EXPECT_TRUE(r.cuts.empty());
  ASSERT_EQ(r.stages.size(), 1u);
  EXPECT_EQ(r.stages[0].end, 5);
  EXPECT_DOUBLE_EQ(r.stages[0].comm_s, 0.0);
  EXPECT_DOUBLE_EQ(r.period_s, 15.0);
}

TEST(StageSearch, SkipConnectionIsPaidOnEveryStageItCrosses) {
  CostGraph g = chain(6, 100);
  g.tensors.push_back({0, {1, 5}, 1000, "skip"});
  PartitionOptions o = roomy(3);
  o.link = {1000.0, 0.01};
  o.fixed_cuts = {2, 4};
  const PartitionResult r = partition(g, o);
  ASSERT_EQ(r.stages.size(), 3u);
  // Stage 1 neither produces nor consumes the skip, but relays it.
  EXPECT_EQ(r.stages[0].received_bytes, 0);
  EXPECT_EQ(r.stages[0].sent_bytes, 1100);
  EXPECT_EQ(r.stages[1].received_bytes, 1100);
  EXPECT_EQ(r.stages[1].sent_bytes, 1100);
  EXPECT_EQ(r.stages[1].received_tensors, 2);
  EXPECT_EQ(r.stages[1].sent_tensors, 2);
  EXPECT_EQ(r.stages[2].received_bytes, 1100);
  EXPECT_EQ(r.stages[2].sent_bytes, 0);
  // 2 * bytes / bandwidth + 2 * latency * transfers, both ways.
  EXPECT_NEAR(r.stages[0].comm_s, 2 * 1100 / 1000.0 + 2 * 0.01 * 2, 1e-12);
  EXPECT_NEAR(r.stages[1].comm_s, 2 * 2200 / 1000.0 + 2 * 0.01 * 4, 1e-12);
  EXPECT_NEAR(r.stages[1].time_s, 6.0 + 4.48, 1e-12);
  EXPECT_NEAR(r.period_s, 10.48, 1e-12);
}

TEST(StageSearch, AvoidsCuttingAcrossAnExpensiveSkip) {
  // Forward only, 1 s per node: cutting at 3 is balanced but crosses a
  // 1 MB skip into node 3; cutting at 4 does not.
  CostGraph g = chain(6, 10);
  for (CostNode& node : g.nodes) node.backward_s = 0;
  g.tensors.push_back({0, {3}, 1000000, "skip"});
  PartitionOptions o = roomy(2);
  o.link = {1e6, 0.0};
  const PartitionResult r = partition(g, o);
  EXPECT_EQ(r.cuts, (std::vector<int>{4}));
  EXPECT_NEAR(r.period_s, 4.0 + 2 * 10 / 1e6, 1e-12);
}

TEST(StageSearch, AmongEqualPeriodsPrefersLessTotalTime) {
  // Node 4 alone sets the period (20 s), so every split of nodes 0..3 into
  // two stages ties on it. Cutting at 2 balances them best (2.5 s each, 0.5 s
  // of it transfer); cutting at 1 transfers nothing and adds up to less
  // (1 s + 3 s): the pipeline fills and drains faster.
  CostGraph g = chain(5);
  for (CostNode& node : g.nodes) node.backward_s = 0;
  g.nodes[4].forward_s = 20;
  g.tensors[1].bytes = 25;
  g.tensors[2].bytes = 50;
  PartitionOptions o = roomy(3);
  o.link = {100.0, 0.0};
  const PartitionResult r = partition(g, o);
  EXPECT_EQ(r.cuts, (std::vector<int>{1, 4}));
  EXPECT_DOUBLE_EQ(r.period_s, 20.0);
  EXPECT_DOUBLE_EQ(r.stages[0].time_s + r.stages[1].time_s, 4.0);
}

TEST(StageSearch, FasterDeviceGetsMoreWork) {
  CostGraph g = chain(8);
  PartitionOptions o = roomy(2);
  o.devices[1].speed = 3.0;
  const PartitionResult r = partition(g, o);
  EXPECT_EQ(r.cuts, (std::vector<int>{2}));
  EXPECT_DOUBLE_EQ(r.period_s, 6.0);
  EXPECT_DOUBLE_EQ(r.stages[1].compute_s, 6.0);
}

// With data-parallel replicas each stage all-reduces its gradients once a
// step: a ring over d replicas moves 2 (d - 1) / d of the bytes in 2 (d - 1)
// latency steps, 1/m of it per micro-batch. A heavy first layer then gets
// fewer layers beside it.
TEST(StageSearch, GradientAllReduceIsChargedToItsStage) {
  CostGraph g = chain(8);
  g.nodes[0].param_bytes = 16000;
  PartitionOptions o = roomy(2);
  o.data_parallel = 4;
  o.replica_link = {1000.0, 0.5};
  const PartitionResult r = partition(g, o);
  // Stage 0's sync: 16000 * 2 * 3/4 / 1000 / 8 + 2 * 3 * 0.5 / 8 = 3.375 s.
  EXPECT_EQ(r.cuts, (std::vector<int>{3}));
  EXPECT_DOUBLE_EQ(r.stages[0].sync_s, 3.375);
  EXPECT_DOUBLE_EQ(r.stages[0].compute_s, 9.0);
  EXPECT_DOUBLE_EQ(r.stages[0].time_s, 12.375);
  EXPECT_DOUBLE_EQ(r.stages[1].sync_s, 0.0);  // no parameters: nothing to reduce
  EXPECT_DOUBLE_EQ(r.period_s, 15.0);
  o.data_parallel = 1;
  EXPECT_EQ(partition(g, o).cuts, (std::vector<int>{4}));
}

TEST(StageSearch, MemoryLimitMovesTheCut) {
  // Node 0 carries most parameters; with little memory on device 0 the DP
  // gives it only node 0, unbalancing time rather than breaking memory.
  CostGraph g = chain(6);
  g.nodes[0].param_bytes = 100 * kMiB;
  for (int i = 1; i < 6; ++i) g.nodes[i].param_bytes = 10 * kMiB;
  PartitionOptions o = roomy(2);
  o.optimizer_state_factor = 2;
  o.devices[0].memory_bytes = 420 * kMiB;  // node 0 (400 MiB) and nothing more
  const PartitionResult r = partition(g, o);
  EXPECT_EQ(r.cuts, (std::vector<int>{1}));
  EXPECT_EQ(r.stages[0].memory_bytes, 400 * kMiB);
  EXPECT_DOUBLE_EQ(r.period_s, 15.0);
  EXPECT_TRUE(r.fits_memory);
}

TEST(StageSearch, StashFollowsTheMemoryRule) {
  // 1 MiB of stash per node and 4 micro-batches: under GPipe each stage
  // stashes 4; under 1F1B stage 0 of 2 stashes 2 and stage 1 stashes 1.
  CostGraph g = chain(4, kMiB);
  for (CostNode& node : g.nodes) node.stash_bytes = kMiB;
  PartitionOptions o = roomy(2, MemoryRule::gpipe);
  o.microbatches = 4;
  PartitionResult r = partition(g, o);
  EXPECT_EQ(r.stages[0].inflight, 4);
  EXPECT_EQ(r.stages[0].memory_bytes, 2 * 4 * kMiB);
  EXPECT_EQ(r.stages[1].memory_bytes, (2 + 1) * 4 * kMiB);  // own stash plus the received activation
  o.rule = MemoryRule::one_f_one_b;
  r = partition(g, o);
  EXPECT_EQ(r.stages[0].memory_bytes, 2 * 2 * kMiB);
  EXPECT_EQ(r.stages[1].memory_bytes, (2 + 1) * 1 * kMiB);
}

TEST(StageSearch, InterleavedPlacesChunksRoundRobin) {
  PartitionOptions o = roomy(2, MemoryRule::interleaved);
  o.stages = 4;
  o.virtual_stages = 2;
  const PartitionResult r = partition(chain(8), o);
  EXPECT_EQ(r.cuts, (std::vector<int>{2, 4, 6}));
  ASSERT_EQ(r.stages.size(), 4u);
  const int device[] = {0, 1, 0, 1}, chunk[] = {0, 0, 1, 1};
  for (int s = 0; s < 4; ++s) {
    EXPECT_EQ(r.stages[s].device, device[s]);
    EXPECT_EQ(r.stages[s].chunk, chunk[s]);
  }
  ASSERT_EQ(r.devices.size(), 2u);
  EXPECT_DOUBLE_EQ(r.devices[0].busy_s, 12.0);
  EXPECT_DOUBLE_EQ(r.period_s, 12.0);  // v * the slowest chunk
}

// Two products too large to share a stage with anything else, as a V on
// two devices (stages 0 and 3 on device 0): the slowest stage cannot go
// below one product, and among the splits that reach it the DP would give
// device 1 both products. Moving the first cut past the first product
// leaves each device one.
TEST(StageSearch, ZeroBubbleVEvensOutItsDevices) {
  CostGraph g;
  for (double t : {3.0, 17.0, 0.01, 17.0, 0.01, 0.04})
    g.nodes.push_back({fmt::format("n{}", g.nodes.size()), "", t, 0.0, 0, 0});
  for (int i = 0; i + 1 < static_cast<int>(g.nodes.size()); ++i) g.tensors.push_back({i, {i + 1}, 0, "t"});
  PartitionOptions o = roomy(2, MemoryRule::zero_bubble_v);
  o.stages = 4;
  o.virtual_stages = 2;
  o.placement = StagePlacement::v_shape();
  const PartitionResult r = partition(g, o);
  EXPECT_EQ(r.cuts, (std::vector<int>{2, 3, 5}));
  EXPECT_NEAR(r.devices[0].busy_s, 3.0 + 17.0 + 0.04, 1e-12);
  EXPECT_NEAR(r.devices[1].busy_s, 0.01 + 17.0 + 0.01, 1e-12);
  EXPECT_NEAR(r.period_s, 20.04, 1e-12);
}

// A V on two devices: stages 1 and 2 share device 1, so the activation
// between them is handed over in memory and costs neither a transfer.
TEST(StageSearch, AHandOffWithinADeviceCostsNoTransfer) {
  PartitionOptions o = roomy(2, MemoryRule::zero_bubble_v);
  o.stages = 4;
  o.virtual_stages = 2;
  o.placement = StagePlacement::v_shape();
  o.link = {100.0, 0.0};  // 100 bytes of a tensor: 2 s each way per boundary
  const PartitionResult r = partition(chain(8, 100), o);
  ASSERT_EQ(r.cuts, (std::vector<int>{2, 4, 6}));
  const double per_boundary = 2.0 * 100 / 100.0;
  EXPECT_DOUBLE_EQ(r.stages[0].comm_s, per_boundary);
  EXPECT_DOUBLE_EQ(r.stages[1].comm_s, per_boundary);  // its end is the turn
  EXPECT_DOUBLE_EQ(r.stages[2].comm_s, per_boundary);  // its start is the turn
  EXPECT_DOUBLE_EQ(r.stages[3].comm_s, per_boundary);
  EXPECT_DOUBLE_EQ(r.devices[1].busy_s, 2 * (2 * 3.0 + per_boundary));
}

TEST(StageSearch, InterleavedChunksShareTheirDevicesMemory) {
  // 4 chunks on 2 devices of 1 GiB: each chunk may use 512 MiB.
  CostGraph g = chain(9);
  for (CostNode& node : g.nodes) node.param_bytes = 40 * kMiB;  // 160 MiB with AdamW
  PartitionOptions o = roomy(2, MemoryRule::interleaved);
  o.stages = 4;
  o.virtual_stages = 2;
  o.devices[0].memory_bytes = o.devices[1].memory_bytes = kGiB;
  const PartitionResult r = partition(g, o);
  // Nine nodes of 3 s: five on the busier device (the slowest chunk holds
  // three, so v times it would be 18).
  EXPECT_DOUBLE_EQ(r.period_s, 15.0);
  for (const StagePlan& s : r.stages) {
    EXPECT_EQ(s.memory_limit, 512 * kMiB);
    EXPECT_LE(s.memory_bytes, 512 * kMiB);
  }
  // With 800 MiB a chunk holds two nodes: eight places for nine nodes. Three
  // and two nodes on device 0 would fit its 800 MiB, but the formulation
  // gives each chunk half of it, and says so.
  o.devices[0].memory_bytes = o.devices[1].memory_bytes = 800 * kMiB;
  EXPECT_EQ(error_of([&] { partition(g, o); }),
            "the model needs at least 3 devices of 800.0 MiB, or 960.0 MiB per device with 2 devices");
}

TEST(StageSearch, FixedCutsAreHonoured) {
  PartitionOptions o = roomy(3);
  o.fixed_cuts = {1, 5};
  const PartitionResult r = partition(chain(8), o);
  EXPECT_EQ(r.method, "fixed");
  EXPECT_EQ(r.cuts, (std::vector<int>{1, 5}));
  EXPECT_EQ(r.stages[1].begin, 1);
  EXPECT_EQ(r.stages[1].end, 5);
  EXPECT_DOUBLE_EQ(r.period_s, 12.0);
  EXPECT_DOUBLE_EQ(r.imbalance_pct, 50.0);  // (12 - 8) / 8
}

TEST(StageSearch, FixedCutsAreChecked) {
  CostGraph g = chain(8);
  g.cut_candidates = {2, 4, 6};
  PartitionOptions o = roomy(3);
  o.fixed_cuts = {2};
  EXPECT_EQ(error_of([&] { partition(g, o); }), "expected 2 cuts for 3 stages, got 1");
  o.fixed_cuts = {4, 2};
  EXPECT_EQ(error_of([&] { partition(g, o); }), "cuts must increase, got 2 after 4");
  o.fixed_cuts = {2, 3};
  EXPECT_EQ(error_of([&] { partition(g, o); }), "cut 3 is not one of the graph's cut candidates");
  o.fixed_cuts = {2, 8};
  EXPECT_EQ(error_of([&] { partition(g, o); }), "cut 8 is outside 1..7");
  for (CostNode& node : g.nodes) node.param_bytes = 100 * kMiB;
  o.optimizer_state_factor = 2;
  o.devices[2].memory_bytes = kGiB;
  o.fixed_cuts = {2, 4};
  EXPECT_EQ(error_of([&] { partition(g, o); }),
            "the fixed cuts do not fit: device 2 'gpu2' needs 1.6 GiB but has 1.0 GiB");
}

/// 12 nodes of 960 MiB weights (240 MiB of AdamW parameters) and 10 MiB of
/// stash: two fit in 2 GiB, three need 2910 MiB.
CostGraph heavy_chain() {
  CostGraph g = chain(12);
  for (CostNode& node : g.nodes) {
    node.param_bytes = 240 * kMiB;
    node.stash_bytes = 10 * kMiB;
  }
  return g;
}

TEST(StageSearch, InfeasibleSaysWhatWouldFit) {
  PartitionOptions o = roomy(4, MemoryRule::gpipe);
  o.microbatches = 1;
  o.optimizer_state_factor = 2;
  for (DeviceSpec& d : o.devices) d.memory_bytes = 2 * kGiB;
  EXPECT_EQ(error_of([&] { partition(heavy_chain(), o); }),
            "the model needs at least 6 devices of 2.0 GiB, or 2.9 GiB per device with 4 devices");
  // The largest device sets the count; the per-device figure is uniform.
  o.devices[3].memory_bytes = 3 * kGiB;
  o.devices[0].memory_bytes = kGiB;
  EXPECT_EQ(error_of([&] { partition(heavy_chain(), o); }),
            "the model needs at least 4 devices of 3.0 GiB, or 2.9 GiB per device with 4 devices");
}

TEST(StageSearch, InfeasibleOnAnyNumberOfDevices) {
  CostGraph g = heavy_chain();
  g.nodes.resize(4);
  g.tensors.resize(3);
  g.nodes[0].param_bytes = kGiB;
  for (CostNode& node : g.nodes) node.stash_bytes = 0;
  PartitionOptions o = roomy(2);
  o.optimizer_state_factor = 2;
  for (DeviceSpec& d : o.devices) d.memory_bytes = 2 * kGiB;
  EXPECT_EQ(error_of([&] { partition(g, o); }),
            "the model needs 4.0 GiB per device with 2 devices; no number of devices of 2.0 GiB is enough");
}

TEST(StageSearch, TooManyStages) {
  CostGraph g = chain(20);
  for (int i = 1; i <= 11; ++i) g.cut_candidates.push_back(i);
  EXPECT_EQ(error_of([&] { partition(g, roomy(16)); }), "cannot cut 12 layers into 16 stages");
  EXPECT_EQ(error_of([&] { partition(chain(5), roomy(6)); }), "cannot cut 5 nodes into 6 stages");
}

TEST(StageSearch, RejectsBadOptions) {
  PartitionOptions o = roomy(2);
  o.devices.pop_back();
  EXPECT_EQ(error_of([&] { partition(chain(4), o); }), "2 stages need 2 devices, got 1");
  o = roomy(2);
  o.devices[1].speed = 0;
  EXPECT_EQ(error_of([&] { partition(chain(4), o); }), "device 'gpu1' has speed 0, expected a finite value > 0");
  o = roomy(2);
  o.link.bandwidth_bytes_per_s = 0;
  EXPECT_EQ(error_of([&] { partition(chain(4), o); }), "the link has bandwidth 0 bytes/s, expected a finite value > 0");
  o = roomy(2);
  o.stages = 4;
  o.virtual_stages = 2;
  EXPECT_EQ(error_of([&] { partition(chain(8), o); }),
            "in-flight micro-batches: the 1f1b rule has no form with 2 virtual stages; use 'interleaved' or 'gpipe'");
  o.virtual_stages = 3;
  EXPECT_EQ(error_of([&] { partition(chain(8), o); }), "4 stages are not a multiple of 3 virtual stages");
  o = roomy(2);
  o.data_parallel = 2;
  EXPECT_EQ(error_of([&] { partition(chain(4), o); }),
            "the link between replicas has bandwidth 0 bytes/s and latency 0 s, expected finite values > 0 and >= 0");
}

// The time it takes is measured by bench/partition_bench.cpp, not here.
TEST(StageSearch, PlansFifteenHundredNodesIntoSixtyFourStages) {
  // A residual stack: every 25 nodes a skip spans the block.
  CostGraph g;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> cost(0.5, 1.5);
  for (int i = 0; i < 1500; ++i) {
    const double f = cost(rng);
    g.nodes.push_back({fmt::format("n{}", i), "", f, 2 * f, 4096, 1024});
    if (i + 1 < 1500) g.tensors.push_back({i, {i + 1}, 1 << 16, fmt::format("t{}", i)});
    if (i % 25 == 0 && i + 25 < 1500) g.tensors.push_back({i, {i + 25}, 1 << 16, fmt::format("r{}", i)});
  }
  PartitionOptions o = roomy(64);
  o.microbatches = 128;
  o.link = {1e10, 1e-5};
  const PartitionResult r = partition(g, o);
  EXPECT_EQ(r.stages.size(), 64u);
  EXPECT_LT(r.imbalance_pct, 10.0);
}

}  // namespace
}  // namespace pf
