// Every differentiable op's gradient rule against central finite differences
// in float64, through autodiff and the CPU executor: an op without a rule or
// without a case here fails.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <tuple>
#include <utility>

#include "backends/cpu/executor.h"
#include "ir/parser.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "passes/autodiff.h"
#include "passes/pass.h"

namespace pf {
namespace {

/// Executors whose tp_ and ep_ ops meet over groups of one rank (the identity).
const cpu::ExecutorOptions& alone() {
  static backend::SingleRankGroup group;
  static const cpu::ExecutorOptions options = [] {
    cpu::ExecutorOptions o;
    o.tensor_parallel = &group;
    o.expert_parallel = &group;
    return o;
  }();
  return options;
}

/// A small graph whose scalar loss depends on the op under test through a
/// fixed random weighting, so that every element of its result matters.
struct GradCase {
  std::string args;    // graph arguments, e.g. "%a: f32[2,3], %b: f32[3]"
  std::string body;    // ops computing %r (and any params)
  std::string result;  // %r's type
  bool positive = false;  // float inputs drawn from [0.5, 1.5] (log, sqrt, pow...)
};

std::string graph_text(const GradCase& c) {
  std::string rank_axes;
  int rank = 0;
  for (char ch : c.result) rank += ch == ',';
  if (c.result.find("[]") == std::string::npos) ++rank;
  for (int i = 0; i < rank; ++i) {
    if (i) rank_axes += ',';
    rank_axes += std::to_string(i);
  }
  std::string args = c.args.empty() ? "%wt: " + c.result : c.args + ", %wt: " + c.result;
  std::string tail = rank == 0 ? "  %loss = mul %r, %wt : f32[]\n"
                               : "  %p = mul %r, %wt : " + c.result + "\n  %loss = reduce_sum %p axes=[" + rank_axes +
                                     "] : f32[]\n";
  return "graph @t(" + args + ") -> f32[] {\n" + c.body + tail + "  return %loss\n}\n";
}

std::map<OpKind, GradCase> cases() {
  std::map<OpKind, GradCase> m;
  m[OpKind::matmul] = {"%a: f32[2,3,4]", "  %w = param init=xavier : f32[5,4]\n  %r = matmul %a, %w transpose_b=true : f32[2,3,5]\n", "f32[2,3,5]"};
  m[OpKind::add] = {"%a: f32[2,3], %b: f32[3]", "  %r = add %a, %b : f32[2,3]\n", "f32[2,3]"};
  m[OpKind::sub] = {"%a: f32[2,1], %b: f32[2,3]", "  %r = sub %a, %b : f32[2,3]\n", "f32[2,3]"};
  m[OpKind::mul] = {"%a: f32[2,3], %b: f32[]", "  %r = mul %a, %b : f32[2,3]\n", "f32[2,3]"};
  m[OpKind::div] = {"%a: f32[2,3], %b: f32[2,3]", "  %r = div %a, %b : f32[2,3]\n", "f32[2,3]", true};
  m[OpKind::where] = {"%c: bool[3], %a: f32[2,3], %b: f32[]", "  %r = where %c, %a, %b : f32[2,3]\n", "f32[2,3]"};
  m[OpKind::neg] = {"%a: f32[4]", "  %r = neg %a : f32[4]\n", "f32[4]"};
  m[OpKind::exp] = {"%a: f32[4]", "  %r = exp %a : f32[4]\n", "f32[4]"};
  m[OpKind::log] = {"%a: f32[4]", "  %r = log %a : f32[4]\n", "f32[4]", true};
  m[OpKind::sqrt] = {"%a: f32[4]", "  %r = sqrt %a : f32[4]\n", "f32[4]", true};
  m[OpKind::rsqrt] = {"%a: f32[4]", "  %r = rsqrt %a : f32[4]\n", "f32[4]", true};
  m[OpKind::pow] = {"%a: f32[4]", "  %r = pow %a exponent=2.5 : f32[4]\n", "f32[4]", true};
  m[OpKind::tanh] = {"%a: f32[4]", "  %r = tanh %a : f32[4]\n", "f32[4]"};
  m[OpKind::sigmoid] = {"%a: f32[4]", "  %r = sigmoid %a : f32[4]\n", "f32[4]"};
  m[OpKind::relu] = {"%a: f32[6]", "  %r = relu %a : f32[6]\n", "f32[6]"};
  m[OpKind::gelu] = {"%a: f32[6]", "  %r = gelu %a : f32[6]\n", "f32[6]"};
  m[OpKind::gelu_erf] = {"%a: f32[6]", "  %r = gelu_erf %a : f32[6]\n", "f32[6]"};
  m[OpKind::silu] = {"%a: f32[6]", "  %r = silu %a : f32[6]\n", "f32[6]"};
  m[OpKind::dropout] = {"%a: f32[16]", "  %r = dropout %a p=0.5 seed=3 : f32[16]\n", "f32[16]"};
  m[OpKind::cast] = {"%a: f32[4]", "  %c = cast %a to=f64 : f64[4]\n  %r = cast %c to=f32 : f32[4]\n", "f32[4]"};
  m[OpKind::softmax] = {"%a: f32[2,5]", "  %r = softmax %a axis=1 : f32[2,5]\n", "f32[2,5]"};
  m[OpKind::log_softmax] = {"%a: f32[3,4]", "  %r = log_softmax %a axis=0 : f32[3,4]\n", "f32[3,4]"};
  m[OpKind::layernorm] = {"%a: f32[2,3,4], %w: f32[4], %b: f32[4]", "  %r = layernorm %a, %w, %b eps=1e-5 : f32[2,3,4]\n", "f32[2,3,4]"};
  m[OpKind::rope] = {"%a: f32[2,3,4]", "  %r = rope %a theta=100 : f32[2,3,4]\n", "f32[2,3,4]"};
  m[OpKind::rmsnorm] = {"%a: f32[3,4], %w: f32[4]", "  %r = rmsnorm %a, %w eps=1e-6 : f32[3,4]\n", "f32[3,4]"};
  // T = 5 rows of a causal head, and a second head: dq, dk and dv all reach the loss.
  m[OpKind::attention] = {"%q: f32[1,2,5,3], %k: f32[1,2,5,3], %v: f32[1,2,5,3]",
                          "  %r, %l = attention %q, %k, %v causal=true scale=0.7 : f32[1,2,5,3], f32[1,2,5]\n",
                          "f32[1,2,5,3]"};
  // Three slots per expert for six tokens' two choices: some second choices dropped.
  const std::string route = "  %l = param init=normal(1) : f32[6,4]\n"
                            "  %route = moe_route %l top_k=2 capacity_factor=0.75 : i32[4,3]\n";
  m[OpKind::moe_gates] = {"", route + "  %r = moe_gates %l, %route top_k=2 : f32[4,3]\n", "f32[4,3]"};
  m[OpKind::moe_dispatch] = {"%a: f32[6,3]", route + "  %r = moe_dispatch %a, %route : f32[4,3,3]\n", "f32[4,3,3]"};
  m[OpKind::moe_matmul] = {"%a: f32[4,3,5]",
                           route + "  %w = param init=normal(1) : f32[4,5,2]\n"
                                   "  %r = moe_matmul %a, %w, %route : f32[4,3,2]\n",
                           "f32[4,3,2]"};
  // Over an expert's slots: the ones not in use (zeros in the result) take no gradient.
  m[OpKind::swiglu] = {"%a: f32[4,3,2], %b: f32[4,3,2]", route + "  %r = swiglu %a, %b, %route : f32[4,3,2]\n",
                       "f32[4,3,2]"};
  m[OpKind::moe_combine] = {"%a: f32[4,3,2]",
                            route + "  %gt = moe_gates %l, %route top_k=2 : f32[4,3]\n"
                                    "  %r = moe_combine %a, %route, %gt tokens=6 : f32[6,2]\n",
                            "f32[6,2]"};
  m[OpKind::embedding] = {"%ids: i32[2,3]", "  %t = param init=normal(1) : f32[5,4]\n  %r = embedding %t, %ids : f32[2,3,4]\n", "f32[2,3,4]"};
  m[OpKind::reshape] = {"%a: f32[2,6]", "  %r = reshape %a shape=[3,-1] : f32[3,4]\n", "f32[3,4]"};
  m[OpKind::transpose] = {"%a: f32[2,3,4]", "  %r = transpose %a perm=[2,0,1] : f32[4,2,3]\n", "f32[4,2,3]"};
  m[OpKind::slice] = {"%a: f32[3,5]", "  %r = slice %a axis=-1 start=1 end=4 : f32[3,3]\n", "f32[3,3]"};
  m[OpKind::concat] = {"%a: f32[2,2], %b: f32[2,3]", "  %r = concat %a, %b, %a axis=1 : f32[2,7]\n", "f32[2,7]"};
  m[OpKind::split] = {"%a: f32[2,6]", "  %x, %y, %z = split %a axis=1 sizes=[1,2,3] : f32[2,1], f32[2,2], f32[2,3]\n  %r = mul %x, %z : f32[2,3]\n", "f32[2,3]"};
  m[OpKind::tp_copy] = {"%a: f32[3,4]", "  %r = tp_copy %a : f32[3,4]\n", "f32[3,4]"};
  m[OpKind::tp_reduce] = {"%a: f32[3,4]", "  %r = tp_reduce %a : f32[3,4]\n", "f32[3,4]"};
  // Over a group of one rank, which holds every token.
  for (const char* op : {"tp_reduce_scatter", "tp_all_gather", "tp_scatter", "tp_gather", "ep_all_gather",
                         "ep_reduce_scatter"})
    m[*find_op(op)] = {"%a: f32[2,3,4]",
                       fmt::format("  %r = {} %a axis=1 size=3 rank=0 ranks=1 : f32[2,3,4]\n", op), "f32[2,3,4]"};
  m[OpKind::reduce_sum] = {"%a: f32[2,3,4]", "  %r = reduce_sum %a axes=[0,2] : f32[3]\n", "f32[3]"};
  m[OpKind::reduce_mean] = {"%a: f32[2,3,4]", "  %r = reduce_mean %a axes=[1] keepdims=true : f32[2,1,4]\n", "f32[2,1,4]"};
  m[OpKind::reduce_max] = {"%a: f32[3,4]", "  %r = reduce_max %a axes=[1] : f32[3]\n", "f32[3]"};
  m[OpKind::conv2d] = {"%x: f32[2,4,5,5], %w: f32[6,2,3,3], %b: f32[6]",
                       "  %r = conv2d %x, %w, %b stride=[2,1] padding=[1,1] groups=2 : f32[2,6,3,5]\n", "f32[2,6,3,5]"};
  m[OpKind::max_pool2d] = {"%x: f32[1,2,4,4]", "  %r = max_pool2d %x kernel=[2,2] stride=[1,2] padding=[1,0] : f32[1,2,5,2]\n", "f32[1,2,5,2]"};
  m[OpKind::avg_pool2d] = {"%x: f32[1,2,4,4]", "  %r = avg_pool2d %x kernel=[3,3] stride=[1,1] padding=[1,1] : f32[1,2,4,4]\n", "f32[1,2,4,4]"};
  m[OpKind::cross_entropy] = {"%l: f32[2,3,5], %t: i32[2,3]", "  %r = cross_entropy %l, %t ignore_index=4 : f32[]\n", "f32[]"};
  // The parts only through the loss they add up to: the maximum steadies them and takes no gradient.
  m[OpKind::cross_entropy_parts] = {"%l: f32[2,3,5], %t: i32[2,3]",
                                    "  %m.local = reduce_max %l axes=[-1] : f32[2,3]\n"
                                    "  %m = tp_max %m.local : f32[2,3]\n"
                                    "  %p.partial = cross_entropy_parts %l, %m, %t ignore_index=4 : f32[2,3,2]\n"
                                    "  %p = tp_reduce %p.partial : f32[2,3,2]\n"
                                    "  %r = cross_entropy_total %p, %t ignore_index=4 : f32[]\n",
                                    "f32[]"};
  m[OpKind::cross_entropy_total] = {"%p: f32[2,3,2], %t: i32[2,3]",
                                    "  %r = cross_entropy_total %p, %t ignore_index=4 : f32[]\n", "f32[]", true};
  m[OpKind::mse_loss] = {"%a: f32[2,3], %b: f32[2,3]", "  %r = mse_loss %a, %b : f32[]\n", "f32[]"};
  return m;
}

struct Buffers {
  std::vector<std::vector<double>> floats;   // one per float arg or param, in order
  std::vector<std::vector<int32_t>> ints;
  std::vector<std::vector<uint8_t>> bools;
};

class GradCheck {
 public:
  explicit GradCheck(const GradCase& c) : GradCheck(parse_module_text("case.pf", graph_text(c)), {}, c.positive) {}

  /// A whole model: run through `passes` under `overrides`; every float input is checked.
  GradCheck(Module m, const DimBinding& overrides, bool positive = false,
            const std::vector<std::string>& passes = {"inline", "shape"})
      : module_(std::move(m)), positive_(positive) {
    binding_ = module_.binding(overrides);
    verify_module(module_, binding_, VerifyOptions{true});
    PassContext ctx{binding_};
    run_passes(module_, passes, ctx);
    const Function& g = module_.graph();
    AutodiffOptions options;
    for (ValueId a : g.args)
      if (is_float(g.type_of(a).dtype) && g.values[a].name != "wt") options.wrt_inputs.push_back(g.values[a].name);
    program_ = differentiate(module_, binding_, options);
    std::mt19937_64 rng(42);
    std::uniform_real_distribution<double> mag(0.2, 1.0), pos(0.5, 1.5);
    for (ValueId a : module_.graph().args) {
      const TensorType& t = module_.graph().type_of(a);
      std::vector<double> v(t.numel());
      std::vector<int32_t> iv(t.numel());
      std::vector<uint8_t> bv(t.numel());
      for (int64_t i = 0; i < t.numel(); ++i) {
        v[i] = positive_ ? pos(rng) : (rng() % 2 ? 1 : -1) * mag(rng);
        iv[i] = static_cast<int32_t>(rng() % 5);
        bv[i] = rng() % 2;
      }
      inputs_.push_back(v);
      int_inputs_.push_back(iv);
      bool_inputs_.push_back(bv);
    }
    for (const std::string& name : program_.params) {
      const Function& f = module_.graph();
      std::vector<double> v(f.type_of(f.find_value(name)).numel());
      for (double& x : v) x = (rng() % 2 ? 1 : -1) * mag(rng);
      params_.push_back(v);
    }
  }

  double loss() {
    cpu::Executor fwd(module_.graph(), binding_, DType::f64, alone());
    bind_inputs(fwd, module_.graph());
    for (size_t i = 0; i < params_.size(); ++i) fwd.bind_param(program_.params[i], params_[i].data());
    fwd.run();
    return *static_cast<const double*>(fwd.output(0));
  }

  // Analytic gradients of every checked input, then every parameter, run in
  // f64 or (to compare the f32 kernels) in f32.
  std::vector<std::vector<double>> analytic(DType dtype = DType::f64) {
    const Function& graph = module_.graph();
    auto cast = [&](std::vector<std::vector<double>>& src) {
      std::vector<std::vector<float>> out;
      for (auto& v : src) out.emplace_back(v.begin(), v.end());
      return out;
    };
    auto f_inputs = cast(inputs_), f_params = cast(params_);
    auto ptr = [&](std::vector<std::vector<double>>& d, std::vector<std::vector<float>>& f, size_t i) -> void* {
      return dtype == DType::f64 ? static_cast<void*>(d[i].data()) : static_cast<void*>(f[i].data());
    };
    cpu::Executor fwd(graph, binding_, dtype, alone());
    for (size_t a = 0; a < graph.args.size(); ++a) {
      DType dt = graph.type_of(graph.args[a]).dtype;
      fwd.bind_input(static_cast<int>(a), is_float(dt) ? ptr(inputs_, f_inputs, a)
                                          : dt == DType::boolean ? static_cast<void*>(bool_inputs_[a].data())
                                                                 : static_cast<void*>(int_inputs_[a].data()));
    }
    for (size_t i = 0; i < params_.size(); ++i) fwd.bind_param(program_.params[i], ptr(params_, f_params, i));
    fwd.run();
    const Function& bwd = *module_.find_function(program_.backward);
    cpu::Executor back(bwd, binding_, dtype, alone());
    double seed = 1;
    float seed32 = 1;
    back.bind_input(0, dtype == DType::f64 ? static_cast<const void*>(&seed) : &seed32);
    for (size_t s = 0; s < program_.stash.size(); ++s)
      back.bind_input(static_cast<int>(1 + s), fwd.output(program_.original_results + static_cast<int>(s)));
    for (size_t i = 0; i < params_.size(); ++i)
      if (bwd.find_value(program_.params[i]) >= 0) back.bind_param(program_.params[i], ptr(params_, f_params, i));
    back.run();
    std::vector<std::vector<double>> out;
    for (int r = 0; r < back.num_outputs(); ++r) {
      int64_t n = back.output_type(r).numel();
      if (dtype == DType::f64) {
        const double* p = static_cast<const double*>(back.output(r));
        out.emplace_back(p, p + n);
      } else {
        const float* p = static_cast<const float*>(back.output(r));
        out.emplace_back(p, p + n);
      }
    }
    return out;
  }

  // The tensors the analytic gradients are of, in the same order.
  std::vector<std::vector<double>*> targets() {
    std::vector<std::vector<double>*> t;
    const Function& g = module_.graph();
    for (const std::string& name : program_.input_grads) {
      for (size_t a = 0; a < g.args.size(); ++a)
        if (g.values[g.args[a]].name == name) t.push_back(&inputs_[a]);
    }
    for (auto& p : params_) t.push_back(&p);
    return t;
  }

  std::string text() const { return print_module(module_); }
  const Module& module() const { return module_; }

 private:
  void bind_inputs(cpu::Executor& e, const Function& g) {
    for (size_t a = 0; a < g.args.size(); ++a) {
      DType dt = g.type_of(g.args[a]).dtype;
      const void* p = is_float(dt) ? static_cast<const void*>(inputs_[a].data())
                      : dt == DType::boolean ? static_cast<const void*>(bool_inputs_[a].data())
                                             : static_cast<const void*>(int_inputs_[a].data());
      e.bind_input(static_cast<int>(a), p);
    }
  }

  Module module_;
  bool positive_;
  DimBinding binding_;
  GradientProgram program_;
  std::vector<std::vector<double>> inputs_, params_;
  std::vector<std::vector<int32_t>> int_inputs_;
  std::vector<std::vector<uint8_t>> bool_inputs_;
};

std::vector<int> differentiable_ops() {
  std::vector<int> ops;
  for (int k = 0; k < kNumOps; ++k)
    if (has_grad_rule(static_cast<OpKind>(k))) ops.push_back(k);
  return ops;
}

TEST(GradRules, EveryDifferentiableOpHasACaseAndTheRestAreKnown) {
  auto all = cases();
  std::vector<std::string> without_rule;
  for (int k = 0; k < kNumOps; ++k) {
    OpKind kind = static_cast<OpKind>(k);
    if (has_grad_rule(kind)) {
      EXPECT_TRUE(all.count(kind)) << op_name(kind) << " has a gradient rule but no case here";
    } else {
      without_rule.emplace_back(op_name(kind));
    }
  }
  // Sources, parameters, calls (inlined first), decoding's cached attention
  // (never trained through) and the backward ops.
  std::vector<std::string> expected = {
      "param", "constant", "dim_value", "causal_mask", "call", "cached_attention", "moe_route", "moe_load", "tp_max", "broadcast_to", "sum_to", "relu_grad", "gelu_grad",
      "gelu_erf_grad", "silu_grad", "swiglu_grad", "softmax_grad", "log_softmax_grad", "layernorm_grad", "rmsnorm_grad", "attention_grad", "embedding_grad", "moe_gates_grad", "slice_grad",
      "reduce_max_grad", "conv2d_grad_input", "conv2d_grad_weight", "max_pool2d_grad", "avg_pool2d_grad",
      "cross_entropy_grad", "cross_entropy_parts_grad", "cross_entropy_total_grad"};
  EXPECT_EQ(without_rule, expected);
}

class OpGradient : public testing::TestWithParam<int> {};

// Every analytic gradient of case `c` of op `kind` against central differences.
void check_finite_differences(OpKind kind, const GradCase& c) {
  GradCheck check(c);
  auto grads = check.analytic();
  auto targets = check.targets();
  ASSERT_EQ(grads.size(), targets.size()) << check.text();
  double worst = 0;
  for (size_t t = 0; t < targets.size(); ++t) {
    std::vector<double>& x = *targets[t];
    ASSERT_EQ(grads[t].size(), x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      double saved = x[i], h = 1e-6 * std::max(1.0, std::fabs(saved));
      x[i] = saved + h;
      double up = check.loss();
      x[i] = saved - h;
      double down = check.loss();
      x[i] = saved;
      double numeric = (up - down) / (2 * h);
      double err = std::fabs(numeric - grads[t][i]) / std::max(1.0, std::fabs(numeric));
      worst = std::max(worst, err);
      EXPECT_LT(err, 1e-6) << op_name(kind) << " gradient " << t << "[" << i << "]: analytic " << grads[t][i]
                           << ", numeric " << numeric << "\n" << check.text();
    }
  }
  testing::Test::RecordProperty("worst_relative_error", std::to_string(worst));
}

TEST_P(OpGradient, MatchesFiniteDifferences) {
  OpKind kind = static_cast<OpKind>(GetParam());
  auto all = cases();
  auto it = all.find(kind);
  ASSERT_NE(it, all.end()) << op_name(kind) << " has a gradient rule but no case in grad_check_test.cpp";
  check_finite_differences(kind, it->second);
}

// attention reading q, k, v as [B, T, H, D] (two heads between a head's rows).
TEST(AttentionGradient, BthdLayoutMatchesFiniteDifferences) {
  check_finite_differences(
      OpKind::attention,
      {"%q: f32[1,5,2,3], %k: f32[1,5,2,3], %v: f32[1,5,2,3]",
       "  %r, %l = attention %q, %k, %v causal=true scale=0.7 layout=\"bthd\" : f32[1,5,2,3], f32[1,2,5]\n",
       "f32[1,5,2,3]"});
}

// swiglu over every element (no route): both operands' gradients, across the
// sigmoid's range.
TEST(SwigluGradient, WithoutARouteMatchesFiniteDifferences) {
  check_finite_differences(OpKind::swiglu,
                           {"%a: f32[3,5], %b: f32[3,5]", "  %r = swiglu %a, %b : f32[3,5]\n", "f32[3,5]"});
}

// Grouped-query attention: two groups of two query heads, each over one key
// and value head, whose gradients sum the group's.
TEST(AttentionGradient, GroupedKeysMatchFiniteDifferences) {
  check_finite_differences(
      OpKind::attention,
      {"%q: f32[1,2,2,5,3], %k: f32[1,2,1,5,3], %v: f32[1,2,1,5,3]",
       "  %r, %l = attention %q, %k, %v causal=true scale=0.7 : f32[1,2,2,5,3], f32[1,2,2,5]\n",
       "f32[1,2,2,5,3]"});
}

// Whole models: a sample of every parameter's gradient (plus the inputs')
// against finite differences, so that the rules compose (tied weights,
// residuals, attention) as well as they work alone.
void check_model(const char* file, const DimBinding& overrides, size_t samples_per_tensor,
                 const std::vector<std::string>& passes = {"inline", "shape"}) {
  GradCheck check(parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/" + file)), overrides, false,
                  passes);
  auto grads = check.analytic();
  auto targets = check.targets();
  ASSERT_EQ(grads.size(), targets.size());
  // The f32 kernels give the same gradients to f32 precision.
  auto grads32 = check.analytic(DType::f32);
  for (size_t t = 0; t < grads.size(); ++t) {
    double scale = 1e-30;
    for (double g : grads[t]) scale = std::max(scale, std::fabs(g));
    for (size_t i = 0; i < grads[t].size(); ++i)
      ASSERT_NEAR(grads32[t][i], grads[t][i], 1e-4 * scale) << file << ": f32 gradient " << t << "[" << i << "]";
  }
  for (size_t t = 0; t < targets.size(); ++t) {
    std::vector<double>& x = *targets[t];
    size_t stride = std::max<size_t>(1, x.size() / samples_per_tensor);
    for (size_t i = t % stride; i < x.size(); i += stride) {
      double saved = x[i], h = 1e-6;
      x[i] = saved + h;
      double up = check.loss();
      x[i] = saved - h;
      double down = check.loss();
      x[i] = saved;
      double numeric = (up - down) / (2 * h);
      EXPECT_NEAR(grads[t][i], numeric, 1e-4 * std::max(1.0, std::fabs(numeric)))
          << file << ": gradient " << t << "[" << i << "]";
    }
  }
}

TEST(ModelGradient, TinyGptMatchesFiniteDifferences) {
  check_model("gpt.pf", {{"B", 2}, {"T", 8}, {"S", 8}, {"C", 16}, {"H", 2}, {"L", 2}, {"V", 11}}, 6);
}

// The GPT example with its attention fused (what compile runs): one
// attention op per layer, the same loss and gradients as the op-by-op chain
// (f64: to rounding; f32: to f32 precision), and finite differences agree.
const DimBinding kTinyGpt = {{"B", 2}, {"T", 70}, {"S", 70}, {"C", 16}, {"H", 2}, {"L", 2}, {"V", 11}};
const std::vector<std::string> kFused = {"inline", "shape", "fuse-attention"};

Module gpt_module() { return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/gpt.pf")); }

// The same loss, and the same analytic gradients in f64 and in f32, of a
// module differentiated op by op and with its attention fused.
void expect_same_gradients(GradCheck& unfused, GradCheck& fused) {
  EXPECT_NEAR(fused.loss(), unfused.loss(), 1e-12);
  for (DType dtype : {DType::f64, DType::f32}) {
    auto want = unfused.analytic(dtype), got = fused.analytic(dtype);
    ASSERT_EQ(got.size(), want.size());
    for (size_t t = 0; t < want.size(); ++t) {
      double scale = 1e-30, worst = 0;
      for (double g : want[t]) scale = std::max(scale, std::fabs(g));
      ASSERT_EQ(got[t].size(), want[t].size());
      for (size_t i = 0; i < want[t].size(); ++i) worst = std::max(worst, std::fabs(got[t][i] - want[t][i]));
      EXPECT_LE(worst, (dtype == DType::f64 ? 1e-12 : 1e-5) * scale)
          << dtype_name(dtype) << " gradient " << t << " differs from the unfused chain's";
    }
  }
}

TEST(ModelGradient, FusedAttentionGivesTheUnfusedChainsGradients) {
  GradCheck unfused(gpt_module(), kTinyGpt);
  GradCheck fused(gpt_module(), kTinyGpt, false, kFused);
  // Each reads q, k, v as the qkv projection writes them: no head transposes left.
  int attention_ops = 0, transposes = 0;
  for (const Op& op : fused.module().graph().ops) {
    attention_ops += op.kind == OpKind::attention && op.attr("layout") && op.attr("layout")->string == "bthd";
    transposes += op.kind == OpKind::transpose;
  }
  EXPECT_EQ(attention_ops, 2) << fused.text();
  EXPECT_EQ(transposes, 0) << fused.text();
  expect_same_gradients(unfused, fused);
}

// dq, dk and dv themselves: q, k, v as inputs of the op-by-op chain (70
// rows: two of the kernels' tiles), fused or not.
TEST(ModelGradient, FusedAttentionGivesTheChainsDqDkDv) {
  const std::string chain = R"(
graph @attn(%q: f32[2,2,70,8], %k: f32[2,2,70,8], %v: f32[2,2,70,8], %wt: f32[2,2,70,8]) -> f32[] {
  %s = matmul %q, %k transpose_b=true : f32[2,2,70,70]
  %d = dim_value value=8 : f32[]
  %r = rsqrt %d : f32[]
  %ss = mul %s, %r : f32[2,2,70,70]
  %m = causal_mask : bool[70,70]
  %ninf = constant value=-inf : f32[]
  %sm = where %m, %ss, %ninf : f32[2,2,70,70]
  %p = softmax %sm axis=-1 : f32[2,2,70,70]
  %o = matmul %p, %v : f32[2,2,70,8]
  %ow = mul %o, %wt : f32[2,2,70,8]
  %loss = reduce_sum %ow axes=[0,1,2,3] : f32[]
  return %loss
}
)";
  GradCheck unfused(parse_module_text("chain.pf", chain), {});
  GradCheck fused(parse_module_text("chain.pf", chain), {}, false, kFused);
  ASSERT_EQ(fused.module().graph().ops[0].kind, OpKind::attention) << fused.text();
  ASSERT_EQ(fused.targets().size(), 3u);  // dq, dk, dv (the weighting %wt is not checked)
  expect_same_gradients(unfused, fused);
}

// Grouped-query attention written as the products broadcast it (q [B, G,
// R, T, D] over k and v [B, G, 1, T, D]): fused into one attention op whose
// k and v keep their single heads, with the chain's gradients.
TEST(ModelGradient, FusedGroupedAttentionGivesTheChainsDqDkDv) {
  const std::string chain = R"(
graph @attn(%q: f32[1,2,3,70,4], %k: f32[1,2,1,70,4], %v: f32[1,2,1,70,4], %wt: f32[1,2,3,70,4]) -> f32[] {
  %s = matmul %q, %k transpose_b=true : f32[1,2,3,70,70]
  %d = dim_value value=4 : f32[]
  %r = rsqrt %d : f32[]
  %ss = mul %s, %r : f32[1,2,3,70,70]
  %m = causal_mask : bool[70,70]
  %ninf = constant value=-inf : f32[]
  %sm = where %m, %ss, %ninf : f32[1,2,3,70,70]
  %p = softmax %sm axis=-1 : f32[1,2,3,70,70]
  %o = matmul %p, %v : f32[1,2,3,70,4]
  %ow = mul %o, %wt : f32[1,2,3,70,4]
  %loss = reduce_sum %ow axes=[0,1,2,3,4] : f32[]
  return %loss
}
)";
  GradCheck unfused(parse_module_text("chain.pf", chain), {});
  GradCheck fused(parse_module_text("chain.pf", chain), {}, false, kFused);
  const Op& att = fused.module().graph().ops[0];
  ASSERT_EQ(att.kind, OpKind::attention) << fused.text();
  EXPECT_EQ(fused.module().graph().type_of(att.operands[1]).str(), "f32[1,2,1,70,4]");
  ASSERT_EQ(fused.targets().size(), 3u);
  expect_same_gradients(unfused, fused);
}

TEST(ModelGradient, TinyGptWithFusedAttentionMatchesFiniteDifferences) {
  check_model("gpt.pf", {{"B", 2}, {"T", 8}, {"S", 8}, {"C", 16}, {"H", 2}, {"L", 2}, {"V", 11}}, 6, kFused);
}

// The Llama-style and mixture-of-experts examples with their SwiGLU fused
// (what compile runs): one swiglu per layer, over the experts' slots in
// use in the mixture, the op-by-op chain's loss and gradients, and finite
// differences agree.
const DimBinding kTinyLlama = {{"B", 2}, {"T", 8}, {"C", 16}, {"H", 4}, {"R", 2}, {"F", 24}, {"L", 2}, {"V", 11}};
const DimBinding kTinyMoe = {{"B", 2}, {"T", 8}, {"C", 16}, {"H", 4}, {"R", 2}, {"F", 8},
                             {"L", 2}, {"V", 11}, {"E", 4}, {"K", 2}};
const std::vector<std::string> kFusedSwiglu = {"inline", "shape", "fuse-attention", "fuse-swiglu"};

Module example(const char* file) {
  return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/" + file));
}

// The swiglu ops of `check`'s graph, and how many of them read a route.
std::pair<int, int> swiglus(GradCheck& check) {
  int all = 0, routed = 0;
  for (const Op& op : check.module().graph().ops) {
    all += op.kind == OpKind::swiglu;
    routed += op.kind == OpKind::swiglu && op.operands.size() == 3;
  }
  return {all, routed};
}

TEST(ModelGradient, FusedSwigluGivesTheUnfusedChainsGradients) {
  for (const auto& [file, binding, routed] :
       {std::tuple{"llama.pf", kTinyLlama, 0}, std::tuple{"moe.pf", kTinyMoe, 2}}) {
    SCOPED_TRACE(file);
    GradCheck unfused(example(file), binding, false, kFused);
    GradCheck fused(example(file), binding, false, kFusedSwiglu);
    EXPECT_EQ(swiglus(unfused), std::make_pair(0, 0));
    EXPECT_EQ(swiglus(fused), std::make_pair(2, routed)) << fused.text();
    expect_same_gradients(unfused, fused);
  }
}

TEST(ModelGradient, TinyMoeWithFusedSwigluMatchesFiniteDifferences) {
  check_model("moe.pf", kTinyMoe, 4, kFusedSwiglu);
}

TEST(ModelGradient, SmallMlpMatchesFiniteDifferences) {
  check_model("mlp.pf", {{"B", 4}, {"I", 6}, {"H", 8}, {"L", 2}, {"K", 5}}, 6);
}

TEST(ModelGradient, SmallCnnMatchesFiniteDifferences) { check_model("cnn.pf", {{"B", 2}, {"K", 5}}, 4); }

INSTANTIATE_TEST_SUITE_P(EveryOp, OpGradient, testing::ValuesIn(differentiable_ops()),
                         [](const testing::TestParamInfo<int>& p) {
                           return std::string(op_name(static_cast<OpKind>(p.param)));
                         });

}  // namespace
}  // namespace pf
