// Pipeforge's own AVX-512 sgemm: cache blocking, packing, and a 6 x 64 register tile.
//
// The loops, outermost first: rows of C in blocks of kMc; k in slices of kKc,
// each slice of A packed into micro-panels of kMr rows; columns in blocks of
// kNc, each block of B packed into micro-panels of kNr columns; then every
// A micro-panel (in L1) against every B micro-panel of the block (in L2).
// With a few hundred rows of A, as in a training step, A is packed once per
// slice and B, the large weight matrix, exactly once: the time goes to the
// register tile, not to reading and rearranging memory.
#include "backends/cpu/sgemm_avx512.h"

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace pf::cpu {

namespace {

// The register tile: kMr rows of C by kNr columns, four 16-float vectors per
// row. 24 accumulators; each step of k loads four vectors of B and
// broadcasts six scalars of A.
constexpr int64_t kMr = 6;
constexpr int64_t kNr = 64;
// The cache blocks. A packed block of B (kKc x kNc floats, 1 MiB) stays in
// L2 while the A micro-panels (kMr x kKc, 12 KiB each) run over it; the
// packed block of A (kMc x kKc, 6 MiB) is read from L3 once per block of B.
constexpr int64_t kKc = 512;
constexpr int64_t kNc = 512;
constexpr int64_t kMc = 3072;
static_assert(kMc % kMr == 0 && kNc % kNr == 0);

struct AlignedDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedDelete>;

AlignedFloats aligned_floats(int64_t count) {
  return AlignedFloats(static_cast<float*>(::operator new[](sizeof(float) * count, std::align_val_t(64))));
}

// Packed operands, one pair per thread: allocated (and first touched) on the
// thread's first product, reused by every later one.
struct PackBuffers {
  AlignedFloats a = aligned_floats(kMc * kKc);
  AlignedFloats b = aligned_floats(kNc * kKc);
};

PackBuffers& pack_buffers() {
  thread_local PackBuffers buffers;
  return buffers;
}

}  // namespace

bool avx512_sgemm_supported() {
  static const bool supported = __builtin_cpu_supports("avx512f");
  return supported;
}

bool avx512_sgemm_suits(int64_t m, int64_t n, int64_t k) { return n >= 3 * kNr / 4 && m >= kMr / 2 && k >= 16; }

}  // namespace pf::cpu

// Everything below is compiled for AVX-512 whatever the build's -march, and
// is only reached after avx512_sgemm_supported(). It uses no templates from
// the headers above (those would be instantiated for AVX-512 here and might
// be the copy the linker keeps for the whole program).
#pragma GCC push_options
#pragma GCC target("avx512f,fma")
// GCC 12 takes the deliberately undefined pass-through operand inside its
// own unpack and shuffle intrinsics for an uninitialised variable.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace pf::cpu {

namespace {

int64_t min_of(int64_t x, int64_t y) { return x < y ? x : y; }

// c[kMr x kNr] (row stride ldc) = (accumulate ? c : 0) + the product of an
// A micro-panel (a[kk * kMr + r]) and a B micro-panel (b[kk * kNr + j]).
void micro_kernel(int64_t kc, const float* __restrict a, const float* __restrict b, float* c, int64_t ldc,
                  bool accumulate) {
  // C's lines are wanted only at the end: ask for them now, so that they
  // arrive while the products run.
#pragma GCC unroll 6
  for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int64_t q = 0; q < 4; ++q) _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * q), _MM_HINT_T0);
  __m512 acc[kMr][4];
#pragma GCC unroll 6
  for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int64_t q = 0; q < 4; ++q) acc[r][q] = _mm512_setzero_ps();
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
#pragma GCC unroll 6
  for (int64_t r = 0; r < kMr; ++r)
#pragma GCC unroll 4
    for (int64_t q = 0; q < 4; ++q) {
      float* out = c + r * ldc + 16 * q;
      _mm512_storeu_ps(out, accumulate ? _mm512_add_ps(_mm512_loadu_ps(out), acc[r][q]) : acc[r][q]);
    }
}

// A tile cut by the edge of C: the full tile into a scratch tile, then its
// `rows` x `cols` corner into C.
void edge_kernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, int64_t rows,
                 int64_t cols) {
  alignas(64) float tile[kMr * kNr];
  micro_kernel(kc, a, b, tile, kNr, false);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const float product = tile[r * kNr + j];
      c[r * ldc + j] = accumulate ? c[r * ldc + j] + product : product;
    }
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

// op(A)[0:mc, 0:kc] (a points at its first element) into micro-panels of kMr
// rows, out[panel][kk * kMr + r]; rows past mc are zeros.
void pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* out) {
  for (int64_t i = 0; i < mc; i += kMr, out += kMr * kc) {
    const int64_t rows = min_of(kMr, mc - i);
    if (trans) {  // element (i + r, kk) at a[kk * lda + i + r]: kMr neighbours per kk
      for (int64_t kk = 0; kk < kc; ++kk) {
        const float* src = a + kk * lda + i;
        for (int64_t r = 0; r < kMr; ++r) out[kk * kMr + r] = r < rows ? src[r] : 0.0f;
      }
      continue;
    }
    // Element (i + r, kk) at a[(i + r) * lda + kk]: rows read along k,
    // sixteen steps of k at a time interleaved in registers.
    int64_t kk = 0;
    if (rows == kMr)
      for (; kk + 16 <= kc; kk += 16) interleave_rows(a + i * lda + kk, lda, out + kk * kMr);
    for (int64_t r = 0; r < kMr; ++r) {
      if (r >= rows) {
        for (int64_t j = kk; j < kc; ++j) out[j * kMr + r] = 0.0f;
        continue;
      }
      const float* src = a + (i + r) * lda;
      for (int64_t j = kk; j < kc; ++j) out[j * kMr + r] = src[j];
    }
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

// op(B)[0:kc, 0:nc] (b points at its first element) into micro-panels of kNr
// columns, out[panel][kk * kNr + j]; columns past nc are zeros.
void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, float* out) {
  const int64_t full = nc / kNr * kNr;
  if (!trans) {  // rows of B are rows of the panels: copied a row of B at a time
    for (int64_t kk = 0; kk < kc; ++kk) {
      const float* src = b + kk * ldb;
      for (int64_t j = 0; j < full; j += kNr) {
        float* dst = out + j * kc + kk * kNr;
        for (int64_t q = 0; q < kNr; q += 16) _mm512_store_ps(dst + q, _mm512_loadu_ps(src + j + q));
      }
      if (full < nc) {
        float* dst = out + full * kc + kk * kNr;
        for (int64_t j = 0; j < kNr; ++j) dst[j] = full + j < nc ? src[full + j] : 0.0f;
      }
    }
    return;
  }
  // Element (kk, j) at b[j * ldb + kk]: 16 x 16 blocks read along k and
  // transposed in registers.
  for (int64_t j = 0; j < nc; j += 16) {
    float* panel = out + (j / kNr) * kNr * kc + j % kNr;
    const int64_t cols = min_of(16, nc - j);
    int64_t kk = 0;
    if (cols == 16)
      for (; kk + 16 <= kc; kk += 16) {
        __m512 v[16];
        for (int64_t q = 0; q < 16; ++q) v[q] = _mm512_loadu_ps(b + (j + q) * ldb + kk);
        transpose16(v);
        for (int64_t q = 0; q < 16; ++q) _mm512_store_ps(panel + (kk + q) * kNr, v[q]);
      }
    for (; kk < kc; ++kk)
      for (int64_t q = 0; q < 16; ++q) panel[kk * kNr + q] = q < cols ? b[(j + q) * ldb + kk] : 0.0f;
  }
  for (int64_t j = (nc + 15) / 16 * 16; j % kNr != 0; j += 16) {  // the rest of a part-filled last panel
    float* panel = out + (j / kNr) * kNr * kc + j % kNr;
    for (int64_t kk = 0; kk < kc; ++kk) _mm512_store_ps(panel + kk * kNr, _mm512_setzero_ps());
  }
}

}  // namespace

void avx512_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                  const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  PackBuffers& buffers = pack_buffers();
  float* packed_a = buffers.a.get();
  float* packed_b = buffers.b.get();
  for (int64_t ic = 0; ic < m; ic += kMc) {
    const int64_t mc = min_of(kMc, m - ic);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = min_of(kKc, k - pc);
      pack_a(trans_a, trans_a ? a + pc * lda + ic : a + ic * lda + pc, lda, mc, kc, packed_a);
      const bool add = accumulate || pc > 0;  // later slices of k add to what the first wrote
      for (int64_t jc = 0; jc < n; jc += kNc) {
        const int64_t nc = min_of(kNc, n - jc);
        pack_b(trans_b, trans_b ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, kc, nc, packed_b);
        for (int64_t ir = 0; ir < mc; ir += kMr) {
          const float* a_panel = packed_a + ir * kc;
          const int64_t rows = min_of(kMr, mc - ir);
          for (int64_t jr = 0; jr < nc; jr += kNr) {
            const float* b_panel = packed_b + jr * kc;
            float* c_tile = c + (ic + ir) * ldc + jc + jr;
            const int64_t cols = min_of(kNr, nc - jr);
            if (rows == kMr && cols == kNr)
              micro_kernel(kc, a_panel, b_panel, c_tile, ldc, add);
            else
              edge_kernel(kc, a_panel, b_panel, c_tile, ldc, add, rows, cols);
          }
        }
      }
    }
  }
}

}  // namespace pf::cpu

#pragma GCC diagnostic pop
#pragma GCC pop_options
