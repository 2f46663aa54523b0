// What the f32 and bf16 AVX-512 sgemms share: their 6 x 64 tile of C, and a 16 x 16 transpose (internal to
// backends/cpu/sgemm_avx512.cpp and sgemm_bf16.cpp).
//
// Included, as sgemm_blocking.h is, inside a file's `#pragma GCC target`
// region that enables AVX-512 F, after <immintrin.h> and <cstdint>: the code
// has internal linkage and is compiled for AVX-512 in each file that uses it,
// in the namespace the portability check knows for AVX-512 code.

namespace pf::cpu {
namespace {
namespace avx512_tile {

// The register tile: kMr rows of C by kNr columns, four 16-float vectors per
// row, 24 accumulators.
constexpr int64_t kMr = 6;
constexpr int64_t kNr = 64;
using Accumulators = __m512[kMr][4];

// Zeroes the accumulators, and asks for C's lines, which are wanted only at
// the end, so that they arrive while the products run.
__attribute__((always_inline)) inline void start_tile(const float* c, int64_t ldc, Accumulators& acc) {
#pragma GCC unroll 6
  for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int64_t q = 0; q < 4; ++q) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * q), _MM_HINT_T0);
#pragma GCC unroll 6
  for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int64_t q = 0; q < 4; ++q) acc[r][q] = _mm512_setzero_ps();
}

// c[kMr x kNr] (row stride ldc) = (accumulate ? c : 0) + acc.
__attribute__((always_inline)) inline void finish_tile(const Accumulators& acc, float* c, int64_t ldc,
                                                       bool accumulate) {
#pragma GCC unroll 6
  for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int64_t q = 0; q < 4; ++q) {
      float* out = c + r * ldc + 16 * q;
      _mm512_storeu_ps(out, accumulate ? _mm512_add_ps(_mm512_loadu_ps(out), acc[r][q]) : acc[r][q]);
    }
}

// Transposes a 16 x 16 block held as 16 row vectors, in place.
void transpose16(__m512 v[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d t0 = _mm512_castps_pd(t[4 * i]), t1 = _mm512_castps_pd(t[4 * i + 1]),
                  t2 = _mm512_castps_pd(t[4 * i + 2]), t3 = _mm512_castps_pd(t[4 * i + 3]);
    v[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    v[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    v[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    v[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  // v[4i + q] now holds, in 128-bit lane l, column 4l + q of rows 4i..4i+3.
  for (int i = 0; i < 2; ++i)
    for (int q = 0; q < 4; ++q) {
      t[8 * i + q] = _mm512_shuffle_f32x4(v[8 * i + q], v[8 * i + 4 + q], 0x88);
      t[8 * i + q + 4] = _mm512_shuffle_f32x4(v[8 * i + q], v[8 * i + 4 + q], 0xdd);
    }
  for (int q = 0; q < 8; ++q) {
    v[q] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0x88);
    v[q + 8] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0xdd);
  }
}

}  // namespace avx512_tile
}  // namespace
}  // namespace pf::cpu
