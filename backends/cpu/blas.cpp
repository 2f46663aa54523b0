// Row-major GEMM through OpenBLAS's cblas, for matmul, conv2d and the conv2d gradients.
#include "backends/cpu/blas.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <limits>

#include "backends/cpu/parallel.h"
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

CBLAS_TRANSPOSE trans(bool t) { return t ? CblasTrans : CblasNoTrans; }

void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
               int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans(trans_a), trans(trans_b), blas_int(m), blas_int(n), blas_int(k), 1.0f, a,
              blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

void blas_gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
               const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans(trans_a), trans(trans_b), blas_int(m), blas_int(n), blas_int(k), 1.0, a,
              blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

// Handles what BLAS cannot: an empty result, and an empty contraction (BLAS
// would reject lda = 0), whose product is all zeros.
template <class T>
void gemm_with(bool accumulate, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
               const T* b, int64_t ldb, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, T(0));
    return;
  }
  blas_gemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate ? T(1) : T(0), c, ldc);
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc) {
  gemm_with(false, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc) {
  gemm_with(false, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc);
}

void gemm_accumulate(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float* c, int64_t ldc) {
  gemm_with(true, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc);
}

void gemm_accumulate(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
                     const double* b, int64_t ldb, double* c, int64_t ldc) {
  gemm_with(true, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc);
}

}  // namespace pf::cpu

namespace pf::cpu {

void set_blas_threads(int threads) {
  openblas_set_num_threads(std::max(1, threads));
  set_kernel_threads(threads);
}
int blas_threads() { return openblas_get_num_threads(); }
const char* blas_core_name() { return openblas_get_corename(); }

}  // namespace pf::cpu
