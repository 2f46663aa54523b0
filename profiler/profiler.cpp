// Measuring a model's ops on the CPU.
#include "profiler/profiler.h"

#include <fmt/format.h>
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <barrier>
#include <memory>
#include <thread>
#include <chrono>
#include <functional>
#include <optional>
#include <random>
#include <set>

#include "backends/cpu/blas.h"
#include "backends/cpu/cache_eviction.h"
#include "backends/cpu/executor.h"
#include "backends/cpu/kernels.h"
#include "backends/cpu/packed_weights.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "profiler/op_alone.h"
#include "runtime/optimizer.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Fills every bound buffer with small valid values: integer operands are
// indices, so zeros keep them in range.
struct Buffers {
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<int64_t>> others;  // large enough for any integer or bool type

  void* make(const TensorType& t, std::mt19937& rng) {
    if (t.dtype == DType::f32) {
      auto& v = floats.emplace_back(static_cast<size_t>(std::max<int64_t>(1, t.numel())));
      for (float& x : v) x = std::uniform_real_distribution<float>(0.5f, 1.5f)(rng);
      return v.data();
    }
    return others.emplace_back(static_cast<size_t>(std::max<int64_t>(1, t.numel())), 0).data();
  }

  void evict_from_caches() const {
    for (const auto& v : floats) cpu::evict_from_caches(v.data(), static_cast<int64_t>(v.size() * sizeof(float)));
    for (const auto& v : others) cpu::evict_from_caches(v.data(), static_cast<int64_t>(v.size() * sizeof(int64_t)));
  }
};

// A mixture-of-experts op reads a route, which must be one moe_route makes
// (a token in one slot of an expert at most, among its top_k), and where it
// reads the router's logits too, one they rank alike. The logits make token
// n's k-th choice expert (n top_k + k) mod E, so that each expert fills its
// fair share of N top_k / E slots, as the cost model assumes a balanced
// router does; the route is what the route's own moe_route makes of them.
struct RoutedValues {
  std::string route_name, logits_name;  // as the op's modules keep them
  std::vector<float> logits;            // [tokens, experts]
  std::vector<int32_t> route;           // the route's type

  // Copies the route or the logits into `data` if `name` is one of them.
  bool fill(const std::string& name, void* data) const {
    if (name == route_name) std::copy(route.begin(), route.end(), static_cast<int32_t*>(data));
    if (name == logits_name) std::copy(logits.begin(), logits.end(), static_cast<float*>(data));
    return name == route_name || name == logits_name;
  }
};

// The route `op` reads and its logits, when moe_route made it in `g`.
std::optional<RoutedValues> routed_values(const Function& g, const Op& op, const DimBinding& binding) {
  const int operand = route_operand(op.kind, op.operands.size());
  if (operand < 0) return std::nullopt;
  const ValueId route = op.operands[static_cast<size_t>(operand)];
  const int def = g.values[route].def_op;
  if (def < 0 || g.ops[def].kind != OpKind::moe_route) return std::nullopt;
  const Op& maker = g.ops[def];
  const std::vector<TensorType> in_types = {g.type_of(maker.operands[0])}, out_types = {g.type_of(route)};
  const OpAttrs attrs = evaluate_attrs(maker, binding);
  const int64_t tokens = in_types[0].shape[0], experts = in_types[0].shape[1];
  const int64_t top_k = std::clamp<int64_t>(attrs.get_int("top_k", 1), 1, experts);
  RoutedValues v{g.values[route].name, g.values[maker.operands[0]].name,
                 std::vector<float>(static_cast<size_t>(tokens * experts), 1.0f),
                 std::vector<int32_t>(static_cast<size_t>(out_types[0].numel()))};
  for (int64_t n = 0; n < tokens; ++n)
    for (int64_t k = 0; k < top_k; ++k)
      v.logits[n * experts + (n * top_k + k) % experts] = static_cast<float>(2 + top_k - k);
  const std::vector<const void*> in = {v.logits.data()};
  const std::vector<void*> out = {v.route.data()};
  cpu::forward_kernel(OpKind::moe_route, DType::f32)(cpu::KernelArgs{in_types, in, out_types, out, attrs});
  return v;
}

// One op's forward, and backward where it has one, ready to run on buffers
// of its own.
struct OpRunner {
  Module module;
  Module diff;
  Buffers buffers;
  std::unique_ptr<cpu::Executor> forward, backward;
  std::vector<std::pair<const void*, int64_t>> params;  // bound buffers and their bytes
};

std::unique_ptr<OpRunner> make_runner(const Function& g, const Op& op, const DimBinding& binding,
                                      const cpu::ExecutorOptions& options) {
  auto r = std::make_unique<OpRunner>();
  r->module = op_alone_module(g, op);
  verify_module(r->module, binding);
  std::mt19937 rng(1);
  const std::optional<RoutedValues> routed = routed_values(g, op, binding);
  // A buffer for argument `a` of `fn`: random, or a route and logits as moe_route makes them.
  auto input = [&](const Function& fn, size_t a) {
    void* data = r->buffers.make(fn.type_of(fn.args[a]), rng);
    if (routed) routed->fill(fn.values[fn.args[a]].name, data);
    return data;
  };
  const Function& f = r->module.graph();
  r->forward = std::make_unique<cpu::Executor>(f, binding, DType::f32, options);
  for (size_t a = 0; a < f.args.size(); ++a) r->forward->bind_input(static_cast<int>(a), input(f, a));
  auto param = [&](const TensorType& type) {
    void* data = r->buffers.make(type, rng);
    r->params.emplace_back(data, type.bytes());
    return data;
  };
  for (const std::string& p : r->forward->param_names()) r->forward->bind_param(p, param(r->forward->param_type(p)));
  const TensorType& loss = f.type_of(f.returns[0]);
  if (!loss.is_scalar() || !is_float(loss.dtype) || !has_grad_rule(op.kind)) return r;
  AutodiffOptions ad;
  for (size_t a = 0; a < f.args.size(); ++a)
    if (is_float(f.type_of(f.args[a]).dtype)) ad.wrt_inputs.push_back(f.values[f.args[a]].name);
  r->diff = r->module;
  GradientProgram gp = differentiate(r->diff, binding, ad);
  const Function& bwd = *r->diff.find_function(gp.backward);
  r->backward = std::make_unique<cpu::Executor>(bwd, binding, DType::f32, options);
  for (size_t a = 0; a < bwd.args.size(); ++a) r->backward->bind_input(static_cast<int>(a), input(bwd, a));
  for (const std::string& p : r->backward->param_names())
    r->backward->bind_param(p, param(r->backward->param_type(p)));
  return r;
}

// The median of `repeats` timed runs of `run` after one warm-up (caches,
// scratch buffers, an optimizer's state). With other threads at `sync`,
// every run starts together with theirs, so that each is timed while the
// others compete for the caches and memory. `before_each` runs before
// each timed run, untimed.
double time_runs(const std::function<void()>& run, int repeats, std::barrier<>* sync,
                 const std::function<void()>& before_each = {}) {
  run();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    if (before_each) before_each();
    if (sync) sync->arrive_and_wait();
    auto t0 = Clock::now();
    run();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(times);
}

// The CPUs this process may run on, in order.
std::vector<int> allowed_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

// Holds the calling thread on `cpu`; where that fails it runs where it may.
void run_on_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

// Runs work(t) for t in [0, threads) on as many threads at once, t = 0 on
// the caller's, each held on a CPU of its own where the process has enough:
// left to the scheduler, a thread started beside a busy one sometimes
// shared its CPU for the first tens of milliseconds, and a core's product
// rate, timed in that much, came out at half in a third of the profiles.
void on_threads(int threads, const std::function<void(size_t)>& work) {
  const std::vector<int> cpus = threads > 1 ? allowed_cpus() : std::vector<int>{};
  const bool pin = static_cast<int>(cpus.size()) >= threads;
  cpu_set_t before;
  const bool restore = pin && pthread_getaffinity_np(pthread_self(), sizeof(before), &before) == 0;
  auto pinned = [&](size_t t) {
    if (pin) run_on_cpu(cpus[t]);
    work(t);
  };
  std::vector<std::thread> others;
  for (int t = 1; t < threads; ++t) others.emplace_back(pinned, static_cast<size_t>(t));
  pinned(0);
  for (std::thread& t : others) t.join();
  if (restore) pthread_setaffinity_np(pthread_self(), sizeof(before), &before);
}

// Runs `timed` on options.concurrent threads at once, each on buffers of
// its own and timing its runs with time_runs(..., sync): the median of the
// seconds they report.
double median_over_cores(const ProfileOptions& options, const std::function<double(std::barrier<>* sync)>& timed) {
  const int threads = std::max(1, options.concurrent);
  std::vector<double> seconds(static_cast<size_t>(threads));
  std::barrier<> sync(threads);
  on_threads(threads, [&](size_t t) { seconds[t] = timed(threads > 1 ? &sync : nullptr); });
  return median(seconds);
}

OpTiming measure(const Function& g, const Op& op, const DimBinding& binding, const ProfileOptions& options) {
  const int threads = std::max(1, options.concurrent);
  std::vector<std::unique_ptr<OpRunner>> runners;
  cpu::ExecutorOptions executor;
  executor.bf16_products = options.bf16_products;
  for (int t = 0; t < threads; ++t) runners.push_back(make_runner(g, op, binding, executor));
  std::vector<OpTiming> timings(static_cast<size_t>(threads));
  std::barrier<> sync(threads);
  on_threads(threads, [&](size_t t) {
    OpRunner& r = *runners[t];
    std::barrier<>* together = threads > 1 ? &sync : nullptr;
    cpu::PackedWeights packed;
    std::function<void()> cool;  // with cold caches: the op's buffers and packed weights out of them
    if (options.cold_caches)
      cool = [&] {
        r.buffers.evict_from_caches();
        packed.evict_from_caches();
      };
    if (options.microbatches < 2 || r.params.empty()) {
      timings[t].forward_s = time_runs([&] { r.forward->run(); }, options.repeats, together, cool);
      if (r.backward) timings[t].backward_s = time_runs([&] { r.backward->run(); }, options.repeats, together, cool);
      return;
    }
    // As a stage keeps its weights packed through a step: timed on weights
    // packed already, and once more with the packing, 1/m of which is the
    // op's share of it.
    const cpu::PackedWeightsScope scope(&packed);
    auto watch = [&] {
      packed.invalidate();
      for (const auto& [data, bytes] : r.params) packed.watch(data, bytes);
    };
    auto amortized = [&](cpu::Executor& e) {
      watch();
      const double steady = time_runs([&] { e.run(); }, options.repeats, together, cool);
      const double first = time_runs(
          [&] {
            watch();
            e.run();
          },
          options.repeats, together, cool);
      return steady + std::max(0.0, first - steady) / options.microbatches;
    };
    timings[t].forward_s = amortized(*r.forward);
    if (r.backward) timings[t].backward_s = amortized(*r.backward);
  });
  // The median over the copies of each one's median.
  std::vector<double> forward, backward;
  for (const OpTiming& t : timings) {
    forward.push_back(t.forward_s);
    backward.push_back(t.backward_s);
  }
  return OpTiming{median(forward), median(backward)};
}

// Seconds per parameter of one step of `optimizer` with its gradient norm,
// the runtime's own code, on arrays larger than the caches (as a stage's
// weights are), with one copy per concurrent core.
double measure_update(const std::string& optimizer, const ProfileOptions& options) {
  constexpr int64_t kParams = int64_t{1} << 22;  // 16 MiB an array
  const double seconds = median_over_cores(options, [&](std::barrier<>* sync) {
    std::vector<float> value(kParams, 0.5f), grad(kParams, 1e-3f);
    const std::vector<Param> params = {Param{"w", {kParams}, value.data(), grad.data(), true}};
    // SGD as `pipeforge run --optimizer sgd` steps it, with momentum.
    const std::unique_ptr<Optimizer> step = make_optimizer(optimizer, params, 0.9, 0.0);
    return time_runs(
        [&] {
          grad_sq_norm(params);
          step->step(1e-4);
        },
        options.repeats, sync);
  });
  return seconds / static_cast<double>(kParams);
}

/// A core's product rate: a 512^3 product (the sgemm kernel this CPU
/// dispatches to, on one thread; with bf16 products, theirs), `concurrent`
/// cores at it at once.
double measure_gemm_flops(const ProfileOptions& options) {
  constexpr int64_t n = 512;
  const double seconds = median_over_cores(options, [&](std::barrier<>* sync) {
    const cpu::Bf16Products products(options.bf16_products);
    std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
    return time_runs([&] { cpu::gemm(false, false, n, n, n, a.data(), n, b.data(), n, c.data(), n); },
                     options.repeats, sync);
  });
  return 2.0 * n * n * n / seconds;
}

/// A core's memory bandwidth: y += x over arrays well past the last-level
/// cache (two reads and a write per element), `concurrent` cores at once.
double measure_bandwidth(const ProfileOptions& options) {
  constexpr int64_t kFloats = int64_t{1} << 24;  // 64 MiB an array
  const double seconds = median_over_cores(options, [&](std::barrier<>* sync) {
    std::vector<float> x(kFloats, 1.0f), y(kFloats, 0.0f);
    return time_runs(
        [&] {
          for (int64_t i = 0; i < kFloats; ++i) y[i] += x[i];
        },
        options.repeats, sync);
  });
  return 3.0 * sizeof(float) * kFloats / seconds;
}

}  // namespace

DeviceProfile profile_model(const Module& model, const DimBinding& binding, const ProfileOptions& options,
                            const std::function<void(const std::string&, const OpTiming&)>& progress) {
  DeviceProfile profile = builtin_profile("cpu", options.bf16_products ? "bf16" : "fp32");
  profile.name = "cpu-measured";
  profile.concurrent = std::max(1, options.concurrent);
  profile.cold_caches = options.cold_caches;
  // The roofline of the ops it does not time, and the peak a run's MFU is
  // measured against: this CPU's, not the built-in guess.
  profile.flops = measure_gemm_flops(options);
  profile.bandwidth = measure_bandwidth(options);
  const Function& g = model.graph();
  std::vector<std::pair<const Op*, std::string>> timed;  // one op per key, in model order
  std::set<std::string> keys;
  for (const Op& op : g.ops) {
    if (op.operands.empty()) continue;  // sources cost nothing at run time
    std::string key = op_timing_key(g, op, binding);
    if (keys.insert(key).second) timed.emplace_back(&op, std::move(key));
  }
  // Two sweeps over the model, each op's faster time kept: a core of this
  // kind of machine (a VM's) can run at half speed for a fraction of a
  // second, which one op's few runs cannot tell from its cost, and one op
  // priced at twice its time unbalances a plan. Seconds apart, the two
  // sweeps are not both slowed. Each measure() builds the op's runners
  // afresh: kept from one sweep to the next, every op's buffers (the whole
  // model's weights, per core) would be held at once.
  for (int sweep = 0; sweep < 2; ++sweep)
    for (const auto& [op, key] : timed) {
      const OpTiming t = measure(g, *op, binding, options);
      const auto it = profile.measured.try_emplace(key, t).first;
      it->second.forward_s = std::min(it->second.forward_s, t.forward_s);
      it->second.backward_s = std::min(it->second.backward_s, t.backward_s);
    }
  if (progress)
    for (const auto& [op, key] : timed) progress(key, profile.measured.at(key));
  for (const char* optimizer : {"adamw", "sgd"})
    profile.update_s_per_param[optimizer] = measure_update(optimizer, options);
  return profile;
}

}  // namespace pf
