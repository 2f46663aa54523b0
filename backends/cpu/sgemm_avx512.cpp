// The AVX-512 sgemm: a 6 x 64 register tile of 512-bit vectors, and packing by in-register permutes and transposes.
#include <immintrin.h>

#include <cstdint>

#include "backends/cpu/sgemm.h"

// Everything below is compiled for AVX-512 whatever the build's -march, and
// is only reached where cpu_isa() says the CPU has it. It uses no templates
// from the headers above (those would be instantiated for AVX-512 here and
// might be the copy the linker keeps for the whole program).
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
// GCC 12 takes the deliberately undefined pass-through operand inside its
// own unpack and shuffle intrinsics for an uninitialised variable.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "backends/cpu/sgemm_blocking.h"
#include "backends/cpu/sgemm_avx512_common.h"
#include "backends/cpu/sgemm_few_rows.h"

namespace pf::cpu {

namespace {
namespace avx512_tile {  // named, so that the portability check (tests/portable) knows these are AVX-512 code

// c[kMr x kNr] (row stride ldc) = (accumulate ? c : 0) + the product of an
// A micro-panel (a[kk * kMr + r]) and a B micro-panel (b[kk * kNr + j]):
// each step of k loads four vectors of B and broadcasts six scalars of A.
void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                  bool accumulate) {
  Accumulators acc;
  start_tile(c, ldc, acc);
  for (int64_t kk = 0; kk < kc; ++kk) {
    const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16), b2 = _mm512_load_ps(b + 32),
                 b3 = _mm512_load_ps(b + 48);
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(ar, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(ar, b1, acc[r][1]);
      acc[r][2] = _mm512_fmadd_ps(ar, b2, acc[r][2]);
      acc[r][3] = _mm512_fmadd_ps(ar, b3, acc[r][3]);
    }
    a += kMr;
    b += kNr;
  }
  finish_tile(acc, c, ldc, accumulate);
}

// Where interleave_rows takes each 64-bit lane of its six outputs from: the
// outputs hold the pairs (row 0, row 1), (row 2, row 3), (row 4, row 5) of
// step 0 of k, then of step 1, ...; output o, lane l is pair s = 8o + l, of
// step s / 3 and pair s % 3.
struct InterleaveIndex {
  int64_t first_two[kMr][8];  // _mm512_permutex2var_pd over pairs (0, 1) and (2, 3)
  int64_t third[kMr][8];      // then _mm512_mask_permutexvar_pd from pair (4, 5)
  __mmask8 from_third[kMr];
};

constexpr InterleaveIndex make_interleave_index() {
  InterleaveIndex index{};
  for (int o = 0; o < kMr; ++o) {
    index.from_third[o] = 0;
    for (int lane = 0; lane < 8; ++lane) {
      const int s = 8 * o + lane, step = (s / 3) % 8, pair = s % 3;
      index.first_two[o][lane] = pair == 1 ? 8 + step : step;
      index.third[o][lane] = step;
      if (pair == 2) index.from_third[o] = static_cast<__mmask8>(index.from_third[o] | (1 << lane));
    }
  }
  return index;
}

constexpr InterleaveIndex kInterleave = make_interleave_index();

// out[kk * 6 + r] = a[r * lda + kk] for the six rows r and sixteen steps kk:
// rows interleaved in pairs (one permute per half), then the pairs in threes.
void interleave_rows(const float* a, int64_t lda, float* out) {
  __m512d pairs[3][2];  // [pair of rows][steps 0-7, steps 8-15], as 64-bit (row, row) lanes
  const __m512i low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i high = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  for (int p = 0; p < 3; ++p) {
    const __m512 even = _mm512_loadu_ps(a + 2 * p * lda), odd = _mm512_loadu_ps(a + (2 * p + 1) * lda);
    pairs[p][0] = _mm512_castps_pd(_mm512_permutex2var_ps(even, low, odd));
    pairs[p][1] = _mm512_castps_pd(_mm512_permutex2var_ps(even, high, odd));
  }
  for (int o = 0; o < kMr; ++o) {
    const int half = o / 3;  // outputs 0-2 hold steps 0-7, outputs 3-5 steps 8-15
    const __m512i first_two = _mm512_loadu_si512(kInterleave.first_two[o]);
    const __m512i third = _mm512_loadu_si512(kInterleave.third[o]);
    __m512d v = _mm512_permutex2var_pd(pairs[0][half], first_two, pairs[1][half]);
    v = _mm512_mask_permutexvar_pd(v, kInterleave.from_third[o], third, pairs[2][half]);
    _mm512_storeu_pd(reinterpret_cast<double*>(out + 16 * o), v);
  }
}

}  // namespace avx512_tile

struct Avx512Tile {
  static constexpr int64_t kMr = avx512_tile::kMr, kNr = avx512_tile::kNr;
  // A packed block of B (kKc x kNc floats, 1 MiB) stays in L2 while the A
  // micro-panels (kMr x kKc, 12 KiB each) run over it; the packed block of A
  // (kMc x kKc, 6 MiB) is read from L3 once per block of B.
  static constexpr int64_t kKc = 512, kNc = 512, kMc = 3072;
  // The next block of B asked for ahead: measured no faster here (Sapphire Rapids, Zen 5).
  static constexpr bool kPrefetchNextB = false;
  static constexpr int64_t kTr = 16;

  static void micro(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate) {
    avx512_tile::micro_kernel(kc, a, b, c, ldc, accumulate);
  }
  // Sixteen steps of k at a time, interleaved in registers.
  static int64_t pack_a_rows(const float* a, int64_t lda, int64_t kc, float* out) {
    int64_t kk = 0;
    for (; kk + 16 <= kc; kk += 16) avx512_tile::interleave_rows(a + kk, lda, out + kk * kMr);
    return kk;
  }
  static void stream_row(float* dst, const float* src) {
    for (int64_t q = 0; q < kNr; q += 16) _mm512_stream_ps(dst + q, _mm512_loadu_ps(src + q));
  }
  static void transpose_block(const float* b, int64_t ldb, float* out) {
    __m512 v[16];
    for (int64_t q = 0; q < 16; ++q) v[q] = _mm512_loadu_ps(b + q * ldb);
    avx512_tile::transpose16(v);
    for (int64_t q = 0; q < 16; ++q) _mm512_store_ps(out + q * kNr, v[q]);
  }
};

static_assert(Avx512Tile::kMc * Avx512Tile::kKc <= kSgemmPackA && Avx512Tile::kKc * Avx512Tile::kNc <= kSgemmPackB);

}  // namespace

void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                  const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  blocked_sgemm<Avx512Tile>(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, sgemm_pack_a(),
                            sgemm_pack_b());
}

const SgemmPackedOps& sgemm_packed_ops_avx512() {
  static constexpr SgemmPackedOps ops = whole_b_ops<Avx512Tile>();
  return ops;
}

void sgemm_few_rows_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                           const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  typedef float Vec __attribute__((vector_size(64)));
  few_rows_sgemm<Vec>(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, sgemm_pack_a());
}

}  // namespace pf::cpu

#pragma GCC diagnostic pop
#pragma GCC pop_options
