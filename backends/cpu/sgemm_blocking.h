// The loop nest, packing and edge tiles that every own sgemm shares (internal to backends/cpu/sgemm_*.cpp).
//
// The loops, outermost first: rows of C in blocks of kMc; k in slices of kKc,
// each slice of A packed into micro-panels of kMr rows; columns in blocks of
// kNc, each block of B packed into micro-panels of kNr columns; then every
// A micro-panel (in L1) against every B micro-panel of the block (in L2).
// With a few hundred rows of A, as in a training step, A is packed once per
// slice and B, the large weight matrix, exactly once: the time goes to the
// register tile, not to reading and rearranging memory.
//
// Each kernel's file includes this inside its `#pragma GCC target` region,
// after <cstdint>: everything here is then compiled for that instruction set
// and has internal linkage, so no copy built for a wider set can stand in for
// a narrower one's at link time. It includes nothing itself for that reason.
//
// A Tile type supplies:
//   kMr, kNr       the register tile: rows by columns of C
//   kKc, kNc, kMc  the cache blocks: a slice of k, the columns of B packed at
//                  once, the rows of A packed at once
//   micro(kc, a, b, c, ldc, accumulate)
//                  c[kMr x kNr] (row stride ldc) = (accumulate ? c : 0) + the
//                  product of an A micro-panel (a[kk * kMr + r]) and a B
//                  micro-panel (b[kk * kNr + j])
//   pack_a_rows(a, lda, kc, out) -> steps
//                  packs the first steps of k of kMr whole rows of an
//                  untransposed A into one micro-panel, as fast as the set
//                  allows, and returns how many it packed (0 is fine)
//   kPrefetchNextB whether to ask for the next block of B while this one is
//                  computed (it pays where the tile's arithmetic is slow
//                  enough to hide the reads: AVX2 and SSE2)
//   kTr, transpose_block(b, ldb, out)
//                  a kTr x kTr block of a transposed B (b[j * ldb + kk]) into
//                  a micro-panel (out[kk * kNr + j])
//   stream_row(dst, src)
//                  where kNr floats fill whole cache lines: kNr floats to a
//                  64-byte aligned dst by non-temporal stores

namespace pf::cpu {
namespace {

inline int64_t sgemm_min(int64_t x, int64_t y) { return x < y ? x : y; }

// A tile cut by the edge of C: the full tile into a scratch tile, then its
// `rows` x `cols` corner into C. The sums are the full tile's, so an element
// gets the same bits whether it falls in a full tile or an edge one.
template <class Tile>
void sgemm_edge(int64_t kc, const float* a, const float* b, float* c, int64_t ldc, bool accumulate, int64_t rows,
                int64_t cols) {
  alignas(64) float tile[Tile::kMr * Tile::kNr];
  Tile::micro(kc, a, b, tile, Tile::kNr, false);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const float product = tile[r * Tile::kNr + j];
      c[r * ldc + j] = accumulate ? c[r * ldc + j] + product : product;
    }
}

// op(A)[0:mc, 0:kc] (a points at its first element) into micro-panels of kMr
// rows, out[panel][kk * kMr + r]; rows past mc are zeros.
template <class Tile>
void sgemm_pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, float* out) {
  constexpr int64_t kMr = Tile::kMr;
  for (int64_t i = 0; i < mc; i += kMr, out += kMr * kc) {
    const int64_t rows = sgemm_min(kMr, mc - i);
    if (trans) {  // element (i + r, kk) at a[kk * lda + i + r]: kMr neighbours per kk
      for (int64_t kk = 0; kk < kc; ++kk) {
        const float* src = a + kk * lda + i;
        for (int64_t r = 0; r < kMr; ++r) out[kk * kMr + r] = r < rows ? src[r] : 0.0f;
      }
      continue;
    }
    // Element (i + r, kk) at a[(i + r) * lda + kk]: rows read along k.
    const int64_t done = rows == kMr ? Tile::pack_a_rows(a + i * lda, lda, kc, out) : 0;
    for (int64_t r = 0; r < kMr; ++r) {
      const float* src = a + (i + r) * lda;
      for (int64_t kk = done; kk < kc; ++kk) out[kk * kMr + r] = r < rows ? src[kk] : 0.0f;
    }
  }
}

// Whether a Tile's panel rows fill whole cache lines, which non-temporal
// stores can then write without reading them first.
template <class Tile>
constexpr bool sgemm_rows_fill_lines() {
  return Tile::kNr * sizeof(float) % 64 == 0;
}

// op(B)[0:kc, 0:nc] (b points at its first element) into micro-panels of kNr
// columns, out[panel][kk * kNr + j]; columns past nc are zeros. With
// `stream` (only where sgemm_rows_fill_lines), the rows of an untransposed B
// go past the caches.
template <class Tile>
void sgemm_pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, float* out, bool stream = false) {
  constexpr int64_t kNr = Tile::kNr, kTr = Tile::kTr;
  static_assert(kNr % kTr == 0);
  if (!trans) {  // rows of B are rows of the panels: copied a row of B at a time
    for (int64_t kk = 0; kk < kc; ++kk) {
      const float* src = b + kk * ldb;
      for (int64_t j = 0; j < nc; j += kNr) {
        float* dst = out + j * kc + kk * kNr;
        if (j + kNr <= nc) {
          if constexpr (sgemm_rows_fill_lines<Tile>())
            if (stream) {
              Tile::stream_row(dst, src + j);
              continue;
            }
          __builtin_memcpy(dst, src + j, sizeof(float) * kNr);  // a few vector moves, not kNr scalar ones
        } else {
          for (int64_t q = 0; q < kNr; ++q) dst[q] = j + q < nc ? src[j + q] : 0.0f;
        }
      }
    }
    return;
  }
  // Element (kk, j) at b[j * ldb + kk]: kTr x kTr blocks read along k and
  // transposed in registers; the ragged edges element by element.
  const int64_t panels = (nc + kNr - 1) / kNr;
  for (int64_t j = 0; j < panels * kNr; j += kTr) {
    float* panel = out + (j / kNr) * kNr * kc + j % kNr;
    const int64_t cols = j < nc ? sgemm_min(kTr, nc - j) : 0;
    int64_t kk = 0;
    if (cols == kTr)
      for (; kk + kTr <= kc; kk += kTr) Tile::transpose_block(b + j * ldb + kk, ldb, panel + kk * kNr);
    for (; kk < kc; ++kk)
      for (int64_t q = 0; q < kTr; ++q) panel[kk * kNr + q] = q < cols ? b[(j + q) * ldb + kk] : 0.0f;
  }
}

// Asks for rows [first, last) of a block of op(B) as stored (`row_floats`
// floats each, `ldb` apart) to be brought into L2, where packing will read
// them: the next block's reads from memory overlap this block's arithmetic.
inline void sgemm_prefetch_rows(const float* src, int64_t ldb, int64_t first, int64_t last, int64_t row_floats) {
  for (int64_t r = first; r < last; ++r)
    for (int64_t q = 0; q < row_floats; q += 16) __builtin_prefetch(src + r * ldb + q, 0, 2);
}

// op(B)[k_begin:k_end, 0:n] (k_begin a multiple of kKc) packed as blocked_sgemm
// reads a whole packed B: slice pc (kKc steps of k, fewer in the last) at
// out + pc * padded_cols, its micro-panel of columns j (a multiple of kNr)
// at + j * kc, laid out as sgemm_pack_b lays out a block.
template <class Tile>
void sgemm_pack_whole_b(bool trans, const float* b, int64_t ldb, int64_t n, int64_t k, int64_t k_begin,
                        int64_t k_end, float* out) {
  const int64_t padded_cols = (n + Tile::kNr - 1) / Tile::kNr * Tile::kNr;
  const bool stream = sgemm_rows_fill_lines<Tile>() && padded_cols * k > kSgemmStreamFloats;
  for (int64_t pc = k_begin; pc < k_end; pc += Tile::kKc) {
    const int64_t kc = sgemm_min(Tile::kKc, k - pc);
    sgemm_pack_b<Tile>(trans, trans ? b + pc : b + pc * ldb, ldb, kc, n, out + pc * padded_cols, stream);
  }
  // Non-temporal stores are ordered by a fence only: before another thread
  // (a product split over the device's threads) reads what this one packed.
  if (stream) __builtin_ia32_sfence();
}

// With `whole_b` (B packed by sgemm_pack_whole_b, whose column `first_col`,
// a multiple of kNr, is column 0 of this product), B's blocks are read from
// there instead of packed into `packed_b`: the same panels, so the same sums.
template <class Tile>
void blocked_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                   const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc, float* packed_a,
                   float* packed_b, const PackedB* whole_b = nullptr) {
  constexpr int64_t kMr = Tile::kMr, kNr = Tile::kNr, kKc = Tile::kKc, kNc = Tile::kNc, kMc = Tile::kMc;
  static_assert(kMc % kMr == 0 && kNc % kNr == 0);
  for (int64_t ic = 0; ic < m; ic += kMc) {
    const int64_t mc = sgemm_min(kMc, m - ic);
    for (int64_t pc = 0; pc < k; pc += kKc) {
      const int64_t kc = sgemm_min(kKc, k - pc);
      sgemm_pack_a<Tile>(trans_a, trans_a ? a + pc * lda + ic : a + ic * lda + pc, lda, mc, kc, packed_a);
      const bool add = accumulate || pc > 0;  // later slices of k add to what the first wrote
      for (int64_t jc = 0; jc < n; jc += kNc) {
        const int64_t nc = sgemm_min(kNc, n - jc);
        const float* block_b = packed_b;
        if (whole_b)
          block_b = whole_b->data + pc * whole_b->padded_cols + (whole_b->first_col + jc) * kc;
        else
          sgemm_pack_b<Tile>(trans_b, trans_b ? b + jc * ldb + pc : b + pc * ldb + jc, ldb, kc, nc, packed_b);
        // The block of B packed next: the next columns, else the next slice
        // of k, else the first block again for the next rows of C.
        int64_t next_pc = pc, next_jc = jc + kNc;
        if (next_jc >= n) next_jc = 0, next_pc = pc + kKc < k ? pc + kKc : 0;
        const bool has_next = next_jc > 0 || next_pc > 0 || ic + kMc < m;
        const int64_t next_kc = sgemm_min(kKc, k - next_pc), next_nc = sgemm_min(kNc, n - next_jc);
        const float* next = trans_b ? b + next_jc * ldb + next_pc : b + next_pc * ldb + next_jc;
        const int64_t next_rows = Tile::kPrefetchNextB && has_next && !whole_b ? (trans_b ? next_nc : next_kc) : 0;
        const int64_t next_row_floats = trans_b ? next_kc : next_nc;
        const int64_t panels = (mc + kMr - 1) / kMr, rows_per_panel = (next_rows + panels - 1) / panels;
        for (int64_t ir = 0; ir < mc; ir += kMr) {
          const int64_t first = ir / kMr * rows_per_panel;
          sgemm_prefetch_rows(next, ldb, sgemm_min(first, next_rows), sgemm_min(first + rows_per_panel, next_rows),
                              next_row_floats);
          const float* a_panel = packed_a + ir * kc;
          const int64_t rows = sgemm_min(kMr, mc - ir);
          for (int64_t jr = 0; jr < nc; jr += kNr) {
            const float* b_panel = block_b + jr * kc;
            float* c_tile = c + (ic + ir) * ldc + jc + jr;
            const int64_t cols = sgemm_min(kNr, nc - jr);
            if (rows == kMr && cols == kNr)
              Tile::micro(kc, a_panel, b_panel, c_tile, ldc, add);
            else
              sgemm_edge<Tile>(kc, a_panel, b_panel, c_tile, ldc, add, rows, cols);
          }
        }
      }
    }
  }
}

// What a Tile does with a whole packed B (sgemm.h's SgemmPackedOps).
template <class Tile>
struct WholeB {
  static void pack(bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k, int64_t k_begin, int64_t k_end,
                   float* out) {
    sgemm_pack_whole_b<Tile>(trans_b, b, ldb, n, k, k_begin, k_end, out);
  }
  static void product(bool trans_a, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PackedB& b,
                      bool accumulate, float* c, int64_t ldc) {
    float* packed_a = ::pf::cpu::sgemm_pack_a();  // the function, not the template of the same name above
    blocked_sgemm<Tile>(trans_a, false, m, n, k, a, lda, nullptr, 0, accumulate, c, ldc, packed_a, nullptr, &b);
  }
};

template <class Tile>
constexpr SgemmPackedOps whole_b_ops() {
  return {Tile::kNr, Tile::kKc, &WholeB<Tile>::pack, &WholeB<Tile>::product, 1};
}

}  // namespace
}  // namespace pf::cpu
