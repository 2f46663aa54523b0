// Pipeforge's own single-precision GEMM for CPUs with AVX-512 (internal to backends/cpu).
//
// OpenBLAS reaches 65-80 % of this machine's FMA peak on the products a
// training step makes (a batch of a few hundred rows against 4096 x 4096
// weights): it streams the large operand from memory while packing it, and
// packs it with a layout that suits square products. This GEMM blocks for
// such shapes: the small operand is packed once per slice of k, the large
// one once in all, and a 6 x 64 register tile runs at 97 % of peak on the
// packed panels.
#pragma once

#include <cstdint>

namespace pf::cpu {

/// Whether this CPU runs avx512_sgemm (AVX-512 F; checked once).
bool avx512_sgemm_supported();

/// Whether avx512_sgemm is worth calling for this shape: its register tile
/// is 6 rows by 64 columns, and a product much narrower than that would
/// mostly compute padding (OpenBLAS's smaller tiles waste less there).
bool avx512_sgemm_suits(int64_t m, int64_t n, int64_t k);

/// C[m,n] = op(A)[m,k] * op(B)[k,n] (+ C when accumulate), row-major, op(X)
/// = X^T when its flag is set; lda, ldb, ldc are the row strides as stored.
/// Requires avx512_sgemm_supported(), m, n, k > 0. Single-threaded: callers
/// split large products (blas.cpp). Each thread packs into buffers of its
/// own, allocated on its first call and kept.
void avx512_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                  const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);

}  // namespace pf::cpu
