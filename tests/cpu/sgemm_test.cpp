// Pipeforge's own sgemms (AVX-512, AVX2, SSE2) and their products of a few rows against a float64 product: every
// transpose, edges of every block, strided operands, accumulation; gemm() giving the same numbers whichever kernel runs it, and the same bits on one
// and two threads. The bf16 products likewise, against the float64 product of the operands rounded to bf16.
#include "backends/cpu/sgemm.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "backends/cpu/blas.h"
#include "ir/dtype.h"

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

using SgemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, bool,
                         float*, int64_t);

struct KernelCase {
  SgemmKernel kernel;
  SgemmFn fn;
};

/// Every own kernel is tested on every CPU that can run it: an AVX-512
/// machine checks all three.
class OwnSgemmTest : public ::testing::TestWithParam<KernelCase> {
 protected:
  void SetUp() override {
    if (cpu_isa_supported() < sgemm_kernel_isa(GetParam().kernel))
      GTEST_SKIP() << "this CPU lacks " << isa_name(sgemm_kernel_isa(GetParam().kernel)) << ": "
                   << sgemm_kernel_label(GetParam().kernel) << " is never called here";
  }
};

INSTANTIATE_TEST_SUITE_P(Kernels, OwnSgemmTest,
                         ::testing::Values(KernelCase{SgemmKernel::avx512, sgemm_avx512},
                                           KernelCase{SgemmKernel::avx2, sgemm_avx2},
                                           KernelCase{SgemmKernel::sse2, sgemm_sse2}),
                         [](const auto& param_info) { return std::string(isa_name(sgemm_kernel_isa(param_info.param.kernel))); });

// Shapes around every kernel's block edges: one element, less than one
// register tile, exactly one (6 x 8, 6 x 16, 6 x 64), one more; k across a
// slice (256, 512) boundary; columns across a block of B (256, 512); rows
// across a block of A (3072).
const Shape kShapes[] = {{1, 1, 1},     {5, 7, 3},     {6, 8, 4},     {6, 16, 8},     {6, 64, 16},
                         {7, 65, 17},   {12, 128, 64}, {13, 130, 513}, {7, 300, 257}, {30, 1100, 40},
                         {100, 48, 1030}, {3075, 70, 20}};

/// `fn` on every shape, layout and padding, against the float64 product of
/// the operands as `exact` gives them (what the kernel multiplies exactly).
void expect_every_transpose_and_edge(SgemmFn fn, uint32_t seed, Operands (*exact)(Operands)) {
  for (const Shape& s : kShapes)
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (int64_t pad : {0, 3}) {
          const Operands o(ta, tb, s, pad, seed++);
          // Overwriting must not read C: it starts as NaN.
          std::vector<float> c(static_cast<size_t>(s.m * o.ldc), std::numeric_limits<float>::quiet_NaN());
          fn(ta, tb, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, false, c.data(), o.ldc);
          expect_product(exact(o), {}, c);
        }
}

Operands as_they_are(Operands o) { return o; }

TEST_P(OwnSgemmTest, MatchesFloat64ForEveryTransposeAndEdge) {
  expect_every_transpose_and_edge(GetParam().fn, 1, as_they_are);
}

TEST_P(OwnSgemmTest, AccumulatesIntoC) {
  uint32_t seed = 100;
  for (const Shape& s : {Shape{7, 65, 17}, Shape{13, 130, 513}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 2, seed++);
        std::vector<float> start(static_cast<size_t>(s.m * o.ldc));
        for (size_t i = 0; i < start.size(); ++i) start[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
        std::vector<float> c = start;
        GetParam().fn(ta, tb, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, true, c.data(), o.ldc);
        expect_product(o, start, c);
      }
}

// The products of a few rows (a token at a time), each instruction set's,
// on shapes around their vector widths (4, 8, 16 floats) and their groups
// of four rows of a transposed B.
class FewRowsTest : public OwnSgemmTest {};

INSTANTIATE_TEST_SUITE_P(Kernels, FewRowsTest,
                         ::testing::Values(KernelCase{SgemmKernel::avx512, sgemm_few_rows_avx512},
                                           KernelCase{SgemmKernel::avx2, sgemm_few_rows_avx2},
                                           KernelCase{SgemmKernel::sse2, sgemm_few_rows_sse2}),
                         [](const auto& param_info) { return std::string(isa_name(sgemm_kernel_isa(param_info.param.kernel))); });

TEST_P(FewRowsTest, MatchesFloat64ForEveryTransposeAndEdge) {
  uint32_t seed = 300;
  for (int64_t m = 1; m <= kSgemmFewRows; ++m)
    for (const Shape& nk : {Shape{0, 1, 1}, Shape{0, 7, 15}, Shape{0, 17, 33}, Shape{0, 65, 3}, Shape{0, 300, 513}})
      for (bool ta : {false, true})
        for (bool tb : {false, true})
          for (bool accumulate : {false, true}) {
            const Shape shape{m, nk.n, nk.k};
            const Operands o(ta, tb, shape, 3, seed++);
            std::vector<float> start(static_cast<size_t>(m * o.ldc), std::numeric_limits<float>::quiet_NaN());
            if (accumulate)
              for (size_t i = 0; i < start.size(); ++i) start[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
            std::vector<float> c = start;
            GetParam().fn(ta, tb, m, nk.n, nk.k, o.a.data(), o.lda, o.b.data(), o.ldb, accumulate, c.data(), o.ldc);
            expect_product(o, accumulate ? start : std::vector<float>{}, c);
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
  EXPECT_STREQ(sgemm_kernel_name(), sgemm_kernel_label(sgemm_kernel_for(cpu_isa(), 4096)));
}

/// gemm() on one thread and on two, for each layout.
struct ThreadRuns {
  std::vector<float> one, two;
};

ThreadRuns on_one_and_two_threads(const Operands& o) {
  ThreadRuns runs{std::vector<float>(static_cast<size_t>(o.s.m * o.ldc)), {}};
  runs.two = runs.one;
  gemm(o.trans_a, o.trans_b, o.s.m, o.s.n, o.s.k, o.a.data(), o.lda, o.b.data(), o.ldb, runs.one.data(), o.ldc);
  set_cpu_threads(2);
  gemm(o.trans_a, o.trans_b, o.s.m, o.s.n, o.s.k, o.a.data(), o.lda, o.b.data(), o.ldb, runs.two.data(), o.ldc);
  set_cpu_threads(1);
  return runs;
}

// Split into column blocks (40 x 80: 48 and 32 columns, the narrow block
// below the AVX-512 tile's width) and into row blocks (200 x 40): every
// block must take the kernel the whole product took, and a kernel's sums
// must not depend on where a block ends, or the bits differ from one
// thread's. Runs under every PF_CPU_ISA in CI (tests/cpu/CMakeLists.txt).
TEST(SgemmKernelTest, TwoThreadsGiveOneThreadsBits) {
  uint32_t seed = 11;
  for (const Shape& s : {Shape{40, 80, 1000}, Shape{200, 40, 300}, Shape{64, 1000, 70}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 0, seed++);
        const ThreadRuns runs = on_one_and_two_threads(o);
        for (size_t i = 0; i < runs.one.size(); ++i)
          ASSERT_EQ(runs.one[i], runs.two[i]) << sgemm_kernel_name() << ", element " << i << " of " << s.m << "x"
                                              << s.n << "x" << s.k << (ta ? " A^T" : "") << (tb ? " B^T" : "");
      }
}

// A product of a few rows reads B unpacked (sgemm_few_rows_*), with other
// sums than the blocked kernels': split into column blocks on two threads
// (1 and 3 rows), each block must still take it; and a product of 17 rows
// (blocked), split into rows 0-15 and row 16, must not send its last row
// that way.
TEST(SgemmKernelTest, FewRowsOnTwoThreadsGiveOneThreadsBits) {
  uint32_t seed = 31;
  for (const Shape& s : {Shape{1, 3000, 800}, Shape{3, 1000, 900}, Shape{17, 16, 8000}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 0, seed++);
        const ThreadRuns runs = on_one_and_two_threads(o);
        expect_product(o, {}, runs.one);
        for (size_t i = 0; i < runs.one.size(); ++i)
          ASSERT_EQ(runs.one[i], runs.two[i]) << sgemm_kernel_name() << ", element " << i << " of " << s.m << "x"
                                              << s.n << "x" << s.k << (ta ? " A^T" : "") << (tb ? " B^T" : "");
      }
}

// OpenBLAS (a comparison setting) promises less: its sums depend on where a
// block's edges fall, so two threads agree with one within rounding only.
TEST(SgemmKernelTest, OpenBlasOnTwoThreadsAgreesWithinRounding) {
  use_openblas_sgemm(true);
  const Operands o(false, false, Shape{40, 80, 1000}, 0, 17);
  const ThreadRuns runs = on_one_and_two_threads(o);
  use_openblas_sgemm(false);
  expect_product(o, {}, runs.one);
  expect_product(o, {}, runs.two);
}

// f64 products run whole on one thread whatever the budget: the same bits.
TEST(SgemmKernelTest, DoubleProductsGiveOneThreadsBitsOnTwo) {
  const Operands o(false, true, Shape{64, 300, 500}, 0, 23);
  const std::vector<double> a(o.a.begin(), o.a.end()), b(o.b.begin(), o.b.end());
  std::vector<double> one(static_cast<size_t>(64 * 300)), two(one.size());
  gemm(false, true, 64, 300, 500, a.data(), o.lda, b.data(), o.ldb, one.data(), 300);
  set_cpu_threads(2);
  gemm(false, true, 64, 300, 500, a.data(), o.lda, b.data(), o.ldb, two.data(), 300);
  set_cpu_threads(1);
  for (size_t i = 0; i < one.size(); ++i) ASSERT_EQ(one[i], two[i]) << "element " << i;
}

// ---- bf16 products: operands rounded to bf16, their exact products summed in f32.

Operands rounded_to_bf16(Operands o) {
  for (float& x : o.a) x = bf16_to_float(bf16_bits(x));
  for (float& x : o.b) x = bf16_to_float(bf16_bits(x));
  return o;
}

/// Both bf16 kernels, each on every CPU that can run it: AVX-512 BF16's
/// dot products, and AMX's tiles.
class Bf16SgemmTest : public ::testing::TestWithParam<KernelCase> {
 protected:
  void SetUp() override {
    const bool runs_here = GetParam().kernel == SgemmKernel::amx_bf16 ? cpu_isa() == CpuIsa::amx : cpu_has_bf16_dot();
    if (!runs_here)
      GTEST_SKIP() << "this CPU lacks " << isa_name(sgemm_kernel_isa(GetParam().kernel))
                   << " bf16 products (or PF_CPU_ISA caps them): " << sgemm_kernel_label(GetParam().kernel)
                   << " is never called here";
  }
};

INSTANTIATE_TEST_SUITE_P(Kernels, Bf16SgemmTest,
                         ::testing::Values(KernelCase{SgemmKernel::avx512_bf16, sgemm_bf16},
                                           KernelCase{SgemmKernel::amx_bf16, sgemm_amx_bf16}),
                         [](const auto& param_info) { return std::string(isa_name(sgemm_kernel_isa(param_info.param.kernel))); });

TEST_P(Bf16SgemmTest, MatchesFloat64OfTheRoundedOperandsForEveryTransposeAndEdge) {
  expect_every_transpose_and_edge(GetParam().fn, 200, rounded_to_bf16);
}

TEST_P(Bf16SgemmTest, AccumulatesIntoC) {
  uint32_t seed = 300;
  for (const Shape& s : {Shape{13, 130, 513}, Shape{45, 70, 1100}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 2, seed++);
        std::vector<float> start(static_cast<size_t>(o.s.m * o.ldc));
        for (size_t i = 0; i < start.size(); ++i) start[i] = 0.25f * static_cast<float>(i % 7) - 0.5f;
        std::vector<float> c = start;
        GetParam().fn(ta, tb, o.s.m, o.s.n, o.s.k, o.a.data(), o.lda, o.b.data(), o.ldb, true, c.data(), o.ldc);
        expect_product(rounded_to_bf16(o), start, c);
      }
}

// More rows than one packed block of A holds at this k (3072 for each
// kernel, AMX's in its first chunk of 1024 steps), so that the rows past it
// are packed and summed anew.
TEST_P(Bf16SgemmTest, RowsPastOnePackedBlockOfA) {
  uint32_t seed = 350;
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const Operands o(ta, tb, Shape{3100, 40, 1100}, 0, seed++);
      std::vector<float> c(static_cast<size_t>(o.s.m * o.ldc), std::numeric_limits<float>::quiet_NaN());
      GetParam().fn(ta, tb, o.s.m, o.s.n, o.s.k, o.a.data(), o.lda, o.b.data(), o.ldb, false, c.data(), o.ldc);
      expect_product(rounded_to_bf16(o), {}, c);
    }
}

// Through gemm(), on the path this CPU takes (the dot products, or rounded
// copies through the f32 kernel: CI runs this file as an AVX2 CPU too).
// bf16 keeps 7 bits after the point: 1 + 2^-8 lies halfway between 1 and
// 1 + 2^-7 and goes to the even one, 1; 1 + 3 * 2^-8, halfway between
// 1 + 2^-7 and 1 + 2^-6, goes to 1 + 2^-6. Outside the scope, f32 again.
TEST(Bf16ProductsTest, GemmRoundsTheOperandsToNearestEvenWithinTheScope) {
  const float a[] = {1.0f + 0x1p-8f, 1.0f + 0x3p-8f}, b[] = {1.0f};
  float c[2] = {};
  {
    const Bf16Products bf16(true);
    EXPECT_TRUE(bf16_products());
    gemm(false, false, 2, 1, 1, a, 1, b, 1, c, 1);
  }
  EXPECT_EQ(c[0], 1.0f) << bf16_kernel_name();
  EXPECT_EQ(c[1], 1.0f + 0x1p-6f) << bf16_kernel_name();
  EXPECT_FALSE(bf16_products());
  gemm(false, false, 2, 1, 1, a, 1, b, 1, c, 1);
  EXPECT_EQ(c[0], a[0]);
  EXPECT_EQ(c[1], a[1]);
}

TEST(Bf16ProductsTest, GemmMatchesFloat64OfTheRoundedOperands) {
  const Bf16Products bf16(true);
  uint32_t seed = 400;
  for (const Shape& s : {Shape{7, 65, 17}, Shape{40, 200, 300}, Shape{100, 48, 1030}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 3, seed++);
        std::vector<float> c(static_cast<size_t>(s.m * o.ldc), std::numeric_limits<float>::quiet_NaN());
        gemm(ta, tb, s.m, s.n, s.k, o.a.data(), o.lda, o.b.data(), o.ldb, c.data(), o.ldc);
        expect_product(rounded_to_bf16(o), {}, c);
      }
}

// The workers of a split product compute as its caller does: a half done
// in f32 would change the bits.
TEST(Bf16ProductsTest, TwoThreadsGiveOneThreadsBits) {
  const Bf16Products bf16(true);
  uint32_t seed = 500;
  for (const Shape& s : {Shape{40, 80, 1000}, Shape{200, 40, 300}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const Operands o(ta, tb, s, 0, seed++);
        const ThreadRuns runs = on_one_and_two_threads(o);
        expect_product(rounded_to_bf16(o), {}, runs.one);
        for (size_t i = 0; i < runs.one.size(); ++i)
          ASSERT_EQ(runs.one[i], runs.two[i]) << bf16_kernel_name() << ", element " << i << " of " << s.m << "x"
                                              << s.n << "x" << s.k << (ta ? " A^T" : "") << (tb ? " B^T" : "");
      }
}

}  // namespace
}  // namespace pf::cpu
