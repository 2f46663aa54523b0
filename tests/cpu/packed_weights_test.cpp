// Weights packed once for the products that read them again: each own kernel's packed product against its
// unpacked one, bit for bit, over every transpose, edge and column offset; gemm() under a PackedWeightsScope
// against gemm() without, on one and two threads; what is packed, when, and how much memory it holds.
#include "backends/cpu/packed_weights.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "backends/cpu/blas.h"

namespace pf::cpu {
namespace {

struct Product {
  bool trans_a, trans_b;
  int64_t m, n, k;
  std::vector<float> a, b;  // dense: lda and ldb are the stored rows' lengths

  Product(bool ta, bool tb, int64_t rows, int64_t cols, int64_t depth, uint32_t seed)
      : trans_a(ta), trans_b(tb), m(rows), n(cols), k(depth) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    a.resize(static_cast<size_t>(m * k));
    b.resize(static_cast<size_t>(k * n));
    for (float& x : a) x = dist(gen);
    for (float& x : b) x = dist(gen);
  }
  int64_t lda() const { return trans_a ? m : k; }
  int64_t ldb() const { return trans_b ? k : n; }
  int64_t b_bytes() const { return static_cast<int64_t>(sizeof(float) * b.size()); }

  std::vector<float> gemm_now() const {
    std::vector<float> c(static_cast<size_t>(m * n));
    gemm(trans_a, trans_b, m, n, k, a.data(), lda(), b.data(), ldb(), c.data(), n);
    return c;
  }
};

void expect_same_bits(const std::vector<float>& want, const std::vector<float>& got, const char* what) {
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(want[i], got[i]) << what << ", element " << i;
}

class PackedKernelTest : public ::testing::TestWithParam<SgemmKernel> {
 protected:
  void SetUp() override {
    if (cpu_isa_supported() < sgemm_kernel_isa(GetParam()))
      GTEST_SKIP() << "this CPU lacks " << isa_name(sgemm_kernel_isa(GetParam()));
    if (GetParam() == SgemmKernel::avx512_bf16 && !cpu_has_bf16_dot()) GTEST_SKIP() << "this CPU lacks AVX-512 BF16";
  }
};

INSTANTIATE_TEST_SUITE_P(Kernels, PackedKernelTest,
                         ::testing::Values(SgemmKernel::avx512, SgemmKernel::avx2, SgemmKernel::sse2,
                                           SgemmKernel::avx512_bf16, SgemmKernel::amx_bf16),
                         [](const auto& param_info) {
                           return param_info.param == SgemmKernel::avx512_bf16
                                      ? std::string("bf16")
                                      : std::string(isa_name(sgemm_kernel_isa(param_info.param)));
                         });

using SgemmFn = void (*)(bool, bool, int64_t, int64_t, int64_t, const float*, int64_t, const float*, int64_t, bool,
                         float*, int64_t);

SgemmFn unpacked(SgemmKernel kernel) {
  switch (kernel) {
    case SgemmKernel::avx512: return sgemm_avx512;
    case SgemmKernel::avx2: return sgemm_avx2;
    case SgemmKernel::avx512_bf16: return sgemm_bf16;
    case SgemmKernel::amx_bf16: return sgemm_amx_bf16;
    default: return sgemm_sse2;
  }
}

// The whole product, and its columns cut at every tile boundary into two
// blocks (as two threads cut it), each reading the packed B from its first
// column: the unpacked kernel's bits in every case. Shapes cross a tile, a
// block of columns (kNc) and a slice of k (kKc) of every kernel.
TEST_P(PackedKernelTest, GivesTheUnpackedKernelsBits) {
  const SgemmPackedOps& ops = sgemm_packed_ops(GetParam());
  uint32_t seed = 1;
  for (const auto& [m, n, k] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {6, 64, 16}, {7, 65, 17}, {13, 130, 513}, {32, 600, 1100}, {40, 1100, 40}})
    for (bool ta : {false, true})
      for (bool tb : {false, true})
        for (bool accumulate : {false, true}) {
          const Product p(ta, tb, m, n, k, seed++);
          std::vector<float> want(static_cast<size_t>(m * n), 0.5f), got = want;
          unpacked(GetParam())(ta, tb, m, n, k, p.a.data(), p.lda(), p.b.data(), p.ldb(), accumulate, want.data(), n);
          AlignedFloats packed = aligned_floats(ops.floats(n, k));
          // Packed in two ranges of k, as the kernel threads pack it.
          const int64_t half = (k / 2 + ops.slice_k - 1) / ops.slice_k * ops.slice_k;
          ops.pack(tb, p.b.data(), p.ldb(), n, k, 0, std::min(half, k), packed.get());
          if (half < k) ops.pack(tb, p.b.data(), p.ldb(), n, k, half, k, packed.get());
          ops.product(ta, m, n, k, p.a.data(), p.lda(), PackedB{packed.get(), ops.padded_cols(n), 0}, accumulate,
                      got.data(), n);
          expect_same_bits(want, got, "whole");
          for (int64_t cut = ops.tile_cols; cut < n; cut += ops.tile_cols) {
            std::vector<float> blocks(static_cast<size_t>(m * n), 0.5f);
            const PackedB left{packed.get(), ops.padded_cols(n), 0}, right{packed.get(), ops.padded_cols(n), cut};
            ops.product(ta, m, cut, k, p.a.data(), p.lda(), left, accumulate, blocks.data(), n);
            ops.product(ta, m, n - cut, k, p.a.data(), p.lda(), right, accumulate, blocks.data() + cut, n);
            expect_same_bits(want, blocks, "in two blocks of columns");
          }
        }
}

// A weight of more floats than kSgemmStreamFloats (a stage's, larger than
// the caches) is packed by non-temporal stores (AVX-512's and AVX2's rows,
// the bf16 kernel's pairs; SSE2's rows fill half a line): the same panels, so the unpacked kernel's bits, whole and
// from a column past the first tile; packed in two ranges of k on two
// threads, as a device's threads pack it.
TEST_P(PackedKernelTest, PacksAWeightLargerThanTheCachesToTheSamePanels) {
  const SgemmPackedOps& ops = sgemm_packed_ops(GetParam());
  const int64_t m = 5, n = 1088, k = 2100;
  ASSERT_GT(ops.floats(n, k), kSgemmStreamFloats);
  const Product p(false, false, m, n, k, 7);
  std::vector<float> want(static_cast<size_t>(m * n)), got(want.size()), right(want.size());
  unpacked(GetParam())(false, false, m, n, k, p.a.data(), k, p.b.data(), n, false, want.data(), n);
  AlignedFloats packed = aligned_floats(ops.floats(n, k));
  const int64_t half = (k / 2 + ops.slice_k - 1) / ops.slice_k * ops.slice_k;
  std::thread other([&] { ops.pack(false, p.b.data(), n, n, k, half, k, packed.get()); });
  ops.pack(false, p.b.data(), n, n, k, 0, half, packed.get());
  other.join();
  ops.product(false, m, n, k, p.a.data(), k, PackedB{packed.get(), ops.padded_cols(n), 0}, false, got.data(), n);
  expect_same_bits(want, got, "whole");
  const int64_t cut = ops.tile_cols;
  ops.product(false, m, n - cut, k, p.a.data(), k, PackedB{packed.get(), ops.padded_cols(n), cut}, false,
              right.data() + cut, n);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t j = cut; j < n; ++j)
      ASSERT_EQ(want[static_cast<size_t>(r * n + j)], right[static_cast<size_t>(r * n + j)])
          << "from column " << cut << ", element (" << r << ", " << j << ")";
}

// gemm() reading a watched B packed gives the bits of gemm() without, on
// one thread and on two (split by columns at the tile's width, or by rows),
// f32 products and bf16 ones, and packs each B once per layout however
// often it is read. Runs under every PF_CPU_ISA in CI.
TEST(PackedWeightsTest, GemmGivesTheSameBitsPackedOnOneAndTwoThreads) {
  uint32_t seed = 50;
  for (const auto& [bf16, threads] : std::vector<std::pair<bool, int>>{{false, 1}, {false, 2}, {true, 1}, {true, 2}})
    for (const auto& [m, n, k] : std::vector<std::array<int64_t, 3>>{{32, 700, 600}, {300, 100, 90}, {9, 64, 2000}})
      for (bool ta : {false, true})
        for (bool tb : {false, true}) {
          // Without an own bf16 kernel here, rounded copies of the
          // operands (never watched) take the f32 kernel.
          if (bf16 && !bf16_products_packed()) continue;
          const Product p(ta, tb, m, n, k, seed++);
          const Bf16Products products(bf16);
          const std::vector<float> want = p.gemm_now();
          set_cpu_threads(threads);
          PackedWeights weights;
          weights.watch(p.b.data(), p.b_bytes());
          std::vector<float> first, second;
          {
            const PackedWeightsScope scope(&weights);
            first = p.gemm_now();
            const int64_t packed = weights.bytes();
            EXPECT_GE(packed, p.b_bytes() / (bf16 ? 2 : 1)) << m << "x" << n << "x" << k;  // bf16: two steps a pair
            second = p.gemm_now();
            EXPECT_EQ(weights.bytes(), packed) << "packed again on the second read";
          }
          set_cpu_threads(1);
          expect_same_bits(want, first, "first read");
          expect_same_bits(want, second, "second read");
        }
}

TEST(PackedWeightsTest, BiasAndAccumulationStartWhereTheUnpackedProductStarts) {
  const Product p(false, true, 40, 300, 200, 7);
  std::vector<float> bias(300);
  for (size_t j = 0; j < bias.size(); ++j) bias[j] = 0.01f * static_cast<float>(j);
  std::vector<float> want(40 * 300, 0.25f), got = want;
  gemm_bias(false, true, 40, 300, 200, p.a.data(), 200, p.b.data(), 200, bias.data(), want.data(), 300);
  gemm_accumulate(false, true, 40, 300, 200, p.a.data(), 200, p.b.data(), 200, want.data(), 300);
  PackedWeights weights;
  weights.watch(p.b.data(), p.b_bytes());
  const PackedWeightsScope scope(&weights);
  gemm_bias(false, true, 40, 300, 200, p.a.data(), 200, p.b.data(), 200, bias.data(), got.data(), 300);
  gemm_accumulate(false, true, 40, 300, 200, p.a.data(), 200, p.b.data(), 200, got.data(), 300);
  EXPECT_GT(weights.bytes(), 0);
  expect_same_bits(want, got, "bias, then accumulated");
}

TEST(PackedWeightsTest, PacksOnlyWatchedOperandsOfBlockedProductsInScope) {
  const Product p(false, false, 32, 256, 128, 9);
  PackedWeights weights;
  p.gemm_now();
  EXPECT_EQ(weights.bytes(), 0) << "no scope";
  const PackedWeightsScope scope(&weights);
  p.gemm_now();
  EXPECT_EQ(weights.bytes(), 0) << "nothing watched";
  weights.watch(p.b.data(), p.b_bytes() - 4);
  p.gemm_now();
  EXPECT_EQ(weights.bytes(), 0) << "B reaches past the watched range";
  weights.watch(p.b.data(), p.b_bytes());
  const Product few(false, false, 4, 256, 128, 10);
  gemm(false, false, 4, 256, 128, few.a.data(), 128, p.b.data(), 256, std::vector<float>(4 * 256).data(), 256);
  EXPECT_EQ(weights.bytes(), 0) << "a product of a few rows reads B unpacked";
  p.gemm_now();
  const int64_t one = weights.bytes();
  EXPECT_GE(one, p.b_bytes());
  // The same weight read transposed (an input gradient) is another layout.
  gemm(false, true, 32, 128, 256, p.a.data(), 256, p.b.data(), 256, std::vector<float>(32 * 128).data(), 128);
  EXPECT_GT(weights.bytes(), one);
  const int64_t both = weights.bytes();
  weights.invalidate();
  EXPECT_EQ(weights.bytes(), both) << "the memory stays for the next step";
  weights.release();
  EXPECT_EQ(weights.bytes(), 0);
}

// A step's weights change in the update; the next step's products must read
// them as they are then, packed again into the memory the copies held.
TEST(PackedWeightsTest, InvalidatedCopiesArePackedAgainFromTheWeightsAsTheyAreNow) {
  Product p(false, true, 32, 256, 128, 11);
  PackedWeights weights;
  const PackedWeightsScope scope(&weights);
  weights.watch(p.b.data(), p.b_bytes());
  const std::vector<float> before = p.gemm_now();
  const int64_t held = weights.bytes();
  weights.invalidate();
  for (float& x : p.b) x *= 0.5f;
  const std::vector<float> unwatched = p.gemm_now();  // read unpacked: nothing is watched now
  weights.watch(p.b.data(), p.b_bytes());
  const std::vector<float> after = p.gemm_now();
  EXPECT_EQ(weights.bytes(), held) << "packed into the same memory";
  expect_same_bits(unwatched, after, "after the weights changed");
  for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ(after[i], 0.5f * before[i]) << i;
}

// What a waiting rank does meanwhile: the copies an earlier step read,
// packed again from the weights as they are now, a slice of k at a time,
// so that the next product finds them packed.
TEST(PackedWeightsTest, PacksAheadWhatAnEarlierStepRead) {
  Product p(false, false, 32, 600, 1100, 13);
  PackedWeights weights;
  const PackedWeightsScope scope(&weights);
  EXPECT_FALSE(weights.pack_ahead()) << "nothing read yet";
  weights.watch(p.b.data(), p.b_bytes());
  const std::vector<float> before = p.gemm_now();
  EXPECT_FALSE(weights.pack_ahead()) << "packed already";
  weights.invalidate();
  EXPECT_FALSE(weights.pack_ahead()) << "the weight is not watched";
  for (float& x : p.b) x *= 0.5f;
  weights.watch(p.b.data(), p.b_bytes());
  const int64_t slice_k = sgemm_packed_ops(sgemm_kernel_for(cpu_isa(), p.n)).slice_k;
  int64_t slices = 0;
  while (weights.pack_ahead()) ++slices;
  EXPECT_EQ(slices, (p.k + slice_k - 1) / slice_k);
  const std::vector<float> after = p.gemm_now();
  for (size_t i = 0; i < before.size(); ++i) ASSERT_EQ(after[i], 0.5f * before[i]) << i;
  // A product reading a copy packed ahead in part packs the rest.
  weights.invalidate();
  for (float& x : p.b) x *= 2.0f;
  weights.watch(p.b.data(), p.b_bytes());
  EXPECT_TRUE(weights.pack_ahead());
  const std::vector<float> again = p.gemm_now();
  EXPECT_FALSE(weights.pack_ahead());
  expect_same_bits(before, again, "packed ahead in part");
}

}  // namespace
}  // namespace pf::cpu
