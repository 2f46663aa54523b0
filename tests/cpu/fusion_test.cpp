// Bias adds folded into their GEMMs: which adds qualify, and the fused results against float64 sums.
#include "backends/cpu/fusion.h"

#include <gtest/gtest.h>

#include <cmath>
#include <utility>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/executor.h"
#include "backends/common/memory_plan.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "tests/verified_module.h"

namespace pf::cpu {
namespace {

/// The adds of @g that find_bias_fusions folds, by result name.
std::vector<std::string> folded(const std::string& text) {
  Module m = verified_module(text);
  const Function& f = m.graph();
  std::vector<std::string> names;
  for (const BiasFusion& fused : find_bias_fusions(f, {})) {
    EXPECT_EQ(f.ops[fused.matmul].kind, OpKind::matmul);
    names.push_back(f.values[f.ops[fused.add].results[0]].name);
  }
  return names;
}

TEST(BiasFusion, FoldsABiasAddInEitherOperandOrder) {
  EXPECT_EQ(folded(R"(
graph @g(%x: f32[2,5,3], %w: f32[3,4], %b: f32[4]) -> f32[2,5,4] {
  %mm = matmul %x, %w : f32[2,5,4]
  %y = add %b, %mm : f32[2,5,4]
  %z = relu %y : f32[2,5,4]
  return %z
}
)"),
            std::vector<std::string>{"y"});
}

TEST(BiasFusion, FoldsABatchedProductAndATransposedOne) {
  EXPECT_EQ(folded(R"(
graph @g(%q: f32[2,3,4,5], %k: f32[2,3,6,5], %b: f32[6], %w: f32[6,5], %c: f32[6]) -> (f32[2,3,4,6], f32[2,3,4,6]) {
  %s = matmul %q, %k transpose_b=true : f32[2,3,4,6]
  %y = add %s, %b : f32[2,3,4,6]
  %t = matmul %q, %w transpose_b=true : f32[2,3,4,6]
  %u = add %t, %c : f32[2,3,4,6]
  return %y, %u
}
)"),
            (std::vector<std::string>{"y", "u"}));
}

TEST(BiasFusion, LeavesAddsWhoseProductIsNeededOrWhoseOperandIsNoRowBias) {
  // %mm is read twice, %p is returned, %e's "bias" spans the whole product,
  // %late is computed after the product: none is folded.
  EXPECT_EQ(folded(R"(
graph @g(%x: f32[4,3], %w: f32[3,4], %b: f32[4], %full: f32[4,4]) -> (f32[4,4], f32[4,4], f32[4,4], f32[4,4], f32[4,4], f32[4,4]) {
  %mm = matmul %x, %w : f32[4,4]
  %y = add %mm, %b : f32[4,4]
  %r = relu %mm : f32[4,4]
  %p = matmul %x, %w : f32[4,4]
  %z = add %p, %b : f32[4,4]
  %q = matmul %x, %w : f32[4,4]
  %e = add %q, %full : f32[4,4]
  %n = matmul %x, %w : f32[4,4]
  %late = neg %b : f32[4]
  %o = add %n, %late : f32[4,4]
  return %y, %r, %p, %z, %e, %o
}
)"),
            std::vector<std::string>{});
}

/// The pairs of @g that find_gemm_pairs lets run at once, by result names.
std::vector<std::pair<std::string, std::string>> paired(const std::string& text) {
  Module m = verified_module(text);
  const Function& f = m.graph();
  std::vector<ValueId> alias_of(f.values.size(), -1);
  for (const Op& op : f.ops)
    if (op.kind == OpKind::reshape) alias_of[op.results[0]] = op.operands[0];
  std::vector<ValueId> root;
  std::vector<std::vector<ValueId>> members;
  backend::alias_groups(alias_of, root, members);
  std::vector<std::pair<std::string, std::string>> names;
  for (const GemmPair& p : find_gemm_pairs(f, m.binding(), root, find_bias_fusions(f, alias_of)))
    names.emplace_back(f.values[f.ops[p.first].results[0]].name, f.values[f.ops[p.second].results[0]].name);
  return names;
}

TEST(GemmPair, PairsTheTwoGradientsOfALinearLayerAcrossReshapes) {
  // A linear layer's backward as autodiff writes it: the input gradient,
  // reshapes of the upstream gradient and the input, the weight gradient.
  EXPECT_EQ(paired(R"(
graph @g(%dy: f32[4,64,256], %w: f32[128,256], %x: f32[4,64,128]) -> (f32[4,64,128], f32[128,256]) {
  %dx = matmul %dy, %w transpose_b=true : f32[4,64,128]
  %dy.rows = reshape %dy shape=[256,256] : f32[256,256]
  %x.rows = reshape %x shape=[256,128] : f32[256,128]
  %dw = matmul %x.rows, %dy.rows transpose_a=true : f32[128,256]
  return %dx, %dw
}
)"),
            (std::vector<std::pair<std::string, std::string>>{{"dx", "dw"}}));
}

TEST(GemmPair, LeavesDependentSmallAndUnevenProducts) {
  // %b reads %a; %c and %d are under 2^22 multiply-adds; %e has 4 times %f's.
  EXPECT_EQ(paired(R"(
graph @g(%x: f32[256,256], %s: f32[64,64], %y: f32[1024,256]) -> (f32[256,256], f32[64,64], f32[64,64], f32[1024,256], f32[256,256]) {
  %a = matmul %x, %x : f32[256,256]
  %b = matmul %a, %x : f32[256,256]
  %c = matmul %s, %s : f32[64,64]
  %d = matmul %s, %s transpose_a=true : f32[64,64]
  %e = matmul %y, %x : f32[1024,256]
  %f = matmul %x, %x transpose_b=true : f32[256,256]
  return %b, %c, %d, %e, %f
}
)"),
            (std::vector<std::pair<std::string, std::string>>{}));
}

// Linear layers large enough that GEMMs split over two threads (one product
// per batch of 32 in the last), fused, in f32 on 1 and 2 threads against a
// float64 sum.
const char* kLinear = R"(
graph @g(%x: f32[8,64,96], %w: f32[96,200], %b: f32[200], %v: f32[4,8,64,96], %wb: f32[4,8,96,200]) -> (f32[8,64,200], f32[4,8,64,200], f32[4,8,64,200]) {
  %mm = matmul %x, %w : f32[8,64,200]
  %y = add %mm, %b : f32[8,64,200]
  %scores = matmul %v, %w : f32[4,8,64,200]
  %s = add %b, %scores : f32[4,8,64,200]
  %per_batch = matmul %v, %wb : f32[4,8,64,200]
  %t = add %per_batch, %b : f32[4,8,64,200]
  return %y, %s, %t
}
)";

class BiasFusionRun : public ::testing::TestWithParam<int> {
 protected:
  void TearDown() override { set_cpu_threads(1); }
};

TEST_P(BiasFusionRun, MatchesAFloat64Sum) {
  set_cpu_threads(GetParam());
  Module m = verified_module(kLinear);
  ExecutorOptions options;
  options.profile = true;
  options.caller_outputs = {1};  // one fused result written into the caller's buffer, one into the arena
  Executor ex(m.graph(), m.binding(), DType::f32, options);
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  auto fill = [&](std::vector<float>& v, size_t n) {
    v.resize(n);
    for (float& e : v) e = normal(rng);
  };
  std::vector<float> x, w, b, v, wb;
  fill(x, 8 * 64 * 96);
  fill(w, 96 * 200);
  fill(b, 200);
  fill(v, 4 * 8 * 64 * 96);
  fill(wb, 4 * 8 * 96 * 200);
  ex.bind_input(0, x.data());
  ex.bind_input(1, w.data());
  ex.bind_input(2, b.data());
  ex.bind_input(3, v.data());
  ex.bind_input(4, wb.data());
  std::vector<float> s(4 * 8 * 64 * 200, NAN);
  ex.bind_output(1, s.data());
  ex.run();

  const auto* y = static_cast<const float*>(ex.output(0));
  // Rows of `in` times w, or times the batch's own matrix of wb every 64 rows.
  auto check = [&](const float* in, const float* out, int64_t rows, const char* what, bool per_batch = false) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < 200; ++j) {
        const float* rhs = per_batch ? wb.data() + (r / 64) * 96 * 200 : w.data();
        double want = b[j];
        for (int64_t i = 0; i < 96; ++i) want += static_cast<double>(in[r * 96 + i]) * rhs[i * 200 + j];
        ASSERT_NEAR(out[r * 200 + j], want, 1e-4 * (1 + std::fabs(want))) << what << " row " << r << " col " << j;
      }
  };
  check(x.data(), y, 8 * 64, "y");
  check(v.data(), s.data(), 4 * 8 * 64, "s");
  check(v.data(), static_cast<const float*>(ex.output(2)), 4 * 8 * 64, "t", true);

  // The adds ran inside the matmuls, which read the bias as a third operand.
  EXPECT_EQ(ex.op_seconds()[static_cast<size_t>(OpKind::add)], 0.0);
  const std::vector<backend::OpTime> ops = ex.op_times();
  ASSERT_EQ(ops.size(), 3u);
  EXPECT_EQ(ops[0].text, "matmul f32[8,64,96] x f32[96,200] x f32[200]");
  EXPECT_EQ(ops[1].text, "matmul f32[4,8,64,96] x f32[96,200] x f32[200]");
  EXPECT_EQ(ops[2].text, "matmul f32[4,8,64,96] x f32[4,8,96,200] x f32[200]");
}

INSTANTIATE_TEST_SUITE_P(Threads, BiasFusionRun, ::testing::Values(1, 2));

}  // namespace
}  // namespace pf::cpu
