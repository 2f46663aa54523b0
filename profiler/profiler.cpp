// Measuring a model's ops on the CPU.
#include "profiler/profiler.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <random>

#include "backends/cpu/executor.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"

namespace pf {

namespace {

using Clock = std::chrono::steady_clock;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A graph holding only `op`: its operands become arguments (parameters
// stay parameters), and the loss is the sum of its first result.
Module single_op_module(const Function& g, const Op& op) {
  Module m;
  Function& f = m.functions.emplace_back();
  f.is_graph = true;
  f.name = "op";
  std::vector<ValueId> map(g.values.size(), -1);
  for (ValueId v : op.operands) {
    if (map[v] >= 0) continue;
    ValueId id = f.add_value(g.values[v].name);
    f.values[id].type = g.values[v].type;
    f.args.push_back(id);
    f.arg_types.push_back(SymType::from(g.type_of(v)));
    map[v] = id;
  }
  Op copy = op;
  copy.erase_attr("layer");
  for (ValueId& v : copy.operands) v = map[v];
  for (ValueId& r : copy.results) {
    ValueId id = f.add_value(g.values[r].name);
    f.values[id].type = g.values[r].type;
    f.values[id].def_op = 0;
    r = id;
  }
  f.ops.push_back(copy);
  const TensorType& out = g.type_of(op.results[0]);
  ValueId result = f.ops[0].results[0];
  if (is_float(out.dtype) && out.rank() > 0) {
    Op sum;
    sum.kind = OpKind::reduce_sum;
    std::vector<DimExpr> axes;
    for (int64_t a = 0; a < out.rank(); ++a) axes.emplace_back(a);
    sum.set_attr("axes", Attr::of_dims(axes));
    sum.operands = {result};
    ValueId loss = f.add_value("profile.loss");
    f.values[loss].type = TensorType{out.dtype, {}};
    f.values[loss].def_op = 1;
    sum.results = {loss};
    f.ops.push_back(sum);
    result = loss;
  }
  f.returns = {result};
  f.result_types = {SymType::from(*f.values[result].type)};
  return m;
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
};

double time_runs(cpu::Executor& e, int repeats) {
  e.run();  // warm-up: caches, scratch buffers
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    auto t0 = Clock::now();
    e.run();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return median(times);
}

OpTiming measure(const Function& g, const Op& op, const DimBinding& binding, int repeats) {
  Module m = single_op_module(g, op);
  verify_module(m, binding);
  std::mt19937 rng(1);
  Buffers buffers;
  const Function& f = m.graph();
  cpu::Executor fwd(f, binding, DType::f32);
  for (size_t a = 0; a < f.args.size(); ++a) fwd.bind_input(static_cast<int>(a), buffers.make(f.type_of(f.args[a]), rng));
  for (const std::string& p : fwd.param_names()) fwd.bind_param(p, buffers.make(fwd.param_type(p), rng));
  OpTiming t;
  t.forward_s = time_runs(fwd, repeats);
  const TensorType& loss = f.type_of(f.returns[0]);
  if (!loss.is_scalar() || !is_float(loss.dtype) || !has_grad_rule(op.kind)) return t;
  AutodiffOptions ad;
  for (size_t a = 0; a < f.args.size(); ++a)
    if (is_float(f.type_of(f.args[a]).dtype)) ad.wrt_inputs.push_back(f.values[f.args[a]].name);
  Module diff = m;
  GradientProgram gp = differentiate(diff, binding, ad);
  const Function& bwd = *diff.find_function(gp.backward);
  cpu::Executor back(bwd, binding, DType::f32);
  for (size_t a = 0; a < bwd.args.size(); ++a)
    back.bind_input(static_cast<int>(a), buffers.make(bwd.type_of(bwd.args[a]), rng));
  for (const std::string& p : back.param_names()) back.bind_param(p, buffers.make(back.param_type(p), rng));
  t.backward_s = time_runs(back, repeats);
  return t;
}

}  // namespace

DeviceProfile profile_model(const Module& model, const DimBinding& binding, const ProfileOptions& options,
                            const std::function<void(const std::string&, const OpTiming&)>& progress) {
  DeviceProfile profile = builtin_profile("cpu");
  profile.name = "cpu-measured";
  const Function& g = model.graph();
  for (const Op& op : g.ops) {
    if (op.operands.empty()) continue;  // sources cost nothing at run time
    std::string key = op_timing_key(g, op, binding);
    if (profile.measured.count(key)) continue;
    OpTiming t = measure(g, op, binding, options.repeats);
    profile.measured[key] = t;
    if (progress) progress(key, t);
  }
  return profile;
}

}  // namespace pf
