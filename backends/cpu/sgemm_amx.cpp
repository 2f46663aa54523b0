// The bf16 products on AMX: operands rounded to bf16 as they are packed, and a 32 x 32 block of C summed in four
// tile registers by the tile dot product, 32 steps of k per instruction.
//
// A tile dot product multiplies a 16 x 32 block of A by a 32 x 16 block of
// B (both bf16, in pairs of steps of k) into a 16 x 16 block of f32 sums:
// 8192 multiply-adds in about 16 cycles, some fifteen times a core's f32
// FMAs (3.3 against 0.22 TFLOP/s measured on one Sapphire Rapids-class
// core, bench/RESULTS.md). So that nothing but the tiles waits, both operands
// are packed tile by tile (each tile 1 KiB, contiguous), and C's block
// stays in tiles 0-3 for a whole slice of k while A's tiles (4, 5) and B's
// (6, 7) stream past.
#include <immintrin.h>

#include <cstdint>

#include "backends/cpu/sgemm.h"

// Compiled for AVX-512 (the packing) and AMX whatever the build's -march,
// and only reached where cpu_isa() is amx: the CPU has the tiles and the
// operating system has let this process use them (cpu_isa.cpp).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,fma,amx-tile,amx-bf16")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"

#include "backends/cpu/sgemm_avx512_common.h"
#include "backends/cpu/sgemm_bf16_pairs.h"

namespace pf::cpu {

namespace {
namespace amx_tile {  // named, so that the portability check (tests/portable) knows this is AMX code

using bf16_pairs::Pair;

// Every tile used is 16 rows of 64 bytes: of A, 16 rows of C by 16 pairs;
// of B, 16 pairs by 16 columns; of C, 16 rows by 16 f32.
constexpr int64_t kTileRows = 16;
constexpr int64_t kTilePairs = 256;  // 32-bit elements in a tile
// The block of C in tiles: two of A's tiles by two of B's.
constexpr int64_t kMr = 32, kNr = 32;
// A slice of k (kKc steps, whole tiles of 32, so only the last slice is
// padded) is what the tiles sum before C's block goes back to memory. The
// tiles outrun everything around them, and a product streaming one
// operand from L3 runs at half their rate (a core reads about 25 GB/s
// from there), so the blocks are sized for L2 (2 MiB): a chunk of B (kKo
// steps by kNc columns, 1 MiB) is packed once and stays there while every
// block of kMb rows runs over it, with those rows' chunk of A (256 KiB) and
// their sums between slices (kMb x kNc f32, 256 KiB). The A panel in use
// (kMr x kKc, 16 KiB) and the B panel it meets (16 KiB) fit L1 (48 KiB)
// together: with slices of 512 steps the B panels streaming past evicted
// the A panel, and the 4096 x 4096 products ran 15-18 % slower.
constexpr int64_t kKc = 256, kKo = 1024, kMb = 128, kNc = 512;
static_assert(kKc % (2 * kTileRows) == 0 && kKo % kKc == 0 && kMb % kMr == 0 && kNc % kNr == 0);
static_assert(kNc * kKo / 2 <= kSgemmPackB);

inline int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
inline int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }
// Tiles of 16 pairs that hold `steps` steps of k.
inline int64_t tiles_along_k(int64_t steps) { return (steps + 2 * kTileRows - 1) / (2 * kTileRows); }

// The layout LDTILECFG reads.
struct TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

// Shapes tiles 0-7 as this kernel uses them. On every product, not once per
// thread: another library on the same thread (oneDNN, in a process that
// also runs PyTorch) may have shaped them otherwise or released them.
void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.bytes_per_row[t] = 64;
    config.rows[t] = kTileRows;
  }
  _tile_loadconfig(&config);
}

// Where a block of C's sums come from and go to in one slice of k: C
// itself (row stride ldc) or, between slices, a contiguous scratch block
// (row stride kNr), whose rows fall in different sets of L1 where C's
// rows, a power of two apart, would evict each other. No `from`: zeros.
struct BlockIo {
  const float* from;
  int64_t from_ld;
  float* to;
  int64_t to_ld;
};

// to[kMr x kNr] = from (or zero) + the product, over `tiles` tiles of k, of
// an A panel (rows 0-15's tiles at a, rows 16-31's tiles after them) and a
// B panel (columns 0-15's tiles at b, columns 16-31's after them). Each
// element's sum starts from C (or zero) and adds its products in order of
// k, whichever block it lies in.
void micro_kernel(int64_t tiles, const Pair* a, const Pair* b, const BlockIo& io) {
  const int64_t from_stride = io.from_ld * static_cast<int64_t>(sizeof(float));
  if (io.from) {
    const float* lower = io.from + kTileRows * io.from_ld;
    _tile_loadd(0, io.from, from_stride);
    _tile_loadd(1, io.from + kTileRows, from_stride);
    _tile_loadd(2, lower, from_stride);
    _tile_loadd(3, lower + kTileRows, from_stride);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  const Pair* a_lower = a + tiles * kTilePairs;
  const Pair* b_right = b + tiles * kTilePairs;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t at = t * kTilePairs;
    _tile_loadd(4, a + at, 64);
    _tile_loadd(5, a_lower + at, 64);
    _tile_loadd(6, b + at, 64);
    _tile_loadd(7, b_right + at, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  const int64_t to_stride = io.to_ld * static_cast<int64_t>(sizeof(float));
  float* lower = io.to + kTileRows * io.to_ld;
  _tile_stored(0, io.to, to_stride);
  _tile_stored(1, io.to + kTileRows, to_stride);
  _tile_stored(2, lower, to_stride);
  _tile_stored(3, lower + kTileRows, to_stride);
}

// A block cut by the edge of C (rows x cols of it inside): where it reads or
// writes C, it goes through a full scratch block, C's corner and zeros
// elsewhere, so that an element gets the sums it would get in a full block.
void edge_kernel(int64_t tiles, const Pair* a, const Pair* b, BlockIo io, int64_t rows, int64_t cols, bool from_c,
                 bool to_c) {
  alignas(64) float block[kMr * kNr];
  float* c = to_c ? io.to : nullptr;
  const int64_t ldc = io.to_ld;
  if (from_c && io.from) {
    for (int64_t r = 0; r < kMr; ++r)
      for (int64_t j = 0; j < kNr; ++j) block[r * kNr + j] = r < rows && j < cols ? io.from[r * io.from_ld + j] : 0.0f;
    io.from = block, io.from_ld = kNr;
  }
  if (to_c) io.to = block, io.to_ld = kNr;
  micro_kernel(tiles, a, b, io);
  if (to_c)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < cols; ++j) c[r * ldc + j] = block[r * kNr + j];
}

// op(A)[0:mc, 0:kc] (a at its first element) into tiles: rows in panels of
// 16 (zero rows to a multiple of kMr), each panel's steps in tiles of 32
// (zero steps to the last tile's end), tile (panel, t) at
// out + (panel * tiles + t) * kTilePairs, its row r's pairs at + r * 16.
void pack_a(bool trans, const float* a, int64_t lda, int64_t mc, int64_t kc, Pair* out) {
  const int64_t tiles = tiles_along_k(kc);
  auto store = [&](int64_t i, int64_t p, __m512* v) {
    float* tile = reinterpret_cast<float*>(out + (i / 16 * tiles + p / 16) * kTilePairs);
    for (int64_t r = 0; r < 16; ++r) _mm512_store_ps(tile + r * 16, v[r]);
  };
  bf16_pairs::for_each_pair_block({a, lda, !trans, mc, kc}, round_up(mc, kMr), tiles * 16, true, store);
}

// op(B)[0:kc, 0:nc] (b at its first element) into tiles: columns in panels
// of 16 (zero columns to a multiple of kNr), steps as pack_a's, tile
// (panel, t) at out + (panel * tiles + t) * kTilePairs, its pair p's
// columns at + p * 16. `stream` writes past the caches.
void pack_b(bool trans, const float* b, int64_t ldb, int64_t kc, int64_t nc, Pair* out, bool stream) {
  const int64_t tiles = tiles_along_k(kc);
  auto store = [&](int64_t j, int64_t p, __m512* v) {
    float* tile = reinterpret_cast<float*>(out + (j / 16 * tiles + p / 16) * kTilePairs);
    for (int64_t q = 0; q < 16; ++q)
      if (stream)
        _mm512_stream_ps(tile + q * 16, v[q]);
      else
        _mm512_store_ps(tile + q * 16, v[q]);
  };
  bf16_pairs::for_each_pair_block({b, ldb, trans, nc, kc}, round_up(nc, kNr), tiles * 16, false, store);
}

// Steps [0, steps) of op(A)[0:rows, k] (a at its first step) packed slice
// by slice as pack_a packs a slice, slice s's tiles at out + s * kKc / 2 *
// (rows rounded up to kMr): the layout pack_whole_b gives B.
void pack_a_slices(bool trans, const float* a, int64_t lda, int64_t rows, int64_t steps, Pair* out) {
  for (int64_t pc = 0; pc < steps; pc += kKc)
    pack_a(trans, trans ? a + pc * lda : a + pc, lda, rows, min64(kKc, steps - pc), out + pc / 2 * round_up(rows, kMr));
}

// One slice of k (`tiles` of it) for the 32 x 32 blocks of C in rows
// [first_row, end_row) and columns [0, cols) of a chunk's block, whose
// element (0, 0) is at c: A's panels from slice_a (row 0's), B's from
// slice_b (column 0's). The chunk's first slice starts from C (or zeros),
// its last ends in C; in between the sums go through `sums`, the scratch
// blocks of the kMb rows from first_row on.
struct Slice {
  int64_t tiles;
  const Pair* slice_a;
  const Pair* slice_b;
  bool from_c, from_zero, to_c;
};

void multiply_slice(const Slice& s, int64_t first_row, int64_t end_row, int64_t cols, float* c, int64_t ldc,
                    float* sums) {
  const int64_t panel_pairs = s.tiles * 16;
  for (int64_t ir = first_row; ir < end_row; ir += kMr) {
    const Pair* a_panel = s.slice_a + ir * panel_pairs;
    const int64_t rows = min64(kMr, end_row - ir);
    for (int64_t jr = 0; jr < cols; jr += kNr) {
      float* c_block = c + ir * ldc + jr;
      float* scratch = sums + ((ir - first_row) / kMr * (kNc / kNr) + jr / kNr) * kMr * kNr;
      const BlockIo io{s.from_zero ? nullptr : s.from_c ? c_block : scratch, s.from_c ? ldc : kNr,
                       s.to_c ? c_block : scratch, s.to_c ? ldc : kNr};
      const Pair* b_panel = s.slice_b + jr * panel_pairs;
      if (rows == kMr && cols - jr >= kNr)
        micro_kernel(s.tiles, a_panel, b_panel, io);
      else
        edge_kernel(s.tiles, a_panel, b_panel, io, rows, min64(kNr, cols - jr), s.from_c, s.to_c);
    }
  }
}

// The thread's buffer for the sums of kMb x kNc of C between slices of k,
// allocated on its first product.
float* sums_buffer() {
  thread_local AlignedFloats sums = aligned_floats(kMb * kNc);
  return sums.get();
}

// The loop nest of sgemm_amx_bf16. With `whole_b` (B packed by
// pack_whole_b, whose column first_col is column 0 here), B's chunks are
// read from there instead of packed: the same tiles, so the same sums.
void blocked(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
             int64_t ldb, bool accumulate, float* c, int64_t ldc, const PackedB* whole_b) {
  Pair* packed_a = reinterpret_cast<Pair*>(sgemm_pack_a());
  Pair* packed_b = reinterpret_cast<Pair*>(sgemm_pack_b());
  float* sums = sums_buffer();
  configure_tiles();
  for (int64_t ko = 0; ko < k; ko += kKo) {
    const int64_t steps = min64(kKo, k - ko);
    // As many rows of A as the buffer holds for this chunk (3072).
    const int64_t mc_max = kSgemmPackA / (round_up(steps, kKc) / 2) / kMr * kMr;
    for (int64_t ic = 0; ic < m; ic += mc_max) {
      const int64_t mc = min64(mc_max, m - ic), a_rows = round_up(mc, kMr);
      pack_a_slices(trans_a, trans_a ? a + ko * lda + ic : a + ic * lda + ko, lda, mc, steps, packed_a);
      for (int64_t jc = 0; jc < n; jc += kNc) {
        const int64_t nc = min64(kNc, n - jc), b_cols = whole_b ? whole_b->padded_cols : round_up(nc, kNr);
        const Pair* chunk_b = packed_b;
        if (whole_b)  // its column first_col + jc in slice ko / kKc
          chunk_b = reinterpret_cast<const Pair*>(whole_b->data) + ko / 2 * b_cols;
        else
          for (int64_t pc = 0; pc < steps; pc += kKc)
            pack_b(trans_b, trans_b ? b + jc * ldb + ko + pc : b + (ko + pc) * ldb + jc, ldb, min64(kKc, steps - pc),
                   nc, packed_b + pc / 2 * b_cols, false);
        const int64_t first_col = whole_b ? whole_b->first_col + jc : 0;
        for (int64_t ib = 0; ib < mc; ib += kMb)
          for (int64_t pc = 0; pc < steps; pc += kKc) {
            const int64_t tiles = tiles_along_k(min64(kKc, steps - pc));
            const bool from_c = pc == 0;
            const Slice slice{tiles, packed_a + pc / 2 * a_rows, chunk_b + pc / 2 * b_cols + first_col * tiles * 16,
                              from_c, from_c && !accumulate && ko == 0, pc + kKc >= steps};
            multiply_slice(slice, ib, min64(ib + kMb, mc), nc, c + ic * ldc + jc, ldc, sums);
          }
      }
    }
  }
  // Leaves the tiles' state empty: the thread's context switches save less.
  _tile_release();
}

// Steps [k_begin, k_end) of op(B)[k, n] (k_begin a multiple of kKc) packed
// whole: slice pc's tiles at out + pc / 2 * padded columns, laid out as
// pack_b lays out a block.
void pack_whole_b(bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k, int64_t k_begin, int64_t k_end,
                  float* out) {
  const int64_t padded_cols = round_up(n, kNr);
  bf16_pairs::pack_whole_b(pack_b, kKc, padded_cols, padded_cols * tiles_along_k(k) * 16, trans_b, b, ldb, n, k,
                           k_begin, k_end, out);
}

void packed_product(bool trans_a, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PackedB& b,
                    bool accumulate, float* c, int64_t ldc) {
  blocked(trans_a, false, m, n, k, a, lda, nullptr, 0, accumulate, c, ldc, &b);
}

}  // namespace amx_tile
}  // namespace

void sgemm_amx_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc) {
  amx_tile::blocked(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc, nullptr);
}

const SgemmPackedOps& sgemm_packed_ops_amx() {
  // Two steps of k a 32-bit pair, k padded to whole tiles of 32 steps.
  static constexpr SgemmPackedOps ops{amx_tile::kNr, amx_tile::kKc, &amx_tile::pack_whole_b,
                                      &amx_tile::packed_product, 2, 2 * amx_tile::kTileRows};
  return ops;
}

}  // namespace pf::cpu

#pragma GCC diagnostic pop
#pragma GCC pop_options
