// Row-major GEMM for matmul, conv2d and their gradients: our own sgemms, or OpenBLAS's cblas (internal).
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

/// C[m,n] += op(A)[m,k] * op(B)[k,n] (beta = 1): as gemm, but C is added
/// to, and k == 0 leaves it as it is. conv2d_grad_weight sums its images so.
void gemm_accumulate(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float* c, int64_t ldc);
void gemm_accumulate(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
                     const double* b, int64_t ldb, double* c, int64_t ldc);

/// C[m,n] = bias[n] (every row) + op(A)[m,k] * op(B)[k,n]: a linear layer's
/// bias added where the GEMM writes its result, in place of a pass of its own.
/// A null bias makes it gemm.
void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, const float* bias, float* c, int64_t ldc);
void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
               const double* b, int64_t ldb, const double* bias, double* c, int64_t ldc);

}  // namespace pf::cpu

namespace pf::cpu {

/// A CPU device's thread budget (p stages on p cores run with 1 each): what
/// gemm splits its large products over and the other kernels their large
/// loops (parallel.h). OpenBLAS itself always runs single-threaded, each of
/// its calls on the thread that makes it: one pool for every kernel, and no
/// BLAS worker left spinning on a core after a call. Throws pf::Error where
/// PF_CPU_ISA names no instruction set (cpu_isa.h).
void set_cpu_threads(int threads);

/// Which kernel runs the f32 products: Pipeforge's own (sgemm.h), the widest
/// that cpu_isa() allows (AVX-512, AVX2 + FMA, or SSE2), the default; or,
/// with `openblas_only`, OpenBLAS's for all of them (for comparisons).
/// f64 products always go through OpenBLAS, each on one thread.
///
/// What holds on any number of threads: with the own kernels, every f32 and
/// f64 product gives the same bits whatever the thread budget. With
/// `openblas_only`, f32 products split over threads may differ from one
/// thread's in the last bits (OpenBLAS's sums depend on where blocks end);
/// they agree within float rounding.
void use_openblas_sgemm(bool openblas_only);

/// While one lives, the calling thread's f32 products are bf16 products:
/// their operands rounded to bf16 (to nearest, ties to even), the exact
/// products of those summed in f32, as the products of a stage compiled
/// with --dtype bf16 compute (its values stay f32). AMX's tiles where the
/// CPU has them, else AVX-512 BF16's dot products where they are fast
/// (cpu_bf16_dot_is_fast), else rounded copies of the operands through the
/// f32 kernel; any way on every thread budget with the same bits. Scopes
/// nest; the previous setting returns.
class Bf16Products {
 public:
  explicit Bf16Products(bool on);
  ~Bf16Products();
  Bf16Products(const Bf16Products&) = delete;
  Bf16Products& operator=(const Bf16Products&) = delete;

 private:
  bool before_;
};

/// Whether the calling thread's f32 products are bf16 products now.
bool bf16_products();

/// What runs the bf16 products, for benchmark reports.
const char* bf16_kernel_name();

/// Whether the bf16 products run on an own bf16 kernel (AMX or AVX-512
/// BF16), which keeps a watched weight packed as bf16 pairs, rather than
/// on rounded copies of the operands (never watched).
bool bf16_products_packed();

/// What runs a step's f32 products, for benchmark reports:
/// "pipeforge-avx512", "pipeforge-avx2", "pipeforge-sse2" or "openblas".
const char* sgemm_kernel_name();

/// The name of the kernel OpenBLAS chose for this CPU (e.g. "SkylakeX", or
/// "Haswell" under OPENBLAS_CORETYPE=Haswell), for benchmark reports.
const char* blas_core_name();

}  // namespace pf::cpu
