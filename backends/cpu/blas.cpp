// Row-major GEMM, for matmul, conv2d and the conv2d gradients: the own sgemms (sgemm.h) or OpenBLAS.
#include "backends/cpu/blas.h"

#include <cblas.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <type_traits>
#include <vector>

#include "backends/cpu/packed_weights.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/sgemm.h"
#include "ir/diagnostic.h"
#include "ir/dtype.h"

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

std::atomic<bool> openblas_sgemm_only{false};

// Whether the calling thread's f32 products are bf16 products (Bf16Products).
thread_local bool bf16_products_here = false;

// The own kernel of the bf16 products: AMX's tiles where the CPU has them,
// else AVX-512 BF16's dot products where they outrun its f32 kernel; else
// openblas, meaning none (rounded copies of the operands through the f32
// kernel).
SgemmKernel bf16_kernel() {
  if (openblas_sgemm_only.load(std::memory_order_relaxed)) return SgemmKernel::openblas;
  if (cpu_isa() == CpuIsa::amx) return SgemmKernel::amx_bf16;
  return cpu_bf16_dot_is_fast() ? SgemmKernel::avx512_bf16 : SgemmKernel::openblas;
}

// The kernel of an f32 product `n` columns wide: decided once for the whole
// product, so that the blocks it is split into on several threads all take
// the same kernel and give the bits one thread would (sgemm.h).
SgemmKernel sgemm_kernel_of(int64_t n) {
  if (openblas_sgemm_only.load(std::memory_order_relaxed)) return SgemmKernel::openblas;
  return sgemm_kernel_for(cpu_isa(), n);
}

// How a product of few rows runs: decided once for the whole product, as
// the kernel is, since its sums differ from the blocked kernels'.
enum class Rows { many, few };

void blas_gemm(SgemmKernel kernel, Rows rows, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const bool accumulate = beta != 0.0f;
  if (rows == Rows::few) {
    switch (kernel) {
      case SgemmKernel::avx512:
        sgemm_few_rows_avx512(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc);
        return;
      case SgemmKernel::avx2: sgemm_few_rows_avx2(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
      case SgemmKernel::sse2: sgemm_few_rows_sse2(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
      case SgemmKernel::openblas:
      case SgemmKernel::avx512_bf16:
      case SgemmKernel::amx_bf16: break;  // never chosen with Rows::few
    }
  }
  switch (kernel) {
    case SgemmKernel::avx512: sgemm_avx512(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
    case SgemmKernel::avx2: sgemm_avx2(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
    case SgemmKernel::sse2: sgemm_sse2(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
    case SgemmKernel::avx512_bf16: sgemm_bf16(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
    case SgemmKernel::amx_bf16: sgemm_amx_bf16(trans_a, trans_b, m, n, k, a, lda, b, ldb, accumulate, c, ldc); return;
    case SgemmKernel::openblas: break;
  }
  cblas_sgemm(CblasRowMajor, trans(trans_a), trans(trans_b), blas_int(m), blas_int(n), blas_int(k), 1.0f, a,
              blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

void blas_gemm(SgemmKernel /*f32 only*/, Rows /*f32 only*/, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
               const double* a, int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, trans(trans_a), trans(trans_b), blas_int(m), blas_int(n), blas_int(k), 1.0, a,
              blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

// Products below this many multiply-adds run on one thread: waking a worker
// costs some microseconds, and halves of a small GEMM run below the rate.
constexpr int64_t kSplitWork = int64_t{1} << 21;

// What gemm_with does with C before the product is added to it.
enum class Start { zero, keep, bias };

// C[rows, cols] (row stride ldc) = each row a copy of bias[0, cols).
template <class T>
void fill_rows(T* c, int64_t rows, int64_t cols, int64_t ldc, const T* bias) {
  for (int64_t i = 0; i < rows; ++i) std::copy_n(bias, cols, c + i * ldc);
}

// One BLAS call on the block of C it is given: a bias start fills the block
// first (where it is about to be read), then the product is accumulated.
template <class T>
void block_gemm(SgemmKernel kernel, Rows rows, Start start, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                const T* a, int64_t lda, const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc) {
  if (start == Start::bias) fill_rows(c, m, n, ldc, bias);
  blas_gemm(kernel, rows, trans_a, trans_b, m, n, k, a, lda, b, ldb, start == Start::zero ? T(0) : T(1), c, ldc);
}

// Splits C into one block of whole rows or columns per thread of the budget
// (columns when C is wide, so each thread reads all of A and its share of
// B) and runs block(by_cols, lo, hi) on each. Blocks of rows are multiples of
// 16, blocks of columns multiples of `col_align`: 16, the width of
// OpenBLAS's register tiles; the own kernels finish a block's last partial
// tile separately, and their bits do not depend on where blocks end.
template <class Block>
void split_blocks(int64_t m, int64_t n, int64_t col_align, const Block& block) {
  constexpr int64_t kRowAlign = 16;
  const bool by_cols = n >= m;
  const int64_t align = by_cols ? col_align : kRowAlign, extent = by_cols ? n : m;
  parallel_for((extent + align - 1) / align, 1, [&](int64_t begin, int64_t end) {
    block(by_cols, begin * align, std::min(end * align, extent));
  });
}

// Each block one single-threaded GEMM call.
template <class T>
void split_gemm(SgemmKernel kernel, Rows rows, Start start, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                const T* a, int64_t lda, const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc) {
  split_blocks(m, n, 16, [&](bool by_cols, int64_t lo, int64_t hi) {
    if (by_cols)
      block_gemm(kernel, rows, start, trans_a, trans_b, m, hi - lo, k, a, lda, trans_b ? b + lo * ldb : b + lo, ldb,
                 bias ? bias + lo : nullptr, c + lo, ldc);
    else
      block_gemm(kernel, rows, start, trans_a, trans_b, hi - lo, n, k, trans_a ? a + lo : a + lo * lda, lda, b, ldb,
                 bias, c + lo * ldc, ldc);
  });
}

// The product on a B packed whole (packed_weights.h), split as split_gemm
// splits, blocks of columns starting at a panel of the packed B.
void packed_gemm(const SgemmPackedOps& ops, Start start, bool trans_a, int64_t m, int64_t n, int64_t k,
                 const float* a, int64_t lda, const float* packed_b, const float* bias, float* c, int64_t ldc,
                 bool split) {
  const int64_t padded_cols = ops.padded_cols(n);
  auto block = [&](int64_t rows, int64_t cols, int64_t first_row, int64_t first_col) {
    float* c_block = c + first_row * ldc + first_col;
    if (start == Start::bias) fill_rows(c_block, rows, cols, ldc, bias + first_col);
    ops.product(trans_a, rows, cols, k, trans_a ? a + first_row : a + first_row * lda, lda,
                PackedB{packed_b, padded_cols, first_col}, start != Start::zero, c_block, ldc);
  };
  if (!split) {
    block(m, n, 0, 0);
    return;
  }
  split_blocks(m, n, ops.tile_cols, [&](bool by_cols, int64_t lo, int64_t hi) {
    if (by_cols)
      block(m, hi - lo, 0, lo);
    else
      block(hi - lo, n, lo, 0);
  });
}

// `rows` x `cols` of x (row stride ld) rounded to bf16, into `out` with row
// stride cols: a bf16 product's operand where the CPU has no bf16 dot
// products. The calling thread's buffer, reused by its later products.
const float* rounded_to_bf16(const float* x, int64_t rows, int64_t cols, int64_t ld, std::vector<float>& out) {
  out.resize(static_cast<size_t>(rows * cols));
  float* dst = out.data();
  parallel_for(rows, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(cols, 1)), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      for (int64_t j = 0; j < cols; ++j) dst[i * cols + j] = round_to_bf16(x[i * ld + j]);
  });
  return dst;
}

struct RoundedOperands {
  std::vector<float> a, b;
};

// Handles what BLAS cannot: an empty result, and an empty contraction (BLAS
// would reject lda = 0), whose product is all zeros. A bf16 product takes
// the bf16 kernel, or rounded copies of its operands into the f32 one,
// before it is split, so that every block computes alike.
template <class T>
void gemm_with(Start start, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
               const T* b, int64_t ldb, const T* bias, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (start == Start::zero)
      for (int64_t i = 0; i < m; ++i) std::fill_n(c + i * ldc, n, T(0));
    if (start == Start::bias) fill_rows(c, m, n, ldc, bias);
    return;
  }
  SgemmKernel kernel = std::is_same_v<T, float> ? sgemm_kernel_of(n) : SgemmKernel::openblas;
  if constexpr (std::is_same_v<T, float>) {
    if (bf16_products_here) {
      if (const SgemmKernel own = bf16_kernel(); own != SgemmKernel::openblas) {
        kernel = own;
      } else {
        thread_local RoundedOperands rounded;
        a = rounded_to_bf16(a, trans_a ? k : m, trans_a ? m : k, lda, rounded.a);
        lda = trans_a ? m : k;
        b = rounded_to_bf16(b, trans_b ? n : k, trans_b ? k : n, ldb, rounded.b);
        ldb = trans_b ? k : n;
      }
    }
  }
  // OpenBLAS's sums depend on where a block's edges fall: the f64 products
  // (references and tests, never a training step's hot path) run whole, so
  // that they too give the same bits on any number of threads. Only the f32
  // products of a comparison run (use_openblas_sgemm) are split through it.
  const bool splittable = std::is_same_v<T, float>;
  // A few rows (a token at a time) read B once instead of packing it.
  const bool own_f32 = kernel == SgemmKernel::avx512 || kernel == SgemmKernel::avx2 || kernel == SgemmKernel::sse2;
  const Rows rows = own_f32 && m <= kSgemmFewRows && m * k <= kSgemmPackA ? Rows::few : Rows::many;
  const bool split = splittable && kernel_threads() > 1 && m * n * k >= kSplitWork;
  if constexpr (std::is_same_v<T, float>) {
    // A weight read again later in the step (a PackedWeightsScope) is read packed.
    const bool blocked = kernel != SgemmKernel::openblas && rows == Rows::many;
    if (PackedWeights* weights = packed_weights_here(); weights && blocked)
      if (const float* packed_b = weights->packed(kernel, trans_b, b, ldb, n, k)) {
        packed_gemm(sgemm_packed_ops(kernel), start, trans_a, m, n, k, a, lda, packed_b, bias, c, ldc, split);
        return;
      }
  }
  if (split) {
    split_gemm(kernel, rows, start, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
    return;
  }
  block_gemm(kernel, rows, start, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
          int64_t ldb, float* c, int64_t ldc) {
  gemm_with<float>(Start::zero, trans_a, trans_b, m, n, k, a, lda, b, ldb, nullptr, c, ldc);
}

void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda, const double* b,
          int64_t ldb, double* c, int64_t ldc) {
  gemm_with<double>(Start::zero, trans_a, trans_b, m, n, k, a, lda, b, ldb, nullptr, c, ldc);
}

void gemm_accumulate(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                     const float* b, int64_t ldb, float* c, int64_t ldc) {
  gemm_with<float>(Start::keep, trans_a, trans_b, m, n, k, a, lda, b, ldb, nullptr, c, ldc);
}

void gemm_accumulate(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
                     const double* b, int64_t ldb, double* c, int64_t ldc) {
  gemm_with<double>(Start::keep, trans_a, trans_b, m, n, k, a, lda, b, ldb, nullptr, c, ldc);
}

void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
               const float* b, int64_t ldb, const float* bias, float* c, int64_t ldc) {
  gemm_with<float>(bias ? Start::bias : Start::zero, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
}

void gemm_bias(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const double* a, int64_t lda,
               const double* b, int64_t ldb, const double* bias, double* c, int64_t ldc) {
  gemm_with<double>(bias ? Start::bias : Start::zero, trans_a, trans_b, m, n, k, a, lda, b, ldb, bias, c, ldc);
}

}  // namespace pf::cpu

namespace pf::cpu {

void set_cpu_threads(int threads) {
  cpu_isa();  // a PF_CPU_ISA that names no instruction set stops the set-up, before any kernel runs
  openblas_set_num_threads(1);
  set_kernel_threads(threads);
}
const char* blas_core_name() { return openblas_get_corename(); }

void use_openblas_sgemm(bool openblas_only) { openblas_sgemm_only = openblas_only; }

Bf16Products::Bf16Products(bool on) : before_(bf16_products_here) { bf16_products_here = on; }
Bf16Products::~Bf16Products() { bf16_products_here = before_; }
bool bf16_products() { return bf16_products_here; }

const char* bf16_kernel_name() {
  const SgemmKernel own = bf16_kernel();
  return own != SgemmKernel::openblas ? sgemm_kernel_label(own) : "rounded operands, then the f32 kernel";
}

bool bf16_products_packed() { return bf16_kernel() != SgemmKernel::openblas; }

const char* sgemm_kernel_name() {
  // The kernel of the step's typical product (wide enough for any tile).
  return sgemm_kernel_label(sgemm_kernel_of(4096));
}

}  // namespace pf::cpu
