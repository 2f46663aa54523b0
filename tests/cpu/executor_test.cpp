// The CPU executor: hand-computed results, result binding, buffer reuse, errors, and no allocation in run().
#include "backends/cpu/executor.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <array>
#include <functional>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/align.h"
#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "tests/allocation_counter.h"
#include "tests/thread_group.h"
#include "tests/verified_module.h"

namespace pf::cpu {
namespace {

using testing_support::allocations_in;

/// Values of `v` stored as T (float or double).
template <class T>
std::vector<T> as(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <class T>
std::vector<double> read(const Executor& ex, int result) {
  const auto* p = static_cast<const T*>(ex.output(result));
  return std::vector<double>(p, p + ex.output_type(result).numel());
}

void expect_near_all(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol) << "element " << i;
}

// ---------------------------------------------------------------------------
// A two-layer MLP with a loss, small enough to compute by hand.

const char* kMlp = R"(
graph @mlp(%x: f32[2,3], %targets: i32[2]) -> (f32[], f32[2,3]) {
  %w1 = param init=xavier : f32[3,4]
  %b1 = param init=zeros : f32[4]
  %h.mm = matmul %x, %w1 : f32[2,4]
  %h = add %h.mm, %b1 : f32[2,4]
  %r = relu %h : f32[2,4]
  %w2 = param init=xavier : f32[4,3]
  %b2 = param init=zeros : f32[3]
  %logits.mm = matmul %r, %w2 : f32[2,3]
  %logits = add %logits.mm, %b2 : f32[2,3]
  %loss = cross_entropy %logits, %targets : f32[]
  return %loss, %logits
}
)";

// The numbers below, by hand:
//   x @ w1      = [[1, 2, 1, 0.5], [-2, 1, 1, 1]]
//   + b1        = [[1, 1, 1.5, 0.5], [-2, 0, 1.5, 1]]
//   relu        = [[1, 1, 1.5, 0.5], [0, 0, 1.5, 1]]
//   r @ w2      = [[1.5, 1.5, 2], [1, 1, 2.5]]   (w2 = identity on 3 columns, plus a row of ones)
//   + b2        = [[1.5, 1.5, 1], [1, 1, 1.5]]
//   loss        = mean(log(e^1.5 + e^1.5 + e^1) - 1, log(e^1 + e^1 + e^1.5) - 1)   (targets 2 and 0)
const std::vector<double> kX = {1, 2, 0, 0, 1, -1};
const std::vector<int32_t> kTargets = {2, 0};
const std::vector<double> kW1 = {1, 0, -1, 0.5, 0, 1, 1, 0, 2, 0, 0, -1};
const std::vector<double> kB1 = {0, -1, 0.5, 0};
const std::vector<double> kW2 = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
const std::vector<double> kB2 = {0, 0, -1};
const std::vector<double> kLogits = {1.5, 1.5, 1, 1, 1, 1.5};
const double kLoss =
    0.5 * ((std::log(2 * std::exp(1.5) + std::exp(1.0)) - 1) + (std::log(2 * std::exp(1.0) + std::exp(1.5)) - 1));

/// The MLP's parameters and inputs in T, bound to an executor.
template <class T>
struct MlpData {
  std::vector<T> x = as<T>(kX), w1 = as<T>(kW1), b1 = as<T>(kB1), w2 = as<T>(kW2), b2 = as<T>(kB2);
  std::vector<int32_t> targets = kTargets;

  void bind(Executor& ex) {
    ex.bind_param("w1", w1.data());
    ex.bind_param("b1", b1.data());
    ex.bind_param("w2", w2.data());
    ex.bind_param("b2", b2.data());
    ex.bind_input(0, x.data());
    ex.bind_input(1, targets.data());
  }
};

TEST(Executor, MlpForwardInF64MatchesHandComputedNumbers) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f64);
  MlpData<double> d;
  d.bind(ex);
  ex.run();
  ASSERT_EQ(ex.num_outputs(), 2);
  EXPECT_EQ(ex.output_type(0).str(), "f64[]");
  EXPECT_EQ(ex.output_type(1).str(), "f64[2,3]");
  EXPECT_EQ(ex.input_type(0).str(), "f64[2,3]");
  EXPECT_EQ(ex.input_type(1).str(), "i32[2]");  // integers keep their dtype
  EXPECT_EQ(ex.param_type("w2").str(), "f64[4,3]");
  expect_near_all(read<double>(ex, 1), kLogits, 1e-15);
  EXPECT_NEAR(read<double>(ex, 0)[0], kLoss, 1e-14);
}

TEST(Executor, MlpForwardInF32MatchesHandComputedNumbers) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f32);
  MlpData<float> d;
  d.bind(ex);
  ex.run();
  EXPECT_EQ(ex.output_type(0).str(), "f32[]");
  expect_near_all(read<float>(ex, 1), kLogits, 1e-6);
  EXPECT_NEAR(read<float>(ex, 0)[0], kLoss, 1e-6);
}

TEST(Executor, ParamNamesAreInOpOrder) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f32);
  EXPECT_EQ(ex.param_names(), (std::vector<std::string>{"w1", "b1", "w2", "b2"}));
}

TEST(Executor, KeepsNoReferenceToTheFunction) {
  // The module dies before the executor runs: everything was compiled.
  auto make = [] {
    Module m = verified_module(kMlp);
    return Executor(m.graph(), m.binding(), DType::f64);
  };
  Executor ex = make();
  MlpData<double> d;
  d.bind(ex);
  ex.run();
  EXPECT_NEAR(read<double>(ex, 0)[0], kLoss, 1e-14);
}

TEST(Executor, RunningTwiceReusesBuffersCorrectly) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f64);
  MlpData<double> d;
  d.bind(ex);
  ex.run();
  const std::vector<double> first_logits = read<double>(ex, 1);
  const double first_loss = read<double>(ex, 0)[0];
  ex.run();
  EXPECT_EQ(read<double>(ex, 1), first_logits);
  EXPECT_EQ(read<double>(ex, 0)[0], first_loss);

  // New input values in the same bound buffer: the next run sees them, and
  // no stale intermediate survives. Doubling x doubles x @ w1:
  //   [[2, 4, 2, 1], [-4, 2, 2, 2]] + b1 -> relu [[2, 3, 2.5, 1], [0, 1, 2.5, 2]]
  //   @ w2 = [[3, 4, 3.5], [2, 3, 4.5]], + b2 = [[3, 4, 2.5], [2, 3, 3.5]]
  for (double& v : d.x) v *= 2;
  ex.run();
  expect_near_all(read<double>(ex, 1), {3, 4, 2.5, 2, 3, 3.5}, 1e-15);
}

// ---------------------------------------------------------------------------
// Results: pass-through, repeats, caller buffers.

const char* kPassThrough = R"(
graph @g(%x: f32[2,2]) -> (f32[2,2], f32[3], f32[2,2], f32[2,2]) {
  %w = param init=zeros : f32[3]
  %y = exp %x : f32[2,2]
  return %x, %w, %y, %y
}
)";

// A stage compiled with --dtype bf16: its products round their operands to
// bf16 (1 + 2^-8 ties to 1, 1 + 3 * 2^-8 to 1 + 2^-6), its values stay f32
// (the bias added in the product's GEMM is not rounded: + 2^-10 survives).
TEST(Executor, Bf16ProductsRoundTheOperandsAndKeepF32Values) {
  Module m = verified_module(R"(
graph @linear(%x: f32[2,1]) -> (f32[2,1]) {
  %w = param init=ones : f32[1,1]
  %b = param init=zeros : f32[1]
  %y.mm = matmul %x, %w : f32[2,1]
  %y = add %y.mm, %b : f32[2,1]
  return %y
}
)");
  std::vector<float> x = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f}, w = {1.0f}, b = {0x1p-10f};
  for (const bool bf16 : {false, true}) {
    ExecutorOptions options;
    options.bf16_products = bf16;
    Executor ex(m.graph(), m.binding(), DType::f32, options);
    ex.bind_input(0, x.data());
    ex.bind_param("w", w.data());
    ex.bind_param("b", b.data());
    ex.run();
    const std::vector<double> expected = bf16 ? std::vector<double>{1.0f + 0x1p-10f, 1.0f + 0x1p-6f + 0x1p-10f}
                                              : std::vector<double>{x[0] + 0x1p-10f, x[1] + 0x1p-10f};
    EXPECT_EQ(read<float>(ex, 0), expected) << (bf16 ? "bf16 products" : "f32 products");
  }
}

TEST(Executor, ReturnsCopiesOfAnArgumentAParameterAndARepeatedValue) {
  Module m = verified_module(kPassThrough);
  Executor ex(m.graph(), m.binding(), DType::f64);
  std::vector<double> x = {0, 1, -1, 2}, w = {5, 6, 7};
  ex.bind_input(0, x.data());
  ex.bind_param("w", w.data());
  ex.run();
  EXPECT_EQ(read<double>(ex, 0), x);
  EXPECT_EQ(read<double>(ex, 1), w);
  const std::vector<double> e = {1, std::exp(1.0), std::exp(-1.0), std::exp(2.0)};
  expect_near_all(read<double>(ex, 2), e, 1e-15);
  expect_near_all(read<double>(ex, 3), e, 1e-15);
  // Copies, not the caller's buffers: they stay valid whatever the caller does.
  EXPECT_NE(ex.output(0), x.data());
  EXPECT_NE(ex.output(1), w.data());
  EXPECT_NE(ex.output(2), ex.output(3));
  // An argument that changes after the run does not change the copy.
  x[0] = 42;
  EXPECT_EQ(read<double>(ex, 0)[0], 0);
}

TEST(Executor, BoundOutputsAreWrittenIntoTheCallerBuffer) {
  Module m = verified_module(kPassThrough);
  Executor ex(m.graph(), m.binding(), DType::f64);
  std::vector<double> x = {0, 1, -1, 2}, w = {5, 6, 7};
  std::vector<double> out_x(4, -9), out_w(3, -9), out_y(4, -9), out_y2(4, -9);
  ex.bind_input(0, x.data());
  ex.bind_param("w", w.data());
  ex.bind_output(0, out_x.data());
  ex.bind_output(1, out_w.data());
  ex.bind_output(2, out_y.data());
  ex.bind_output(3, out_y2.data());
  ex.run();
  EXPECT_EQ(ex.output(0), out_x.data());
  EXPECT_EQ(ex.output(2), out_y.data());
  EXPECT_EQ(out_x, x);
  EXPECT_EQ(out_w, w);
  EXPECT_NEAR(out_y[3], std::exp(2.0), 1e-15);
  EXPECT_EQ(out_y2, out_y);

  // Unbinding returns the result to executor-owned memory.
  ex.bind_output(2, nullptr);
  ex.run();
  EXPECT_NE(ex.output(2), out_y.data());
  EXPECT_NEAR(read<double>(ex, 2)[3], std::exp(2.0), 1e-15);
}

TEST(Executor, BoundIntermediateResultIsReadFromTheCallerBuffer) {
  // %r is a result (a stashed activation) that later ops also read: they read
  // it where the caller put it, and a new buffer per run works.
  std::string text = kMlp;
  text.replace(text.find("(f32[], f32[2,3])"), 17, "(f32[], f32[2,4])");
  text.replace(text.find("return %loss, %logits"), 21, "return %loss, %r");
  Module m = verified_module(text);
  Executor ex(m.graph(), m.binding(), DType::f64, ExecutorOptions{{1}});
  MlpData<double> d;
  d.bind(ex);
  std::vector<double> stash0(8, -9), stash1(8, -9);
  ex.bind_output(1, stash0.data());
  ex.run();
  EXPECT_EQ(stash0, (std::vector<double>{1, 1, 1.5, 0.5, 0, 0, 1.5, 1}));
  EXPECT_NEAR(read<double>(ex, 0)[0], kLoss, 1e-14);
  for (double& v : d.x) v *= 2;
  ex.bind_output(1, stash1.data());
  ex.run();
  EXPECT_EQ(stash1, (std::vector<double>{2, 3, 2.5, 1, 0, 1, 2.5, 2}));
  EXPECT_EQ(stash0[1], 1);  // the first micro-batch's stash is left alone
  // Logits [[3, 4, 2.5], [2, 3, 3.5]] (see RunningTwiceReusesBuffersCorrectly), targets 2 and 0.
  const double loss = 0.5 * ((std::log(std::exp(3.0) + std::exp(4.0) + std::exp(2.5)) - 2.5) +
                             (std::log(std::exp(2.0) + std::exp(3.0) + std::exp(3.5)) - 2));
  EXPECT_NEAR(read<double>(ex, 0)[0], loss, 1e-14);
}

// Gradients as a backward program returns them: a GEMM's (%dw, added by the
// GEMM itself), a scatter-add's (%dt, also by its kernel), a bias gradient
// (%db: sum_to cannot add, so the run adds it at its end), a product that a
// later op reads (%p: its kernel must not write the running sum), and a
// pass-through (%x, copied results are added too).
const char* kGradients = R"(
graph @grads(%x: f32[2,3], %g: f32[2,4], %ids: i32[2]) -> (f32[3,4], f32[5,4], f32[4], f32[2,4], f32[2,4], f32[2,3]) {
  %dw = matmul %x, %g transpose_a=true : f32[3,4]
  %dt = embedding_grad %g, %ids rows=5 : f32[5,4]
  %db = sum_to %g shape=[4] : f32[4]
  %w = param init=zeros : f32[3,4]
  %p = matmul %x, %w : f32[2,4]
  %q = relu %p : f32[2,4]
  return %dw, %dt, %db, %p, %q, %x
}
)";

TEST(Executor, AccumulatedOutputsAddEachRunIntoTheirBuffers) {
  Module m = verified_module(kGradients);
  Executor ex(m.graph(), m.binding(), DType::f64);
  std::vector<double> x = {1, 2, 0, 0, 1, -1}, g = {1, -2, 0.5, 3, 0, 1, -1, 2}, w(12);
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<double>(i) - 5;
  std::vector<int32_t> ids = {3, 3};
  ex.bind_input(0, x.data());
  ex.bind_input(1, g.data());
  ex.bind_input(2, ids.data());
  ex.bind_param("w", w.data());
  ex.run();
  std::vector<std::vector<double>> once;
  for (int r = 0; r < 6; ++r) once.push_back(read<double>(ex, r));
  EXPECT_EQ(once[1][12], 1.0);  // both ids are 3: row 3 holds g's two rows summed
  EXPECT_EQ(once[1][0], 0.0);

  // Buffers that start at 100: two accumulated runs add twice the values
  // (and %q, relu of %p, read %p's own value, not the running sum).
  std::vector<std::vector<double>> acc;
  for (int r = 0; r < 6; ++r) acc.emplace_back(once[static_cast<size_t>(r)].size(), 100.0);
  for (int r = 0; r < 6; ++r) {
    ex.bind_output(r, acc[static_cast<size_t>(r)].data());
    ex.accumulate_output(r, true);
  }
  ex.run();
  ex.run();
  for (size_t r = 0; r < 6; ++r) {
    std::vector<double> want = once[r];
    for (double& v : want) v = 100 + 2 * v;
    EXPECT_EQ(acc[r], want) << "result " << r;
    EXPECT_EQ(ex.output(static_cast<int>(r)), acc[r].data());
  }

  // Switched off, the next run overwrites.
  for (int r = 0; r < 6; ++r) ex.accumulate_output(r, false);
  ex.run();
  for (size_t r = 0; r < 6; ++r) EXPECT_EQ(acc[r], once[r]) << "result " << r;
}

TEST(Executor, OnlyBoundFloatResultsAccumulate) {
  Module m = verified_module(kGradients);
  Executor ex(m.graph(), m.binding(), DType::f32);
  try {
    ex.accumulate_output(0, true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cpu executor: @grads: result 0 (%dw) cannot be accumulated: it is not bound");
  }
  std::vector<float> dw(12);
  ex.bind_output(0, dw.data());
  ex.accumulate_output(0, true);
  try {
    ex.bind_output(0, nullptr);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cpu executor: @grads: result 0 is accumulated into its buffer and cannot be unbound");
  }
}

TEST(Executor, CallerOutputsCostNoArenaBytes) {
  const char* text = R"(
graph @g(%x: f32[16,16]) -> (f32[16,16], f32[16,16]) {
  %a = exp %x : f32[16,16]
  %b = relu %a : f32[16,16]
  %c = tanh %b : f32[16,16]
  return %a, %c
}
)";
  Module m = verified_module(text);
  Executor arena_results(m.graph(), m.binding(), DType::f32);
  Executor caller_results(m.graph(), m.binding(), DType::f32, ExecutorOptions{{0}});
  // %a, %b and %c are live together at the last op; with %a in the caller's
  // buffer only %b and %c need arena bytes.
  EXPECT_EQ(arena_results.arena_bytes(), 3 * 1024);
  EXPECT_EQ(caller_results.arena_bytes(), 2 * 1024);

  std::vector<float> x(256, 0.5f);
  caller_results.bind_input(0, x.data());
  try {
    caller_results.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "running @g: result 0 (%a) is left to the caller but not bound");
  }
  // A fresh buffer per micro-batch: the producer writes into each.
  std::vector<float> stash0(256), stash1(256);
  caller_results.bind_output(0, stash0.data());
  caller_results.run();
  x.assign(256, -0.5f);
  caller_results.bind_output(0, stash1.data());
  caller_results.run();
  EXPECT_FLOAT_EQ(stash0[7], std::exp(0.5f));
  EXPECT_FLOAT_EQ(stash1[7], std::exp(-0.5f));
  EXPECT_FLOAT_EQ(static_cast<const float*>(caller_results.output(1))[7], std::tanh(std::exp(-0.5f)));
}

// ---------------------------------------------------------------------------
// Reshape aliasing.

TEST(Executor, ReshapeOfAnArgumentAliasesIt) {
  const char* text = R"(
graph @g(%x: f32[64]) -> f32[8,8] {
  %v = reshape %x shape=[8,8] : f32[8,8]
  %y = exp %v : f32[8,8]
  return %y
}
)";
  Module m = verified_module(text);
  Executor ex(m.graph(), m.binding(), DType::f32);
  EXPECT_EQ(ex.arena_bytes(), 256);  // %y only: %v reads %x's bytes
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[i] = 0.01f * static_cast<float>(i);
  ex.bind_input(0, x.data());
  ex.run();
  EXPECT_FLOAT_EQ(static_cast<const float*>(ex.output(0))[63], std::exp(0.63f));
}

TEST(Executor, ReshapeAliasKeepsItsOperandsBytesLive) {
  // %a's last direct use is the reshape; %v (its alias) is read three ops
  // later. Without the alias extending %a's live range, %c or %d could take
  // %a's bytes and overwrite %v before %e reads it.
  const char* text = R"(
graph @g(%x: f32[4,4]) -> f32[16] {
  %a = exp %x : f32[4,4]
  %v = reshape %a shape=[16] : f32[16]
  %b = neg %x : f32[4,4]
  %c = relu %b : f32[4,4]
  %d = reshape %c shape=[16] : f32[16]
  %e = add %v, %d : f32[16]
  return %e
}
)";
  Module m = verified_module(text);
  Executor ex(m.graph(), m.binding(), DType::f64);
  std::vector<double> x(16);
  for (int i = 0; i < 16; ++i) x[i] = 0.25 * (i - 8);
  ex.bind_input(0, x.data());
  ex.run();
  std::vector<double> want(16);
  for (int i = 0; i < 16; ++i) want[i] = std::exp(x[i]) + std::max(-x[i], 0.0);
  expect_near_all(read<double>(ex, 0), want, 1e-14);
  // %a (and %v), %b (and %c's input) and %c are 128 bytes each; %e another.
  // Live at %c: %a, %b, %c; at %e: %a, %c, %e.
  EXPECT_EQ(ex.arena_bytes(), 3 * 128);
}

TEST(Executor, ReturnedReshapeIsCopiedNotAliased) {
  const char* text = R"(
graph @g(%x: f32[2,3]) -> (f32[2,3], f32[3,2]) {
  %a = exp %x : f32[2,3]
  %r = reshape %a shape=[3,2] : f32[3,2]
  return %a, %r
}
)";
  Module m = verified_module(text);
  Executor ex(m.graph(), m.binding(), DType::f64);
  std::vector<double> x = {0, 1, 2, 3, 4, 5}, out_r(6, -1);
  ex.bind_input(0, x.data());
  ex.bind_output(1, out_r.data());
  ex.run();
  EXPECT_NE(ex.output(0), ex.output(1));
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(out_r[i], std::exp(x[i]), 1e-14);
  EXPECT_EQ(read<double>(ex, 0), out_r);
}

// ---------------------------------------------------------------------------
// Attention-shaped program: bool, integer and float ops together, f32 against
// f64.

const char* kAttention = R"(
graph @attn(%x: f32[2,4,8], %ids: i64[8]) -> (f32[2,4,8], f32[2,4,8], f32[2,4]) {
  %ln.w = param init=ones : f32[8]
  %ln.b = param init=zeros : f32[8]
  %a = layernorm %x, %ln.w, %ln.b eps=1e-5 : f32[2,4,8]
  %w = param init=normal(0.02) : f32[8,24]
  %qkv = matmul %a, %w : f32[2,4,24]
  %q.flat, %k.flat, %v.flat = split %qkv axis=2 sizes=[8,8,8] : f32[2,4,8], f32[2,4,8], f32[2,4,8]
  %q.h = reshape %q.flat shape=[2,4,2,4] : f32[2,4,2,4]
  %q = transpose %q.h perm=[0,2,1,3] : f32[2,2,4,4]
  %k.h = reshape %k.flat shape=[2,4,2,4] : f32[2,4,2,4]
  %k = transpose %k.h perm=[0,2,1,3] : f32[2,2,4,4]
  %v.h = reshape %v.flat shape=[2,4,2,4] : f32[2,4,2,4]
  %v = transpose %v.h perm=[0,2,1,3] : f32[2,2,4,4]
  %s.raw = matmul %q, %k transpose_b=true : f32[2,2,4,4]
  %hd = dim_value value=4 : f32[]
  %scale = rsqrt %hd : f32[]
  %s.scaled = mul %s.raw, %scale : f32[2,2,4,4]
  %causal = causal_mask : bool[4,4]
  %minf = constant value=-inf : f32[]
  %s = where %causal, %s.scaled, %minf : f32[2,2,4,4]
  %p = softmax %s axis=-1 : f32[2,2,4,4]
  %y.h = matmul %p, %v : f32[2,2,4,4]
  %y.t = transpose %y.h perm=[0,2,1,3] : f32[2,4,2,4]
  %y = reshape %y.t shape=[2,4,8] : f32[2,4,8]
  %act = gelu %y : f32[2,4,8]
  %out = add %x, %act : f32[2,4,8]
  %ids.m = reshape %ids shape=[2,4] : i64[2,4]
  %ids.f = cast %ids.m to=f32 : f32[2,4]
  return %out, %v.flat, %ids.f
}
)";

template <class T>
std::vector<std::vector<double>> run_attention(const Module& m) {
  Executor ex(m.graph(), m.binding(), sizeof(T) == 4 ? DType::f32 : DType::f64);
  std::vector<T> x(64), ln_w(8, T(1)), ln_b(8, T(0)), w(8 * 24);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<T>(std::sin(0.37 * static_cast<double>(i)));
  for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<T>(0.3 * std::cos(0.11 * static_cast<double>(i * i)));
  std::vector<int64_t> ids = {3, 1, 4, 1, 5, 9, 2, 6};
  ex.bind_input(0, x.data());
  ex.bind_input(1, ids.data());
  ex.bind_param("ln.w", ln_w.data());
  ex.bind_param("ln.b", ln_b.data());
  ex.bind_param("w", w.data());
  ex.run();
  EXPECT_EQ(ex.output_type(2).dtype, sizeof(T) == 4 ? DType::f32 : DType::f64);
  std::vector<double> xd(x.begin(), x.end());
  return {read<T>(ex, 0), read<T>(ex, 1), read<T>(ex, 2), xd};
}

TEST(Executor, AttentionInF32MatchesF64) {
  Module m = verified_module(kAttention);
  const auto r64 = run_attention<double>(m);
  const auto r32 = run_attention<float>(m);
  expect_near_all(r32[0], r64[0], 1e-5);
  expect_near_all(r32[1], r64[1], 1e-5);
  EXPECT_EQ(r64[2], (std::vector<double>{3, 1, 4, 1, 5, 9, 2, 6}));
  // Causality by hand: the first token attends only to itself, so its
  // attention output is its own value vector: out = x + gelu(v) there.
  const std::vector<double>&out = r64[0], &v = r64[1], &x = r64[3];
  for (int b = 0; b < 2; ++b)
    for (int c = 0; c < 8; ++c) {
      const int i = b * 32 + c;  // token 0 of batch b
      const double g = 0.5 * v[i] * (1 + std::tanh(std::sqrt(2 / M_PI) * (v[i] + 0.044715 * v[i] * v[i] * v[i])));
      EXPECT_NEAR(out[i] - x[i], g, 1e-12);
    }
}

// ---------------------------------------------------------------------------
// Errors.

TEST(Executor, UnboundParameterIsNamed) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f32);
  MlpData<float> d;
  ex.bind_param("b1", d.b1.data());
  ex.bind_param("w2", d.w2.data());
  ex.bind_param("b2", d.b2.data());
  ex.bind_input(0, d.x.data());
  ex.bind_input(1, d.targets.data());
  try {
    ex.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "running %w1 = param init=xavier : f32[3,4]: parameter w1 is not bound");
    EXPECT_EQ(e.location().line, 3);
  }
}

TEST(Executor, UnboundInputIsNamed) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f32);
  MlpData<float> d;
  d.bind(ex);
  ex.bind_input(1, nullptr);
  try {
    ex.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "running @mlp: argument 1 (%targets: i32[2]) is not bound");
  }
}

TEST(Executor, BadNamesAndIndicesAreErrors) {
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f32);
  float w = 0;
  try {
    ex.bind_param("w3", &w);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cpu executor: @mlp has no parameter named w3");
  }
  try {
    ex.bind_input(2, &w);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cpu executor: @mlp has 2 arguments, no argument 2");
  }
  try {
    ex.bind_output(-1, &w);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "cpu executor: @mlp has 2 results, no result -1");
  }
}

TEST(Executor, KernelErrorNamesTheOp) {
  const char* text = R"(
graph @g(%ids: i32[2]) -> f32[2,4] {
  %wte = param init=normal(0.02) : f32[5,4]
  %e = embedding %wte, %ids : f32[2,4]
  return %e
}
)";
  Module m = verified_module(text);
  Executor ex(m.graph(), m.binding(), DType::f32);
  std::vector<float> wte(20, 0.f);
  std::vector<int32_t> ids = {1, 7};
  ex.bind_param("wte", wte.data());
  ex.bind_input(0, ids.data());
  try {
    ex.run();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "running %e = embedding %wte, %ids : f32[2,4]: embedding: index 7 at position 1 is out of range [0, 5)");
    EXPECT_EQ(e.location().line, 4);
  }
  // The executor stays usable after a failed run.
  ids[1] = 4;
  ex.run();
}

TEST(Executor, CallsAreRejectedWhenCompiling) {
  const char* text = R"(
func @f(%x: f32[2]) -> f32[2] {
  %y = relu %x : f32[2]
  return %y
}
graph @g(%x: f32[2]) -> f32[2] {
  %y = call @f(%x) scope="f" : f32[2]
  return %y
}
)";
  Module m = verified_module(text);
  try {
    Executor ex(m.graph(), m.binding(), DType::f32);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "compiling %y = call @f(%x) scope=\"f\" : f32[2]: no cpu kernel for call in f32");
  }
}

// ---------------------------------------------------------------------------
// No allocation in run().

TEST(Executor, RunAllocatesNothing) {
  // Ops whose kernels allocate nothing themselves (softmax's per-thread
  // scratch is allocated on its first call, hence the warm-up run), so that
  // every allocation counted would be the executor's.
  const char* text = R"(
graph @g(%ids: i32[4,8], %targets: i32[4,8]) -> (f32[], f32[4,8,16]) {
  %wte = param init=normal(0.02) : f32[32,16]
  %h = embedding %wte, %ids : f32[4,8,16]
  %r = relu %h : f32[4,8,16]
  %p = softmax %r axis=-1 : f32[4,8,16]
  %flat = reshape %p shape=[32,16] : f32[32,16]
  %lo = slice %flat axis=0 start=0 end=16 : f32[16,16]
  %hi = slice %flat axis=0 start=16 end=32 : f32[16,16]
  %both = concat %hi, %lo axis=0 : f32[32,16]
  %logits = reshape %both shape=[4,8,16] : f32[4,8,16]
  %loss = cross_entropy %logits, %targets : f32[]
  return %loss, %p
}
)";
  Module m = verified_module(text);
  Executor ex(m.graph(), m.binding(), DType::f32);
  std::vector<float> wte(32 * 16);
  for (size_t i = 0; i < wte.size(); ++i) wte[i] = 0.01f * static_cast<float>(i % 17);
  std::vector<int32_t> ids(32), targets(32);
  for (int i = 0; i < 32; ++i) {
    ids[i] = (i * 7) % 32;
    targets[i] = (i * 5) % 16;
  }
  ex.bind_param("wte", wte.data());
  ex.bind_input(0, ids.data());
  ex.bind_input(1, targets.data());
  ex.run();  // warm-up: kernels' own per-thread scratch
  // The counter sees allocations (building an executor makes many) ...
  EXPECT_GT(allocations_in([&] { Executor other(m.graph(), m.binding(), DType::f32); }), 0);
  // ... and a run makes none.
  EXPECT_EQ(allocations_in([&] { ex.run(); }), 0);
  EXPECT_EQ(allocations_in([&] { ex.run(); }), 0);
  EXPECT_TRUE(std::isfinite(*static_cast<const float*>(ex.output(0))));
}

TEST(Executor, RunAllocatesNoMoreThanItsKernels) {
  // matmul and add plan their broadcast in small vectors on every call (the
  // kernels' own, reused by malloc at once, never large): the executor adds
  // nothing on top of what the same kernels allocate when called alone (less:
  // the bias adds folded into their GEMMs do not run).
  Module m = verified_module(kMlp);
  Executor ex(m.graph(), m.binding(), DType::f32);
  MlpData<float> d;
  d.bind(ex);
  ex.run();
  const int64_t in_run = allocations_in([&] { ex.run(); });

  const Function& f = m.graph();
  std::vector<std::vector<std::byte>> buffers(f.values.size());
  for (size_t v = 0; v < f.values.size(); ++v)
    buffers[v].assign(static_cast<size_t>(f.type_of(v).bytes()), std::byte{0});
  struct Call {
    Kernel kernel;
    OpAttrs attrs;
    std::vector<TensorType> in_types, out_types;
    std::vector<const void*> in;
    std::vector<void*> out;
  };
  std::vector<Call> calls;
  for (const Op& op : f.ops) {
    if (op.kind == OpKind::param) continue;
    Call c{forward_kernel(op.kind, DType::f32), evaluate_attrs(op, m.binding()), {}, {}, {}, {}};
    for (ValueId u : op.operands) {
      c.in_types.push_back(f.type_of(u));
      c.in.push_back(buffers[u].data());
    }
    for (ValueId r : op.results) {
      c.out_types.push_back(f.type_of(r));
      c.out.push_back(buffers[r].data());
    }
    calls.push_back(std::move(c));
  }
  auto call_all = [&] {
    for (const Call& c : calls) c.kernel(KernelArgs{c.in_types, c.in, c.out_types, c.out, c.attrs});
  };
  call_all();
  const int64_t in_kernels = allocations_in(call_all);
  EXPECT_LE(in_run, in_kernels);
  RecordProperty("allocations_per_run", std::to_string(in_run));
}

using RankResults = std::vector<std::vector<float>>;

/// Runs rank r's program (`program(r)`, taking %x and a scale) on two ranks
/// of a tensor-parallel stage, one thread each, rank 0 with scale 1 and
/// rank 1 with 10; returns each rank's results.
std::array<RankResults, 2> on_two_ranks(const std::function<std::string(int rank)>& program,
                                        const std::vector<float>& x) {
  ThreadGroup group(2);
  ThreadGroup::Rank ranks[2] = {{group, 0}, {group, 1}};
  std::array<RankResults, 2> got;
  std::thread threads[2];
  for (int r = 0; r < 2; ++r)
    threads[r] = std::thread([&, r] {
      Module m = verified_module(program(r));
      ExecutorOptions options;
      options.tensor_parallel = &ranks[r];
      Executor ex(m.graph(), m.binding(), DType::f32, options);
      const float scale = r == 0 ? 1.0f : 10.0f;
      ex.bind_input(0, x.data());
      ex.bind_input(1, &scale);
      ex.run();
      for (int i = 0; i < static_cast<int>(m.graph().returns.size()); ++i) {
        const auto* out = static_cast<const float*>(ex.output(i));
        got[static_cast<size_t>(r)].emplace_back(out, out + ex.output_type(i).numel());
      }
    });
  for (std::thread& t : threads) t.join();
  return got;
}

// Every rank's tp_reduce gets the sum of both ranks' partial values.
TEST(Executor, TpReduceSumsThePartialValuesOfEveryRank) {
  const auto got = on_two_ranks(
      [](int) {
        return R"(
graph @g(%x: f32[2,3], %scale: f32[]) -> f32[2,3] {
  %shared = tp_copy %x : f32[2,3]
  %part = mul %shared, %scale : f32[2,3]
  %y = tp_reduce %part : f32[2,3]
  return %y
}
)";
      },
      {1, 2, 3, 4, 5, 6});
  for (const RankResults& rank : got) EXPECT_EQ(rank[0], (std::vector<float>{11, 22, 33, 44, 55, 66}));
}

// Sequence parallelism's ops over 3 tokens on the middle axis (rank 0 holds
// token 0, rank 1 tokens 1 and 2): a part taken and gathered back is the
// whole; partial values reduce-scattered and gathered are the ranks' sum.
TEST(Executor, SequenceParallelOpsMoveEachRanksPartOfTheTokens) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};  // [2, 3, 2]
  const auto got = on_two_ranks(
      [](int r) {
        return fmt::format(R"(
graph @g(%x: f32[2,3,2], %scale: f32[]) -> (f32[2,3,2], f32[2,3,2], {1}) {{
  %part = tp_scatter %x {0} : {1}
  %back = tp_gather %part {0} : f32[2,3,2]
  %partial = mul %x, %scale : f32[2,3,2]
  %sum.part = tp_reduce_scatter %partial {0} : {1}
  %sum = tp_all_gather %sum.part {0} : f32[2,3,2]
  return %back, %sum, %sum.part
}}
)",
                           fmt::format("axis=1 size=3 rank={} ranks=2", r), r == 0 ? "f32[2,1,2]" : "f32[2,2,2]");
      },
      x);
  std::vector<float> eleven;
  for (float v : x) eleven.push_back(11 * v);
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(got[r][0], x) << "rank " << r;
    EXPECT_EQ(got[r][1], eleven) << "rank " << r;
  }
  EXPECT_EQ(got[0][2], (std::vector<float>{11, 22, 77, 88}));
  EXPECT_EQ(got[1][2], (std::vector<float>{33, 44, 55, 66, 99, 110, 121, 132}));
}

// An op compiled for one rank refuses to run as another.
TEST(Executor, SequenceParallelOpsCheckTheirRank) {
  Module m = verified_module(R"(
graph @g(%x: f32[4,2]) -> f32[2,2] {
  %y = tp_scatter %x axis=0 size=4 rank=1 ranks=2 : f32[2,2]
  return %y
}
)");
  backend::SingleRankGroup alone;
  ExecutorOptions options;
  options.tensor_parallel = &alone;
  Executor ex(m.graph(), m.binding(), DType::f32, options);
  const std::vector<float> x(8, 1.0f);
  ex.bind_input(0, x.data());
  try {
    ex.run();
    FAIL() << "ran as the wrong rank";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "running %y = tp_scatter %x axis=0 size=4 rank=1 ranks=2 : f32[2,2]: tp_scatter was compiled for rank 1 "
              "of 2 and runs as rank 0 of 1");
  }
}

TEST(Executor, TpReduceWithoutAGroupSaysWhereItRuns) {
  Module m = verified_module(R"(
graph @g(%x: f32[4]) -> f32[4] {
  %y = tp_reduce %x : f32[4]
  return %y
}
)");
  Executor ex(m.graph(), m.binding(), DType::f32);
  const std::vector<float> x = {1, 2, 3, 4};
  ex.bind_input(0, x.data());
  try {
    ex.run();
    FAIL() << "ran without a group";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "running %y = tp_reduce %x : f32[4]: tp_reduce needs the ranks of a "
              "tensor-parallel stage, and this function runs on no such rank; run it from a plan compiled with "
              "--tensor-parallel");
  }
}

}  // namespace
}  // namespace pf::cpu
