// Pipeforge's AVX-512 sgemm against a float64 product: every transpose, edges of every block, strided operands,
// accumulation; gemm() giving the same numbers whichever kernel runs it, and the same bits on one and two threads.
#include "backends/cpu/sgemm_avx512.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "backends/cpu/blas.h"

namespace pf::cpu {
namespace {

struct Shape {
  int64_t m, n, k;
};

/// Operands stored with `pad` unused floats after every row, so that a
/// kernel reading the leading dimension wrong reads garbage.
struct Operands {
  bool trans_a, trans_b;
  Shape s;
  int64_t lda, ldb, ldc;
  std::vector<float> a, b;

  Operands(bool ta, bool tb, Shape shape, int64_t pad, uint32_t seed) : trans_a(ta), trans_b(tb), s(shape) {
    lda = (ta ? s.m : s.k) + pad;
    ldb = (tb ? s.k : s.n) + pad;
    ldc = s.n + pad;
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    a.resize(static_cast<size_t>((ta ? s.k : s.m) * lda));
    b.resize(static_cast<size_t>((tb ? s.n : s.k) * ldb));
    for (float& x : a) x = dist(gen);
    for (float& x : b) x = dist(gen);
  }
  double at_a(int64_t i, int64_t kk) const { return a[static_cast<size_t>(trans_a ? kk * lda + i : i * lda + kk)]; }
  double at_b(int64_t kk, int64_t j) const { return b[static_cast<size_t>(trans_b ? j * ldb + kk : kk * ldb + j)]; }
};

/// Checks c (row stride ldc) against start + op(A) op(B) in float64, each
/// element within k float epsilons of the sum of its products' magnitudes
/// (a misplaced or missing term is off by about that sum itself). The
/// padding after each row must be untouched: still its start value, or
/// NaN where C started as NaN (no start given).
void expect_product(const Operands& o, const std::vector<float>& start, const std::vector<float>& c) {
  for (int64_t i = 0; i < o.s.m; ++i) {
    for (int64_t j = 0; j < o.s.n; ++j) {
      double sum = start.empty() ? 0.0 : start[static_cast<size_t>(i * o.ldc + j)], magnitude = 0.0;
      for (int64_t kk = 0; kk < o.s.k; ++kk) {
        sum += o.at_a(i, kk) * o.at_b(kk, j);
        magnitude += std::fabs(o.at_a(i, kk) * o.at_b(kk, j));
      }
      const double got = c[static_cast<size_t>(i * o.ldc + j)];
      ASSERT_NEAR(got, sum, static_cast<double>(o.s.k) * FLT_EPSILON * (magnitude + 1.0))
          << "C[" << i << "," << j << "] of " << o.s.m << "x" << o.s.n << "x" << o.s.k << (o.trans_a ? " A^T" : "")
          << (o.trans_b ? " B^T" : "");
    }
    for (int64_t j = o.s.n; j < o.ldc; ++j) {
      const size_t at = static_cast<size_t>(i * o.ldc + j);
      ASSERT_TRUE(start.empty() ? std::isnan(c[at]) : c[at] == start[at]) << "padding of row " << i << " written";
    }
  }
}

class Avx512SgemmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!avx512_sgemm_supported()) GTEST_SKIP() << "this CPU has no AVX-512: the kernel is never called";
  }
};

// Shapes around every block edge: one element, less than one register tile,
// exactly one, one more; k across a slice (512) boundary; columns across a
// block of B (512); rows across a block of A (3072).
const Shape kShapes[] = {{1, 1, 1},      {5, 7, 3},      {6, 64, 16},    {7, 65, 17},   {12, 128, 64},
                         {13, 130, 513}, {30, 1100, 40}, {100, 48, 1030}, {3075, 70, 20}};

TEST_F(Avx512SgemmTest, MatchesFloat64ForEveryTransposeAndEdge) {
  uint32_t seed = 1;
  for (const Shape& s : kShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int64_t pad : {0, 3}) {
          const Operands o(ta, tb, s, pad, seed++);
          // Overwriting must not read C: it starts as NaN.
          std::vector<float> c(static_cast<size_t>(s.m * o.ldc), std::numeric_limits<float>::quiet_NaN());
          avx512_sgemm(ta, tb, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, false, c.data(), o.ldc);
          expect_product(o, {}, c);
        }
}

TEST_F(Avx512SgemmTest, AccumulatesIntoC) {
  uint32_t seed = 100;
  for (const Shape& s : {Shape{7, 65, 17}, Shape{13, 130, 513}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 2, seed++);
        std::vector<float> start(static_cast<size_t>(s.m * o.ldc));
        for (size_t i = 0; i < start.size(); ++i) start[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
        std::vector<float> c = start;
        avx512_sgemm(ta, tb, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, true, c.data(), o.ldc);
        expect_product(o, start, c);
      }
}

TEST(SgemmKernelTest, GemmGivesTheSameProductWithEitherKernel) {
  const Shape s{40, 200, 300};
  const Operands o(false, true, s, 0, 7);
  std::vector<float> ours(static_cast<size_t>(s.m * s.n)), openblas(ours.size());
  gemm(false, true, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, ours.data(), o.ldc);
  use_openblas_sgemm(true);
  EXPECT_STREQ(sgemm_kernel_name(), "openblas");
  gemm(false, true, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, openblas.data(), o.ldc);
  use_openblas_sgemm(false);
  expect_product(o, {}, ours);  // ldc = n: no padding
  expect_product(o, {}, openblas);
  EXPECT_STREQ(sgemm_kernel_name(), avx512_sgemm_supported() ? "pipeforge-avx512" : "openblas");
}

// 40 x 80 is split into column blocks of 48 and 32 on two threads: the
// narrow block must take the kernel the whole product took, or its bits
// would differ from one thread's.
TEST(SgemmKernelTest, TwoThreadsGiveOneThreadsBits) {
  const Shape s{40, 80, 1000};
  const Operands o(false, false, s, 0, 11);
  std::vector<float> one(static_cast<size_t>(s.m * s.n)), two(one.size());
  gemm(false, false, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, one.data(), o.ldc);
  set_cpu_threads(2);
  gemm(false, false, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, two.data(), o.ldc);
  set_cpu_threads(1);
  for (size_t i = 0; i < one.size(); ++i) ASSERT_EQ(one[i], two[i]) << "element " << i;
}

}  // namespace
}  // namespace pf::cpu
