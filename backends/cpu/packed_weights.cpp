// The packed copies of a stage's weights, and the scope that lends them to a thread's products.
#include "backends/cpu/packed_weights.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "backends/cpu/cache_eviction.h"
#include "backends/cpu/parallel.h"

namespace pf::cpu {

namespace {

thread_local PackedWeights* packed_here = nullptr;

// What makes two packed copies the same: the operand as stored, and the kernel whose panels they hold.
using Key = std::tuple<const float*, int64_t, int64_t, int64_t, bool, SgemmKernel>;

}  // namespace

struct PackedWeights::Impl {
  struct Copy {
    AlignedFloats floats;
    int64_t packed_k = 0;  // steps of k packed since the last invalidate(), in whole slices
  };
  std::vector<std::pair<const std::byte*, const std::byte*>> watched;
  std::map<Key, Copy> copies;
  std::vector<std::map<Key, Copy>::iterator> first_read;  // the copies in the order products first read them
  int64_t bytes = 0;

  bool is_watched(bool trans_b, const float* b, int64_t ldb, int64_t n, int64_t k) const {
    // B as stored: n rows of k (transposed) or k rows of n.
    const int64_t rows = trans_b ? n : k, cols = trans_b ? k : n;
    const auto* first = reinterpret_cast<const std::byte*>(b);
    const auto* last = reinterpret_cast<const std::byte*>(b + (rows - 1) * ldb + cols);
    return std::any_of(watched.begin(), watched.end(),
                       [&](const auto& range) { return range.first <= first && last <= range.second; });
  }

  // Packs steps [copy.packed_k, until) of k (until a slice boundary or k),
  // the slices split over the calling thread's kernel threads.
  static void pack(const Key& key, Copy& copy, int64_t until) {
    const auto& [b, ldb, n, k, trans_b, kernel] = key;
    const SgemmPackedOps& ops = sgemm_packed_ops(kernel);
    const int64_t first = copy.packed_k / ops.slice_k, slices = (until - copy.packed_k + ops.slice_k - 1) / ops.slice_k;
    float* out = copy.floats.get();
    parallel_for(slices, 1, [&](int64_t begin, int64_t end) {
      ops.pack(trans_b, b, ldb, n, k, (first + begin) * ops.slice_k, std::min((first + end) * ops.slice_k, k), out);
    });
    copy.packed_k = until;
  }
};

PackedWeights::PackedWeights() : impl_(std::make_unique<Impl>()) {}
PackedWeights::~PackedWeights() = default;

void PackedWeights::watch(const void* data, int64_t bytes) {
  const auto* begin = static_cast<const std::byte*>(data);
  if (bytes > 0) impl_->watched.emplace_back(begin, begin + bytes);
}

void PackedWeights::invalidate() {
  impl_->watched.clear();
  for (auto& [key, copy] : impl_->copies) copy.packed_k = 0;
}

void PackedWeights::release() {
  invalidate();
  impl_->first_read.clear();
  impl_->copies.clear();
  impl_->bytes = 0;
}

int64_t PackedWeights::bound_bytes(int64_t matrices, int64_t rows, int64_t cols) {
  constexpr int64_t kWidestTile = 64;  // AVX-512's columns
  auto padded = [](int64_t x) { return (x + kWidestTile - 1) / kWidestTile * kWidestTile; };
  return matrices * (rows * padded(cols) + padded(rows) * cols) * static_cast<int64_t>(sizeof(float));
}

int64_t PackedWeights::bytes() const { return impl_->bytes; }

void PackedWeights::evict_from_caches() const {
  for (const auto& [key, copy] : impl_->copies) {
    const auto& [b, ldb, n, k, trans_b, kernel] = key;
    cpu::evict_from_caches(copy.floats.get(),
                           sgemm_packed_ops(kernel).floats(n, k) * static_cast<int64_t>(sizeof(float)));
  }
}

const float* PackedWeights::packed(SgemmKernel kernel, bool trans_b, const float* b, int64_t ldb, int64_t n,
                                   int64_t k) {
  if (!impl_->is_watched(trans_b, b, ldb, n, k)) return nullptr;
  auto [it, added] = impl_->copies.try_emplace(Key{b, ldb, n, k, trans_b, kernel});
  Impl::Copy& copy = it->second;
  if (added) {
    const int64_t floats = sgemm_packed_ops(kernel).floats(n, k);
    copy.floats = aligned_floats(floats);
    impl_->bytes += static_cast<int64_t>(sizeof(float)) * floats;
    impl_->first_read.push_back(it);
  }
  if (copy.packed_k < k) Impl::pack(it->first, copy, k);
  return copy.floats.get();
}

bool PackedWeights::pack_ahead() {
  for (auto it : impl_->first_read) {
    const auto& [b, ldb, n, k, trans_b, kernel] = it->first;
    Impl::Copy& copy = it->second;
    if (copy.packed_k == k || !impl_->is_watched(trans_b, b, ldb, n, k)) continue;
    Impl::pack(it->first, copy, std::min(copy.packed_k + sgemm_packed_ops(kernel).slice_k, k));
    return true;
  }
  return false;
}

PackedWeightsScope::PackedWeightsScope(PackedWeights* packed) : before_(packed_here) { packed_here = packed; }
PackedWeightsScope::~PackedWeightsScope() { packed_here = before_; }

PackedWeights* packed_weights_here() { return packed_here; }

}  // namespace pf::cpu
