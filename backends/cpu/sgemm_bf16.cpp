// The bf16 products: operands rounded to bf16 as they are packed, their exact products summed in f32 by AVX-512
// BF16's dot-product instruction, two steps of k at once, in a 6 x 64 register tile.
#include <immintrin.h>

#include <cstdint>

#include "backends/cpu/sgemm.h"

// Everything below is compiled for AVX-512 with the BF16 extension whatever
// the build's -march, and is only reached where cpu_has_bf16_dot() says the
// CPU has it (as sgemm_avx512.cpp, whose layout this follows).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,fma")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "backends/cpu/sgemm_avx512_common.h"
#include "backends/cpu/sgemm_bf16_pairs.h"

namespace pf::cpu {

namespace {
namespace bf16_tile {  // named, so that the portability check (tests/portable) knows this is AVX-512 code

using bf16_pairs::first_lanes;
using bf16_pairs::Pair;

// The register tile is the f32 AVX-512 kernel's (avx512_tile::kMr x kNr),
// each step of its loop two steps of k.
using avx512_tile::kMr;
using avx512_tile::kNr;
// A packed block of B (kKc x kNc bf16, 512 KiB) stays in L2 while the A
// micro-panels (kMr x kKc, 6 KiB each) run over it. kKc is even, so that no
// pair straddles two slices of k.
constexpr int64_t kKc = 512, kNc = 512, kMc = 3072;
static_assert(kKc % 2 == 0);

inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

// c[kMr x kNr] (row stride ldc) = (accumulate ? c : 0) + the product of an
// A micro-panel (row r's pairs at a[r * pairs + p]) and a B micro-panel
// (b[p * kNr + j]) over `pairs` pairs of steps. A's rows are six streams
// read in step, each element broadcast from memory.
void micro_kernel(int64_t pairs, const Pair* __restrict a, const Pair* __restrict b, float* c, int64_t ldc,
                  bool accumulate) {
  avx512_tile::Accumulators acc;
  avx512_tile::start_tile(c, ldc, acc);
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b), b1 = (__m512bh)_mm512_load_si512(b + 16),
                   b2 = (__m512bh)_mm512_load_si512(b + 32), b3 = (__m512bh)_mm512_load_si512(b + 48);
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r) {
      const __m512bh ar = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[r * pairs + p]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], ar, b2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], ar, b3);
    }
    b += kNr;
  }
  avx512_tile::finish_tile(acc, c, ldc, accumulate);
}

// A tile cut by the edge of C: the full tile into a scratch tile, then its
// corner into C, so that an element gets the same bits in either.
void edge_kernel(int64_t pairs, const Pair* a, const Pair* b, float* c, int64_t ldc, bool accumulate, int64_t rows,
                 int64_t cols) {
  alignas(64) float tile[kMr * kNr];
  micro_kernel(pairs, a, b, tile, kNr, false);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const float product = tile[r * kNr + j];
      c[r * ldc + j] = accumulate ? c[r * ldc + j] + product : product;
    }
}

// op(A)[0:mc, 0:kc] (a at its first element) into micro-panels of kMr
// rows, each row's pairs in order: out[panel][r * pairs + p]. Rows past mc
// (to the panel's end) and the odd step past an odd kc are zeros. Whole
// vectors of pairs are stored, never scattered: scattering a row's pairs
// took a fifth of a product only a few hundred columns wide.
void pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, Pair* out) {
  const int64_t pairs = (kc + 1) / 2, rows = (mc + kMr - 1) / kMr * kMr;
  bf16_pairs::for_each_pair_block({a, lda, !trans, mc, kc}, rows, pairs, true, [&](int64_t i, int64_t p, __m512* v) {
    for (int64_t r = 0; r < min64(16, rows - i); ++r)
      _mm512_mask_storeu_epi32(out + (i + r) * pairs + p, first_lanes(pairs - p), _mm512_castps_si512(v[r]));
  });
}

// op(B)[0:kc, 0:nc] (b at its first element) into micro-panels of kNr
// columns, out[panel][p * kNr + j]; columns past nc (to the panel's end) and
// the odd step past an odd kc are zeros. `stream` writes past the caches.
void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, Pair* out, bool stream) {
  const int64_t pairs = (kc + 1) / 2, width = (nc + kNr - 1) / kNr * kNr;
  bf16_pairs::for_each_pair_block({b, ldb, trans, nc, kc}, width, pairs, false, [&](int64_t j, int64_t p, __m512* v) {
    float* panel = reinterpret_cast<float*>(out + (j / kNr) * kNr * pairs + j % kNr);
    for (int64_t q = 0; q < min64(16, pairs - p); ++q)
      if (stream)
        _mm512_stream_ps(panel + (p + q) * kNr, v[q]);
      else
        _mm512_store_ps(panel + (p + q) * kNr, v[q]);
  });
}

}  // namespace bf16_tile

static_assert(bf16_tile::kMc * bf16_tile::kKc / 2 <= kSgemmPackA &&
              bf16_tile::kKc * bf16_tile::kNc / 2 <= kSgemmPackB);

}  // namespace

namespace {
namespace bf16_tile {

// The loop nest of sgemm_bf16. With `whole_b` (B packed by pack_whole_b,
// whose column first_col is column 0 here), B's blocks are read from there
// instead of packed: the same pairs, so the same sums.
void blocked(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, bool accumulate, float* c, int64_t ldc, const PackedB* whole_b) {
  // The f32 kernels' buffers hold half as many pairs as they hold floats.
  Pair* packed_a = reinterpret_cast<Pair*>(sgemm_pack_a());
  Pair* packed_b = reinterpret_cast<Pair*>(sgemm_pack_b());
  for (int64_t ic = 0; ic < m; ic += kMc) {
    const int64_t mc = min64(kMc, m - ic);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = min64(kKc, k - pc), pairs = (kc + 1) / 2;
      pack_a(trans_a, trans_a ? a + pc * lda + ic : a + ic * lda + pc, lda, mc, kc, packed_a);
      const bool add = accumulate || pc > 0;  // later slices of k add to what the first wrote
      for (int64_t jc = 0; jc < n; jc += kNc) {
        const int64_t nc = min64(kNc, n - jc);
        const Pair* block_b = packed_b;
        if (whole_b)
          block_b = reinterpret_cast<const Pair*>(whole_b->data) + pc / 2 * whole_b->padded_cols +
                    (whole_b->first_col + jc) * pairs;
        else
          pack_b(trans_b, trans_b ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, kc, nc, packed_b, false);
        for (int64_t ir = 0; ir < mc; ir += kMr) {
          const Pair* a_panel = packed_a + ir * pairs;
          const int64_t rows = min64(kMr, mc - ir);
          for (int64_t jr = 0; jr < nc; jr += kNr) {
            const Pair* b_panel = block_b + jr * pairs;
            float* c_tile = c + (ic + ir) * ldc + jc + jr;
            const int64_t cols = min64(kNr, nc - jr);
            if (rows == kMr && cols == kNr)
              micro_kernel(pairs, a_panel, b_panel, c_tile, ldc, add);
            else
              edge_kernel(pairs, a_panel, b_panel, c_tile, ldc, add, rows, cols);
          }
        }
      }
    }
  }
}

// Steps [k_begin, k_end) of op(B)[k, n] (k_begin a multiple of kKc) packed
// whole: slice pc's pairs at out + pc / 2 * padded columns, its panel of
// columns j at + j * its pairs, as pack_b lays out a block.
void pack_whole_b(bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k, int64_t k_begin, int64_t k_end,
                  float* out) {
  const int64_t padded_cols = (n + kNr - 1) / kNr * kNr;
  bf16_pairs::pack_whole_b(pack_b, kKc, padded_cols, padded_cols * ((k + 1) / 2), trans_b, b, ldb, n, k, k_begin,
                           k_end, out);
}

void packed_product(bool trans_a, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PackedB& b,
                    bool accumulate, float* c, int64_t ldc) {
  blocked(trans_a, false, m, n, k, a, lda, nullptr, 0, accumulate, c, ldc, &b);
}

}  // namespace bf16_tile
}  // namespace

void sgemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  bf16_tile::blocked(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, nullptr);
}

const SgemmPackedOps& sgemm_packed_ops_bf16() {
  // Two steps of k a 32-bit pair.
  static constexpr SgemmPackedOps ops{bf16_tile::kNr, bf16_tile::kKc, &bf16_tile::pack_whole_b,
                                      &bf16_tile::packed_product, 2};
  return ops;
}

}  // namespace pf::cpu

#pragma GCC diagnostic pop
#pragma GCC pop_options
