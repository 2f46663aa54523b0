// Weights packed once per step for the products (f32 and bf16) that read them.
//
// A blocked product rearranges its B operand into the panels its register
// tile reads (sgemm_blocking.h). A weight is B in every micro-batch's
// forward (and, transposed, in its input gradient), and does not change
// until the optimizer steps: a pipeline stage with m micro-batches packs it
// m times. With a micro-batch of 32 rows against a 4096 x 4096 weight the
// packing is a third of the product, more for the transposed one. Kept
// packed, each weight is packed once per step and layout, for the memory of
// one more copy of it per layout.
#pragma once

#include <cstdint>
#include <memory>

#include "backends/cpu/sgemm.h"

namespace pf::cpu {

/// Packed copies of watched weights, made by the first product that reads
/// each (under a PackedWeightsScope) and read by the later ones until
/// invalidated. One owner's thread uses it at a time.
class PackedWeights {
 public:
  PackedWeights();
  ~PackedWeights();
  PackedWeights(const PackedWeights&) = delete;
  PackedWeights& operator=(const PackedWeights&) = delete;

  /// A product whose B lies inside [data, data + bytes) reads a packed copy
  /// of it. The caller promises that those bytes do not change until
  /// invalidate().
  void watch(const void* data, int64_t bytes);
  /// Before the weights change: forgets the watched ranges and marks every
  /// copy stale. The memory stays, for the same products to pack into again
  /// once their weights are watched again (a fresh allocation each step
  /// would pay the page faults of every copy each step).
  void invalidate();
  /// Frees every copy too.
  void release();
  /// Bytes held by the packed copies.
  int64_t bytes() const;
  /// Drops every packed copy from the caches (cache_eviction.h).
  void evict_from_caches() const;

  /// Packs one more slice of k of a copy that a product read in an earlier
  /// step, whose weight is watched again but which is not packed since:
  /// the first such copy in the order products first read them. Work for a
  /// thread that would otherwise wait (a rank waiting for a message), taken
  /// a slice at a time so that it is soon back. False when none is left.
  bool pack_ahead();

  /// At most the bytes of a weight's packed copies, both layouts (the
  /// forward's and the transposed one of its input gradient): `matrices`
  /// matrices of rows x cols (the last two dimensions), padded to the widest
  /// register tile either way.
  static int64_t bound_bytes(int64_t matrices, int64_t rows, int64_t cols);

  /// op(B)[k, n] (stored from `b`, row stride `ldb`) packed for `kernel`, or
  /// null where B is not watched; packed on the first call since the last
  /// invalidate(), over the calling thread's kernel threads (blas.cpp).
  const float* packed(SgemmKernel kernel, bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// While one lives, the calling thread's products on the own blocked kernels
/// (f32 and bf16) read the watched weights of `packed` (null: none) packed. The
/// product's bits are the same either way. Scopes nest; the previous returns.
class PackedWeightsScope {
 public:
  explicit PackedWeightsScope(PackedWeights* packed);
  ~PackedWeightsScope();
  PackedWeightsScope(const PackedWeightsScope&) = delete;
  PackedWeightsScope& operator=(const PackedWeightsScope&) = delete;

 private:
  PackedWeights* before_;
};

/// The calling thread's PackedWeights now, or null.
PackedWeights* packed_weights_here();

}  // namespace pf::cpu
