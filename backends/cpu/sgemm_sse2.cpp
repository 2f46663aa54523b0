// The SSE2 sgemm: a 6 x 8 register tile of 128-bit vectors, for x86-64 CPUs without AVX2 (and to check the others).
//
// SSE2 is part of x86-64 itself, so this file needs no target region; it
// includes the blocking only after every other header for the same reason
// the wider kernels do.
#include <emmintrin.h>

#include <cstdint>

#include "backends/cpu/sgemm.h"
#include "backends/cpu/sgemm_blocking.h"
#include "backends/cpu/sgemm_few_rows.h"

namespace pf::cpu {

namespace {

struct Sse2Tile {
  // Sixteen xmm registers: 12 accumulators (6 rows of two 4-float vectors),
  // two vectors of B and one broadcast of A. No fused multiply-add: each
  // step rounds the product, then the sum, in the same order for every
  // element.
  static constexpr int64_t kMr = 6, kNr = 8;
  static constexpr int64_t kKc = 256, kNc = 256, kMc = 3072;
  static constexpr bool kPrefetchNextB = true;
  static constexpr int64_t kTr = 4;

  static void micro(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                    bool accumulate) {
    __m128 acc[kMr][2];
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r) acc[r][0] = acc[r][1] = _mm_setzero_ps();
    for (int64_t kk = 0; kk < kc; ++kk) {
      const __m128 b0 = _mm_load_ps(b), b1 = _mm_load_ps(b + 4);
#pragma GCC unroll 6
      for (int64_t r = 0; r < kMr; ++r) {
        const __m128 ar = _mm_set1_ps(a[r]);
        acc[r][0] = _mm_add_ps(acc[r][0], _mm_mul_ps(ar, b0));
        acc[r][1] = _mm_add_ps(acc[r][1], _mm_mul_ps(ar, b1));
      }
      a += kMr;
      b += kNr;
    }
#pragma GCC unroll 6
    for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 2
      for (int64_t q = 0; q < 2; ++q) {
        float* out = c + r * ldc + 4 * q;
        _mm_storeu_ps(out, accumulate ? _mm_add_ps(_mm_loadu_ps(out), acc[r][q]) : acc[r][q]);
      }
  }

  static int64_t pack_a_rows(const float*, int64_t, int64_t, float*) { return 0; }

  static void transpose_block(const float* b, int64_t ldb, float* out) {
    __m128 r0 = _mm_loadu_ps(b), r1 = _mm_loadu_ps(b + ldb), r2 = _mm_loadu_ps(b + 2 * ldb),
           r3 = _mm_loadu_ps(b + 3 * ldb);
    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
    _mm_store_ps(out, r0);
    _mm_store_ps(out + kNr, r1);
    _mm_store_ps(out + 2 * kNr, r2);
    _mm_store_ps(out + 3 * kNr, r3);
  }
};

static_assert(Sse2Tile::kMc * Sse2Tile::kKc <= kSgemmPackA && Sse2Tile::kKc * Sse2Tile::kNc <= kSgemmPackB);

}  // namespace

void sgemm_sse2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  blocked_sgemm<Sse2Tile>(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, sgemm_pack_a(),
                          sgemm_pack_b());
}

const SgemmPackedOps& sgemm_packed_ops_sse2() {
  static constexpr SgemmPackedOps ops = whole_b_ops<Sse2Tile>();
  return ops;
}

void sgemm_few_rows_sse2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                         const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  typedef float Vec __attribute__((vector_size(16)));
  few_rows_sgemm<Vec>(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, sgemm_pack_a());
}

}  // namespace pf::cpu
