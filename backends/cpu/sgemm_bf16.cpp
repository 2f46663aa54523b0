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

namespace pf::cpu {

namespace {
namespace bf16_tile {  // named, so that the portability check (tests/portable) knows this is AVX-512 code

// A pair is two bf16 of neighbouring steps of k in one 32-bit lane, the
// even step in the low half: what the dot-product instruction multiplies
// pairwise and adds to one f32 lane.
using Pair = uint32_t;

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

inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

// Sixteen f32 (the lanes of `mask`, zeros elsewhere) and the sixteen that
// follow them in memory (the lanes of `next`), rounded to bf16 (to nearest,
// ties to even) and paired in order: lane i holds elements 2i and 2i + 1.
inline __m512i pairs_along(const float* x, __mmask16 mask, __mmask16 next) {
  const __m512 lo = _mm512_maskz_loadu_ps(mask, x), hi = _mm512_maskz_loadu_ps(next, x + 16);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}

// Two rows of sixteen f32 (`even`, `odd`; the lanes of `mask`, zeros
// elsewhere), rounded and paired across: lane i holds (even[i], odd[i]).
inline __m512i pairs_across(const float* even, const float* odd, __mmask16 mask) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512 x = _mm512_maskz_loadu_ps(mask, even);
  const __m512 y = odd ? _mm512_maskz_loadu_ps(mask, odd) : _mm512_setzero_ps();
  return _mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(y, x));
}

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
  if (!trans) {  // element (i, kk) at a[i * lda + kk]: a row's pairs are neighbours, sixteen at a time
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t p = 0; p < pairs; p += 16) {
        const int64_t steps = i < mc ? kc - 2 * p : 0;
        const __m512i v = pairs_along(a + i * lda + 2 * p, first_lanes(steps), first_lanes(steps - 16));
        _mm512_mask_storeu_epi32(out + i * pairs + p, first_lanes(pairs - p), v);
      }
    return;
  }
  // Element (i, kk) at a[kk * lda + i]: steps 2p and 2p + 1 are two rows of
  // A as stored; sixteen pairs of sixteen rows each, transposed in registers.
  for (int64_t i = 0; i < rows; i += 16)
    for (int64_t p = 0; p < pairs; p += 16) {
      __m512 v[16];
      for (int64_t q = 0; q < 16; ++q) {
        const int64_t step = 2 * (p + q);
        if (step >= kc) {
          v[q] = _mm512_setzero_ps();
          continue;
        }
        const float* even = a + step * lda + i;
        v[q] = _mm512_castsi512_ps(pairs_across(even, step + 1 < kc ? even + lda : nullptr, first_lanes(mc - i)));
      }
      avx512_tile::transpose16(v);
      for (int64_t r = 0; r < min64(16, rows - i); ++r)
        _mm512_mask_storeu_epi32(out + (i + r) * pairs + p, first_lanes(pairs - p), _mm512_castps_si512(v[r]));
    }
}

// op(B)[0:kc, 0:nc] (b at its first element) into micro-panels of kNr
// columns, out[panel][p * kNr + j]; columns past nc (to the panel's end) and
// the odd step past an odd kc are zeros.
void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, Pair* out, bool stream = false) {
  const int64_t pairs = (kc + 1) / 2, width = (nc + kNr - 1) / kNr * kNr;
  if (!trans) {  // element (kk, j) at b[kk * ldb + j]: steps 2p and 2p + 1 are two rows of B
    for (int64_t p = 0; p < pairs; ++p) {
      const float* even = b + 2 * p * ldb;
      const float* odd = 2 * p + 1 < kc ? even + ldb : nullptr;
      for (int64_t j = 0; j < width; j += 16) {
        const __m512i v = pairs_across(even + j, odd ? odd + j : nullptr, first_lanes(nc - j));
        Pair* dst = out + (j / kNr) * kNr * pairs + p * kNr + j % kNr;
        if (stream)
          _mm512_stream_si512(reinterpret_cast<__m512i*>(dst), v);
        else
          _mm512_store_si512(dst, v);
      }
    }
    return;
  }
  // Element (kk, j) at b[j * ldb + kk]: a column's pairs are neighbours;
  // sixteen columns of sixteen pairs each, transposed in registers.
  for (int64_t j = 0; j < width; j += 16) {
    Pair* panel = out + (j / kNr) * kNr * pairs + j % kNr;
    for (int64_t p = 0; p < pairs; p += 16) {
      __m512 v[16];
      const int64_t steps = kc - 2 * p;
      for (int64_t q = 0; q < 16; ++q)
        v[q] = j + q < nc ? _mm512_castsi512_ps(pairs_along(b + (j + q) * ldb + 2 * p, first_lanes(steps),
                                                            first_lanes(steps - 16)))
                          : _mm512_setzero_ps();
      avx512_tile::transpose16(v);
      for (int64_t q = 0; q < min64(16, pairs - p); ++q)
        _mm512_store_ps(reinterpret_cast<float*>(panel + (p + q) * kNr), v[q]);
    }
  }
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
          pack_b(trans_b, trans_b ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, kc, nc, packed_b);
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
  const bool stream = padded_cols * ((k + 1) / 2) > kSgemmStreamFloats;  // as the f32 kernels' whole B
  for (int64_t pc = k_begin; pc < k_end; pc += kKc)
    pack_b(trans_b, trans_b ? b + pc : b + pc * ldb, ldb, min64(kKc, k - pc), n,
           reinterpret_cast<Pair*>(out) + pc / 2 * padded_cols, stream);
  if (stream) _mm_sfence();
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
