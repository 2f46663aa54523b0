// The AVX2 sgemm: a 6 x 16 register tile of 256-bit vectors with fused multiply-adds, for CPUs without AVX-512.
#include <immintrin.h>

#include <cstdint>

#include "backends/cpu/sgemm.h"

// Everything below is compiled for AVX2 and FMA whatever the build's -march,
// and is only reached where cpu_isa() is at least avx2 (see sgemm_avx512.cpp
// on why nothing from the headers above is instantiated here).
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#include "backends/cpu/sgemm_blocking.h"
#include "backends/cpu/sgemm_few_rows.h"

namespace pf::cpu {

namespace {

struct Avx2Tile {
  // Sixteen ymm registers: 12 accumulators (6 rows of two 8-float vectors),
  // two vectors of B and one broadcast of A. Each step of k: 2 loads, 6
  // broadcasts, 12 fused multiply-adds, which two FMA units retire in 6
  // cycles.
  static constexpr int64_t kMr = 6, kNr = 16;
  // A packed block of B (kKc x kNc floats, 256 KiB) stays in a Zen 3 or
  // Haswell L2 (512 KiB / 256 KiB and up) while the A micro-panels (kMr x
  // kKc, 6 KiB each) run over it from L1; the B micro-panels are 16 KiB.
  static constexpr int64_t kKc = 256, kNc = 256, kMc = 3072;
  // The next block of B asked for ahead: 6 % faster on the MLP's 256-row products.
  static constexpr bool kPrefetchNextB = true;
  static constexpr int64_t kTr = 8;

  static void micro(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                    bool accumulate) {
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 15), _MM_HINT_T0);
    }
    __m256 acc[kMr][2];
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int64_t kk = 0; kk < kc; ++kk) {
      const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
#pragma GCC unroll 6
      for (int64_t r = 0; r < kMr; ++r) {
        const __m256 ar = _mm256_broadcast_ss(a + r);
        acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
      }
      a += kMr;
      b += kNr;
    }
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 2
      for (int64_t q = 0; q < 2; ++q) {
        float* out = c + r * ldc + 8 * q;
        _mm256_storeu_ps(out, accumulate ? _mm256_add_ps(_mm256_loadu_ps(out), acc[r][q]) : acc[r][q]);
      }
  }

  // A is the small operand, packed once per slice of k: element by element.
  static int64_t pack_a_rows(const float*, int64_t, int64_t, float*) { return 0; }

  // An 8 x 8 transpose: pairs of rows interleaved, then pairs of pairs, then
  // the 128-bit halves exchanged.
  static void stream_row(float* dst, const float* src) {
    for (int64_t q = 0; q < kNr; q += 8) _mm256_stream_ps(dst + q, _mm256_loadu_ps(src + q));
  }
  static void transpose_block(const float* b, int64_t ldb, float* out) {
    __m256 v[8], t[8];
    for (int64_t q = 0; q < 8; ++q) v[q] = _mm256_loadu_ps(b + q * ldb);
    for (int i = 0; i < 4; ++i) {
      t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
      t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    // t[2i], t[2i+1]: rows 2i, 2i+1 interleaved (columns 0,1,4,5 and 2,3,6,7).
    for (int i = 0; i < 2; ++i) {
      v[4 * i] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
      v[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
      v[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
      v[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    // v[4i + q] holds column q (low half) and column q + 4 (high half) of rows 4i..4i+3.
    for (int q = 0; q < 4; ++q) {
      _mm256_store_ps(out + q * kNr, _mm256_permute2f128_ps(v[q], v[q + 4], 0x20));
      _mm256_store_ps(out + (q + 4) * kNr, _mm256_permute2f128_ps(v[q], v[q + 4], 0x31));
    }
  }
};

static_assert(Avx2Tile::kMc * Avx2Tile::kKc <= kSgemmPackA && Avx2Tile::kKc * Avx2Tile::kNc <= kSgemmPackB);

}  // namespace

void sgemm_avx2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  blocked_sgemm<Avx2Tile>(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, sgemm_pack_a(),
                          sgemm_pack_b());
}

const SgemmPackedOps& sgemm_packed_ops_avx2() {
  static constexpr SgemmPackedOps ops = whole_b_ops<Avx2Tile>();
  return ops;
}

void sgemm_few_rows_avx2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                         const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  typedef float Vec __attribute__((vector_size(32)));
  few_rows_sgemm<Vec>(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, sgemm_pack_a());
}

}  // namespace pf::cpu

#pragma GCC pop_options
