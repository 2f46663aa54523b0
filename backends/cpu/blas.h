// Row-major GEMM through OpenBLAS's cblas, for matmul and conv2d (internal).
#pragma once

#include <cstdint>

namespace pf::cpu {

/// C[m,n] = op(A)[m,k] * op(B)[k,n], row-major, with op(X) = X^T when its flag
/// is set; C is overwritten (beta = 0). lda, ldb, ldc are the row strides of
/// A, B and C as stored. Sizes beyond BLAS's 32-bit integers throw pf::Error;
/// k == 0 writes zeros.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc);
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc);

}  // namespace pf::cpu
