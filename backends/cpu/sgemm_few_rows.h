// Products of a few rows of A against a large B (internal to backends/cpu/sgemm_*.cpp).
//
// Reading a language model one token at a time multiplies one row (a row
// per sample decoded side by side) by each weight matrix: the blocked
// kernels would pack all of B to use a sixth of their register tile once,
// so the time would go to copying the weights.
// Here B is read once, straight from memory, and the few rows of A (copied
// into the thread's packing buffer) stay in L1 beside a slice of it:
//   B as stored (b[kk * ldb + j]): a tile of C (every row, a few vectors of
//     columns) stays in registers while a block of rows of B, scaled by A's
//     elements, is added into it;
//   B transposed (b[j * ldb + kk]): each element of C is a dot product of a
//     row of A and a row of B, every row of A against up to four rows of B
//     at a time in registers.
//
// Every element of C is computed by the same operations whichever block of
// columns or rows it falls in (no operation depends on where a block
// starts; the scalar tails repeat the vector lanes' arithmetic, and the
// compiler fuses a multiply and add alike in both), so a split product
// gives the whole product's bits.
//
// Each kernel's file includes this inside its `#pragma GCC target` region,
// as sgemm_blocking.h, with Vec a GCC vector of floats as wide as the set's
// registers.

namespace pf::cpu {
namespace {

constexpr int64_t kFloatsPerLine = 16;

template <class Vec>
inline Vec few_rows_load(const float* p) {
  Vec v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

template <class Vec>
inline void few_rows_store(float* p, Vec v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// Accumulators that leave registers for B's vectors and a broadcast or a
// row of A: 16 of 32 (AVX-512), 8 of 16 (AVX2, SSE), shared by M rows of C.
template <class Vec, int M>
constexpr int few_rows_tile_columns() {
  constexpr int kAccumulators = sizeof(Vec) == 64 ? 16 : 8;
  return kAccumulators / M < 1 ? 1 : kAccumulators / M < 4 ? kAccumulators / M : 4;
}

// Rows of B a tile of C meets while it stays in registers: C goes through
// memory once per block of rows of B instead of once per row (the rows of C,
// added into row by row, cost more than B itself from two rows on: 61 % of
// the streaming read for two rows, 41 % for four), and the block's rows of B
// are read side by side, each in order. Each row's next block is asked for a
// block ahead (into L2: a block of the widest weights is 200-400 KB). More
// rows of C make a step slower, and want more rows of B in flight.
template <int M>
constexpr int64_t few_rows_block_k() {
  return M <= 2 ? 16 : 32;
}

// C[0:M, j:j+kCols*kW) += A[0:M, k0:k1) B[k0:k1, j:j+kCols*kW), the tile of
// C held in registers; a: M rows of k.
template <class Vec, int M, int kCols>
inline void few_rows_b_stored_tile(int64_t k0, int64_t k1, int64_t k, const float* a, const float* b, int64_t ldb,
                                   float* c, int64_t ldc, int64_t j) {
  constexpr int64_t kW = sizeof(Vec) / sizeof(float);
  Vec acc[M][kCols];
  for (int r = 0; r < M; ++r)
    for (int q = 0; q < kCols; ++q) acc[r][q] = few_rows_load<Vec>(c + r * ldc + j + q * kW);
  for (int64_t kk = k0; kk < k1; ++kk) {
    const float* row = b + kk * ldb + j;
    for (int64_t line = 0; line < kCols * kW; line += kFloatsPerLine)
      __builtin_prefetch(row + few_rows_block_k<M>() * ldb + line, 0, 2);
    Vec bv[kCols];
    for (int q = 0; q < kCols; ++q) bv[q] = few_rows_load<Vec>(row + q * kW);
    for (int r = 0; r < M; ++r) {
      const Vec sv = Vec{} + a[r * k + kk];
      for (int q = 0; q < kCols; ++q) acc[r][q] = acc[r][q] + sv * bv[q];
    }
  }
  for (int r = 0; r < M; ++r)
    for (int q = 0; q < kCols; ++q) few_rows_store(c + r * ldc + j + q * kW, acc[r][q]);
}

// C[M, n] += A[M, k] B[k, n] with B as stored, block of rows of B by block:
// wide tiles of C, then one vector, then single columns (the same
// arithmetic, lane by lane).
template <class Vec, int M>
void few_rows_b_stored_rows(int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                            int64_t ldc) {
  constexpr int64_t kW = sizeof(Vec) / sizeof(float);
  constexpr int kCols = few_rows_tile_columns<Vec, M>();
  constexpr int64_t kBlockK = few_rows_block_k<M>();
  for (int64_t k0 = 0; k0 < k; k0 += kBlockK) {
    const int64_t k1 = k0 + kBlockK < k ? k0 + kBlockK : k;
    int64_t j = 0;
    for (; j + kCols * kW <= n; j += kCols * kW) few_rows_b_stored_tile<Vec, M, kCols>(k0, k1, k, a, b, ldb, c, ldc, j);
    for (; j + kW <= n; j += kW) few_rows_b_stored_tile<Vec, M, 1>(k0, k1, k, a, b, ldb, c, ldc, j);
    for (; j < n; ++j)
      for (int r = 0; r < M; ++r) {
        float sum = c[r * ldc + j];
        for (int64_t kk = k0; kk < k1; ++kk) sum = sum + a[r * k + kk] * b[kk * ldb + j];
        c[r * ldc + j] = sum;
      }
  }
}

// C[m, n] (+)= A[m, k] B[k, n] with B as stored; a: m rows of k, contiguous.
template <class Vec>
void few_rows_b_stored(int64_t m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, bool accumulate,
                       float* c, int64_t ldc) {
  if (!accumulate)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) c[r * ldc + j] = 0.0f;
  // The kernels are written for a number of rows known when compiled, so
  // that a tile of C stays in registers.
  static_assert(kSgemmFewRows == 8, "a case per number of rows");
  switch (m) {
    case 1: few_rows_b_stored_rows<Vec, 1>(n, k, a, b, ldb, c, ldc); return;
    case 2: few_rows_b_stored_rows<Vec, 2>(n, k, a, b, ldb, c, ldc); return;
    case 3: few_rows_b_stored_rows<Vec, 3>(n, k, a, b, ldb, c, ldc); return;
    case 4: few_rows_b_stored_rows<Vec, 4>(n, k, a, b, ldb, c, ldc); return;
    case 5: few_rows_b_stored_rows<Vec, 5>(n, k, a, b, ldb, c, ldc); return;
    case 6: few_rows_b_stored_rows<Vec, 6>(n, k, a, b, ldb, c, ldc); return;
    case 7: few_rows_b_stored_rows<Vec, 7>(n, k, a, b, ldb, c, ldc); return;
    default: few_rows_b_stored_rows<Vec, 8>(n, k, a, b, ldb, c, ldc); return;
  }
}

// C[M, n] (+)= A[M, k] B^T, a few rows of B at a time, each the dot
// product of every row of A with it in registers; a: M rows of k. The next
// group's rows of B are asked for a cache line at a time as this group's
// are read, not to be kept (prefetchnta): with the hardware's prefetcher
// alone one row ran at 70-79 % of a plain read of the same bytes, with this
// at 84-88 % (decode_gemm_bench).
template <class Vec, int M>
void few_rows_b_transposed_rows(int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, bool accumulate,
                                float* c, int64_t ldc) {
  constexpr int64_t kW = sizeof(Vec) / sizeof(float);
  constexpr int kRowsB = few_rows_tile_columns<Vec, M>();
  for (int64_t j0 = 0; j0 < n; j0 += kRowsB) {
    // The last group repeats its last row rather than computing another way.
    const float* rows[kRowsB];
    for (int q = 0; q < kRowsB; ++q) rows[q] = b + (j0 + q < n ? j0 + q : n - 1) * ldb;
    Vec acc[M][kRowsB] = {};
    int64_t kk = 0;
    for (; kk + kW <= k; kk += kW) {
      if (kk % kFloatsPerLine == 0)  // the next group's rows are the next kRowsB of B
        for (int q = 0; q < kRowsB; ++q) __builtin_prefetch(rows[q] + kRowsB * ldb + kk, 0, 0);
      Vec bv[kRowsB];
      for (int q = 0; q < kRowsB; ++q) bv[q] = few_rows_load<Vec>(rows[q] + kk);
      for (int r = 0; r < M; ++r) {
        const Vec xv = few_rows_load<Vec>(a + r * k + kk);
        for (int q = 0; q < kRowsB; ++q) acc[r][q] = acc[r][q] + xv * bv[q];
      }
    }
    float tail[M][kRowsB] = {};
    for (; kk < k; ++kk)
      for (int r = 0; r < M; ++r)
        for (int q = 0; q < kRowsB; ++q) tail[r][q] = tail[r][q] + a[r * k + kk] * rows[q][kk];
    for (int r = 0; r < M; ++r)
      for (int q = 0; q < kRowsB && j0 + q < n; ++q) {
        float sum = 0.0f;
        for (int64_t lane = 0; lane < kW; ++lane) sum += acc[r][q][lane];
        sum += tail[r][q];
        float& out = c[r * ldc + j0 + q];
        out = accumulate ? out + sum : sum;
      }
  }
}

// C[m, n] (+)= A[m, k] B^T with B [n, k] as stored; a: m rows of k, contiguous.
template <class Vec>
void few_rows_b_transposed(int64_t m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb,
                           bool accumulate, float* c, int64_t ldc) {
  switch (m) {
    case 1: few_rows_b_transposed_rows<Vec, 1>(n, k, a, b, ldb, accumulate, c, ldc); return;
    case 2: few_rows_b_transposed_rows<Vec, 2>(n, k, a, b, ldb, accumulate, c, ldc); return;
    case 3: few_rows_b_transposed_rows<Vec, 3>(n, k, a, b, ldb, accumulate, c, ldc); return;
    case 4: few_rows_b_transposed_rows<Vec, 4>(n, k, a, b, ldb, accumulate, c, ldc); return;
    case 5: few_rows_b_transposed_rows<Vec, 5>(n, k, a, b, ldb, accumulate, c, ldc); return;
    case 6: few_rows_b_transposed_rows<Vec, 6>(n, k, a, b, ldb, accumulate, c, ldc); return;
    case 7: few_rows_b_transposed_rows<Vec, 7>(n, k, a, b, ldb, accumulate, c, ldc); return;
    default: few_rows_b_transposed_rows<Vec, 8>(n, k, a, b, ldb, accumulate, c, ldc); return;
  }
}

// C[m, n] (+)= op(A)[m, k] op(B)[k, n] for m <= kSgemmFewRows, with m * k
// <= kSgemmPackA (the rows of A are copied into `rows`, that many floats).
template <class Vec>
void few_rows_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc, float* rows) {
  for (int64_t r = 0; r < m; ++r)
    for (int64_t kk = 0; kk < k; ++kk) rows[r * k + kk] = trans_a ? a[kk * lda + r] : a[r * lda + kk];
  if (trans_b)
    few_rows_b_transposed<Vec>(m, n, k, rows, b, ldb, accumulate, c, ldc);
  else
    few_rows_b_stored<Vec>(m, n, k, rows, b, ldb, accumulate, c, ldc);
}

}  // namespace
}  // namespace pf::cpu
