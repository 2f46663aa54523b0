// Row-major GEMM through OpenBLAS's cblas, for matmul and conv2d.
#include "backends/cpu/blas.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

// cblas takes 32-bit sizes in this build of OpenBLAS.
blasint blas_int(int64_t v) {
  if (v > std::numeric_limits<blasint>::max())
    throw Error(
        fmt::format("matrix dimension {} is too large for BLAS (at most {})", v, std::numeric_limits<blasint>::max()));
  return static_cast<blasint>(v);
}

// Returns true when there is nothing left for BLAS to do: an empty result, or
// an empty contraction whose result is all zeros (BLAS would reject lda = 0).
template <class T>
bool trivial(int64_t m, int64_t n, int64_t k, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return true;
  if (k > 0) return false;
  for (int64_t i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, T(0));
  return true;
}

CBLAS_TRANSPOSE trans(bool t) { return t ? CblasTrans : CblasNoTrans; }

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc) {
  if (trivial(m, n, k, c, ldc)) return;
  cblas_sgemm(CblasRowMajor, trans(trans_a), trans(trans_b), blas_int(m), blas_int(n), blas_int(k), 1.0f, a,
              blas_int(lda), b, blas_int(ldb), 0.0f, c, blas_int(ldc));
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc) {
  if (trivial(m, n, k, c, ldc)) return;
  cblas_dgemm(CblasRowMajor, trans(trans_a), trans(trans_b), blas_int(m), blas_int(n), blas_int(k), 1.0, a,
              blas_int(lda), b, blas_int(ldb), 0.0, c, blas_int(ldc));
}

}  // namespace pf::cpu
