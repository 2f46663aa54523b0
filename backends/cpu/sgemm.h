// Pipeforge's own single-precision GEMMs, one per instruction set (internal to backends/cpu).
//
// OpenBLAS reaches 65-80 % of a core's FMA peak on the products a training
// step makes (a batch of a few hundred rows against 4096 x 4096 weights): it
// streams the large operand from memory while packing it, and packs it with
// a layout that suits square products. These GEMMs block for such shapes
// (sgemm_blocking.h): the small operand is packed once per slice of k, the
// large one once in all, and a register tile as wide as the instruction set
// allows runs over the packed panels.
//
// Every element of C is summed in the same order (k in slices, each slice
// in order) wherever it falls in the tiles and blocks, so a product split
// into blocks of rows or columns gives the bits of the whole product, as
// long as every block takes the same kernel (blas.cpp chooses one per
// product).
#pragma once

#include <cstdint>
#include <memory>
#include <new>

#include "backends/cpu/cpu_isa.h"

namespace pf::cpu {

/// What computes an f32 product.
enum class SgemmKernel {
  avx512,    // 6 x 64 register tile of 512-bit vectors
  avx2,      // 6 x 16 tile of 256-bit vectors with fused multiply-adds
  sse2,      // 6 x 8 tile of 128-bit vectors, for any x86-64 CPU
  openblas,  // cblas_sgemm, only when asked for (use_openblas_sgemm)
  avx512_bf16,  // operands rounded to bf16, 6 x 64 tile of AVX-512 BF16 dot products (bf16 products only)
  amx_bf16,     // operands rounded to bf16, 32 x 32 block of C in AMX tiles (bf16 products only)
};

/// The own kernel for a product `n` columns wide (of the whole product, not
/// of a block of it) at this instruction-set level: the widest tile the
/// level has, but AVX2's for products much narrower than AVX-512's 64-column
/// tile (most of it would be padding). Never openblas.
SgemmKernel sgemm_kernel_for(CpuIsa isa, int64_t n);

/// "pipeforge-avx512", "pipeforge-avx2", "pipeforge-sse2", "openblas",
/// "pipeforge-avx512-bf16" or "pipeforge-amx-bf16".
const char* sgemm_kernel_label(SgemmKernel kernel);

/// The level a kernel needs (openblas: sse2; avx512_bf16: avx512, and
/// cpu_has_bf16_dot(); amx_bf16: amx).
CpuIsa sgemm_kernel_isa(SgemmKernel kernel);

/// C[m,n] = op(A)[m,k] * op(B)[k,n] (+ C when accumulate), row-major, op(X)
/// = X^T when its flag is set; lda, ldb, ldc are the row strides as stored.
/// Requires m, n, k > 0 and, for each, the level its name says (cpu_isa()).
/// Single-threaded: callers split large products (blas.cpp). Each thread
/// packs into buffers of its own, allocated on its first call and kept.
void sgemm_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                  const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
void sgemm_avx2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
void sgemm_sse2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
/// The same product with A's and B's elements rounded to bf16 (to nearest,
/// ties to even; subnormals to zero) as they are packed, and each pair of
/// neighbouring steps of k multiplied exactly and added to C's f32 sums by
/// the CPU's dot-product instruction (which also flushes subnormal sums).
/// Requires cpu_has_bf16_dot(); gemm() takes it where cpu_bf16_dot_is_fast().
void sgemm_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
/// The same bf16 product on AMX's tiles: operands rounded as sgemm_bf16
/// rounds them, each element of C summed from C (or zero) by adding the
/// exact products in order of k (subnormal operands and sums flushed to
/// zero), so other bits than sgemm_bf16's (which sums a slice apart, then
/// adds it to C). Requires cpu_isa() == CpuIsa::amx.
void sgemm_amx_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                    const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);

/// The same product for m <= kSgemmFewRows rows of op(A), with m * k <=
/// kSgemmPackA: B read once from memory, not packed (sgemm_few_rows.h).
/// Elements of C get other bits than the blocked kernels give them (their
/// sums run in another order), so a product takes one or the other whole.
inline constexpr int64_t kSgemmFewRows = 8;
void sgemm_few_rows_avx512(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                           const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
void sgemm_few_rows_avx2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                         const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);
void sgemm_few_rows_sse2(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                         const float* b, int64_t ldb, bool accumulate, float* c, int64_t ldc);

/// A product's B operand packed whole, for products that read the same B
/// again (weights across a step's micro-batches, packed_weights.h): op(B)
/// as a kernel's blocks read it, k in that kernel's slices, columns padded
/// to its tile width (`padded_cols`). A product reading it starts at its
/// column `first_col`, a multiple of the tile width. Its panels are the ones
/// the kernel would pack, so a product gives the same bits either way.
struct PackedB {
  const float* data = nullptr;
  int64_t padded_cols = 0;
  int64_t first_col = 0;
};

/// What the blocked kernels avx512, avx2 and sse2 do with a whole packed B.
struct SgemmPackedOps {
  int64_t tile_cols;  // of the register tile: first_col is a multiple of it
  int64_t slice_k;    // of the slices of k: pack's ranges start at multiples of it
  /// Packs steps [k_begin, k_end) of op(B)[k, n] into `out` (floats(n, k)
  /// of them, 64-byte aligned): ranges of k can be packed apart, in parallel.
  void (*pack)(bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k, int64_t k_begin, int64_t k_end,
               float* out);
  /// The blocked product (as sgemm_avx512 and the others) on a packed B.
  void (*product)(bool trans_a, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const PackedB& b,
                  bool accumulate, float* c, int64_t ldc);
  int64_t steps_per_float = 1;  // of k held in one packed 32-bit element (2: a bf16 pair)
  int64_t k_multiple = 1;       // steps of k are packed to a multiple of this (zeros after op(B)'s)
  /// Columns of op(B)[k, n] packed whole, and its 32-bit elements.
  int64_t padded_cols(int64_t n) const { return (n + tile_cols - 1) / tile_cols * tile_cols; }
  int64_t floats(int64_t n, int64_t k) const {
    const int64_t steps = (k + k_multiple - 1) / k_multiple * k_multiple;
    return padded_cols(n) * ((steps + steps_per_float - 1) / steps_per_float);
  }
};
/// A whole packed B of more floats than this is written past the caches
/// (non-temporal stores): copies that large are evicted before the products
/// read them (a stage's weights), and a cached store reads every line
/// before it writes it, half as much again of memory traffic on a pass that
/// is all memory traffic.
inline constexpr int64_t kSgemmStreamFloats = int64_t{1} << 20;  // 4 MiB
/// Requires kernel avx512, avx2, sse2, avx512_bf16 or amx_bf16 (and what it needs).
const SgemmPackedOps& sgemm_packed_ops(SgemmKernel kernel);
const SgemmPackedOps& sgemm_packed_ops_avx512();
const SgemmPackedOps& sgemm_packed_ops_avx2();
const SgemmPackedOps& sgemm_packed_ops_sse2();
const SgemmPackedOps& sgemm_packed_ops_bf16();
const SgemmPackedOps& sgemm_packed_ops_amx();

/// Floats on 64-byte boundaries, as the kernels' aligned loads want them.
struct AlignedDelete {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedDelete>;
AlignedFloats aligned_floats(int64_t count);

/// The calling thread's packing buffers, 64-byte aligned, large enough for
/// every kernel's blocks (kSgemmPackA and kSgemmPackB floats).
inline constexpr int64_t kSgemmPackA = int64_t{3072} * 512;
inline constexpr int64_t kSgemmPackB = int64_t{512} * 512;
float* sgemm_pack_a();
float* sgemm_pack_b();

}  // namespace pf::cpu
