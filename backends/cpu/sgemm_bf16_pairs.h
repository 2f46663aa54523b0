// What the two bf16 sgemms share: f32 operands rounded to bf16 and paired along k, sixteen pairs at a time
// (internal to backends/cpu/sgemm_bf16.cpp and sgemm_amx.cpp).
//
// Both the AVX-512 BF16 dot product and AMX's tile product multiply pairs:
// two bf16 of neighbouring steps of k in one 32-bit lane, the even step in
// the low half. The kernels differ only in where they put the pairs they
// pack. Included, as sgemm_avx512_common.h (which it needs) is, inside a
// file's `#pragma GCC target` region that enables AVX-512 F, BW and BF16.

namespace pf::cpu {
namespace {
namespace bf16_pairs {

using Pair = uint32_t;

inline __mmask16 first_lanes(int64_t count) {
  return count >= 16 ? __mmask16(0xffff) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

// Sixteen f32 (the lanes of `mask`, zeros elsewhere) and the sixteen that
// follow them in memory (the lanes of `next`), rounded to bf16 (to nearest,
// ties to even) and paired in order: lane i holds elements 2i and 2i + 1.
inline __m512 pairs_along(const float* x, __mmask16 mask, __mmask16 next) {
  const __m512 lo = _mm512_maskz_loadu_ps(mask, x), hi = _mm512_maskz_loadu_ps(next, x + 16);
  return (__m512)_mm512_cvtne2ps_pbh(hi, lo);
}

// Two rows of sixteen f32 (`even`, `odd`; the lanes of `mask`, zeros
// elsewhere; no `odd` reads as zeros), rounded and paired across: lane i
// holds (even[i], odd[i]).
inline __m512 pairs_across(const float* even, const float* odd, __mmask16 mask) {
  const __m512i interleave = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22,
                                              6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512 x = _mm512_maskz_loadu_ps(mask, even);
  const __m512 y = odd ? _mm512_maskz_loadu_ps(mask, odd) : _mm512_setzero_ps();
  return _mm512_castsi512_ps(_mm512_permutexvar_epi16(interleave, (__m512i)_mm512_cvtne2ps_pbh(y, x)));
}

// An operand seen as `rows` rows (of A: C's rows; of B: C's columns) by
// `steps` steps of k. Element (i, kk) lies at x[i * ld + kk] when `along`
// (a row's steps are neighbours in memory), else at x[kk * ld + i].
struct Operand {
  const float* x;
  int64_t ld;
  bool along;
  int64_t rows, steps;
};

// The pairs of rows [i, i + 16) and pairs [p, p + 16) of `op`, zeros past
// its edges, as sixteen vectors of sixteen pairs: v[r] the pairs of row
// i + r when `by_row`, else v[q] pair p + q of the sixteen rows. Whichever
// way memory runs, the loads follow it and a transpose in registers turns
// the block when the other way is wanted.
inline void pair_block(const Operand& op, int64_t i, int64_t p, bool by_row, __m512 v[16]) {
  const int64_t steps = op.steps - 2 * p;  // from pair p on
  if (op.along) {
    for (int64_t r = 0; r < 16; ++r)
      v[r] = i + r < op.rows ? pairs_along(op.x + (i + r) * op.ld + 2 * p, first_lanes(steps), first_lanes(steps - 16))
                             : _mm512_setzero_ps();
  } else {
    const __mmask16 rows = first_lanes(op.rows - i);
    for (int64_t q = 0; q < 16; ++q) {
      const int64_t step = 2 * (p + q);
      if (step >= op.steps) {
        v[q] = _mm512_setzero_ps();
        continue;
      }
      const float* even = op.x + step * op.ld + i;
      v[q] = pairs_across(even, step + 1 < op.steps ? even + op.ld : nullptr, rows);
    }
  }
  if (op.along != by_row) avx512_tile::transpose16(v);
}

// Every block of sixteen rows by sixteen pairs that covers rows [0, rows)
// and pairs [0, pairs) of `op` (zeros past its edges), as pair_block gives
// it, to store(i, p, v). Blocks are taken in the order memory runs: a
// band of sixteen rows at a time when a row's steps are neighbours, else
// a band of sixteen pairs (32 rows as stored), so that the loads are a few
// sequential streams.
template <class Store>
inline void for_each_pair_block(const Operand& op, int64_t rows, int64_t pairs, bool by_row, Store&& store) {
  __m512 v[16];
  if (op.along) {
    for (int64_t i = 0; i < rows; i += 16)
      for (int64_t p = 0; p < pairs; p += 16) {
        pair_block(op, i, p, by_row, v);
        store(i, p, v);
      }
    return;
  }
  for (int64_t p = 0; p < pairs; p += 16)
    for (int64_t i = 0; i < rows; i += 16) {
      pair_block(op, i, p, by_row, v);
      store(i, p, v);
    }
}

// Packs op(B)[0:kc, 0:nc] (b at its first element) into `out`, past the
// caches when `stream`: a kernel's packing of one slice of k.
using PackSlice = void (*)(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, Pair* out, bool stream);

// Steps [k_begin, k_end) of op(B)[k, n] (k_begin a multiple of slice_k)
// packed whole by pack_slice, slice pc's pairs at out + pc / 2 *
// padded_cols (every slice but the last is whole). A whole B of more than
// kSgemmStreamFloats pairs is written past the caches, as the f32 kernels'.
inline void pack_whole_b(PackSlice pack_slice, int64_t slice_k, int64_t padded_cols, int64_t whole_pairs,
                         bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k, int64_t k_begin,
                         int64_t k_end, float* out) {
  const bool stream = whole_pairs > kSgemmStreamFloats;
  for (int64_t pc = k_begin; pc < k_end; pc += slice_k)
    pack_slice(trans_b, trans_b ? b + pc : b + pc * ldb, ldb, k - pc < slice_k ? k - pc : slice_k, n,
               reinterpret_cast<Pair*>(out) + pc / 2 * padded_cols, stream);
  // Non-temporal stores are ordered by a fence only (sgemm_blocking.h).
  if (stream) _mm_sfence();
}

}  // namespace bf16_pairs
}  // namespace
}  // namespace pf::cpu
