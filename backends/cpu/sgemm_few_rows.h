// Products of a few rows of A against a large B (internal to backends/cpu/sgemm_*.cpp).
//
// Reading a language model one token at a time multiplies one row by each
// weight matrix: the blocked kernels would pack all of B to use a sixth of
// their register tile once, so the time would go to copying the weights.
// Here B is read once, straight from memory, and the few rows of A (copied
// into the thread's packing buffer) stay in L1 beside a slice of it:
//   B as stored (b[kk * ldb + j]): each row of B is added, scaled by A's
//     elements in that column, into the rows of C (kept in L1);
//   B transposed (b[j * ldb + kk]): each element of C is a dot product of a
//     row of A and a row of B, four rows of B at a time.
//
// Every element of C is computed by the same operations whichever block of
// columns or rows it falls in (no operation depends on where a block
// starts; the scalar tails repeat the vector lanes' arithmetic, which the
// build does not contract into fused multiply-adds), so a split product
// gives the whole product's bits.
//
// Each kernel's file includes this inside its `#pragma GCC target` region,
// as sgemm_blocking.h, with Vec a GCC vector of floats as wide as the set's
// registers.

namespace pf::cpu {
namespace {

// Rows of B asked for ahead, a cache line at a time while the first row of A
// meets them (the others find them in L1), not to be kept (prefetchnta):
// with the hardware's prefetcher alone the products ran at 70-79 % of a
// plain read of the same bytes, with this at 84-88 % (decode_gemm_bench).
constexpr int64_t kFewRowsAhead = 4;
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

// C[m, n] (+)= A[m, k] B[k, n] with B as stored; a: m rows of k, contiguous.
template <class Vec>
void few_rows_b_stored(int64_t m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, bool accumulate,
                       float* c, int64_t ldc) {
  constexpr int64_t kW = sizeof(Vec) / sizeof(float);
  if (!accumulate)
    for (int64_t r = 0; r < m; ++r)
      for (int64_t j = 0; j < n; ++j) c[r * ldc + j] = 0.0f;
  for (int64_t kk = 0; kk < k; ++kk) {
    const float* row = b + kk * ldb;
    for (int64_t r = 0; r < m; ++r) {
      const float s = a[r * k + kk];
      const Vec sv = Vec{} + s;
      float* out = c + r * ldc;
      int64_t j = 0;
      for (; j + kW <= n; j += kW) {
        if (r == 0 && j % kFloatsPerLine == 0) __builtin_prefetch(row + kFewRowsAhead * ldb + j, 0, 0);
        few_rows_store(out + j, few_rows_load<Vec>(out + j) + sv * few_rows_load<Vec>(row + j));
      }
      for (; j < n; ++j) out[j] = out[j] + s * row[j];
    }
  }
}

// C[m, n] (+)= A[m, k] B^T with B [n, k] as stored; a: m rows of k, contiguous.
template <class Vec>
void few_rows_b_transposed(int64_t m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb,
                           bool accumulate, float* c, int64_t ldc) {
  constexpr int64_t kW = sizeof(Vec) / sizeof(float), kRows = 4;
  for (int64_t j0 = 0; j0 < n; j0 += kRows) {
    // The last group repeats its last row rather than computing another way.
    const float* rows[kRows];
    for (int64_t q = 0; q < kRows; ++q) rows[q] = b + (j0 + q < n ? j0 + q : n - 1) * ldb;
    for (int64_t r = 0; r < m; ++r) {
      const float* x = a + r * k;
      Vec acc[kRows] = {};
      int64_t kk = 0;
      for (; kk + kW <= k; kk += kW) {
        const Vec xv = few_rows_load<Vec>(x + kk);
        if (r == 0 && kk % kFloatsPerLine == 0)  // the next group's rows are the next kRows of B
          for (int64_t q = 0; q < kRows; ++q) __builtin_prefetch(rows[q] + kRows * ldb + kk, 0, 0);
        for (int64_t q = 0; q < kRows; ++q) acc[q] += xv * few_rows_load<Vec>(rows[q] + kk);
      }
      float tail[kRows] = {};
      for (; kk < k; ++kk)
        for (int64_t q = 0; q < kRows; ++q) tail[q] += x[kk] * rows[q][kk];
      for (int64_t q = 0; q < kRows && j0 + q < n; ++q) {
        float sum = 0.0f;
        for (int64_t lane = 0; lane < kW; ++lane) sum += acc[q][lane];
        sum += tail[q];
        float& out = c[r * ldc + j0 + q];
        out = accumulate ? out + sum : sum;
      }
    }
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
