// The packed copies of a stage's weights, and the scope that lends them to a thread's products.
#include "backends/cpu/packed_weights.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

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
    bool current = false;  // packed since the last invalidate()
  };
  std::vector<std::pair<const std::byte*, const std::byte*>> watched;
  std::map<Key, Copy> copies;
  int64_t bytes = 0;
};

PackedWeights::PackedWeights() : impl_(std::make_unique<Impl>()) {}
PackedWeights::~PackedWeights() = default;

void PackedWeights::watch(const void* data, int64_t bytes) {
  const auto* begin = static_cast<const std::byte*>(data);
  if (bytes > 0) impl_->watched.emplace_back(begin, begin + bytes);
}

void PackedWeights::invalidate() {
  impl_->watched.clear();
  for (auto& [key, copy] : impl_->copies) copy.current = false;
}

void PackedWeights::release() {
  invalidate();
  impl_->copies.clear();
  impl_->bytes = 0;
}

int64_t PackedWeights::bound_bytes(int64_t matrices, int64_t rows, int64_t cols) {
  constexpr int64_t kWidestTile = 64;  // AVX-512's columns
  auto padded = [](int64_t x) { return (x + kWidestTile - 1) / kWidestTile * kWidestTile; };
  return matrices * (rows * padded(cols) + padded(rows) * cols) * static_cast<int64_t>(sizeof(float));
}

int64_t PackedWeights::bytes() const { return impl_->bytes; }

const float* PackedWeights::packed(SgemmKernel kernel, bool trans_b, const float* b, int64_t ldb, int64_t n,
                                   int64_t k) {
  // B as stored: n rows of k (transposed) or k rows of n.
  const int64_t rows = trans_b ? n : k, cols = trans_b ? k : n;
  const auto* first = reinterpret_cast<const std::byte*>(b);
  const auto* last = reinterpret_cast<const std::byte*>(b + (rows - 1) * ldb + cols);
  const bool watched = std::any_of(impl_->watched.begin(), impl_->watched.end(),
                                   [&](const auto& range) { return range.first <= first && last <= range.second; });
  if (!watched) return nullptr;
  const SgemmPackedOps& ops = sgemm_packed_ops(kernel);
  auto [it, added] = impl_->copies.try_emplace(Key{b, ldb, n, k, trans_b, kernel});
  Impl::Copy& copy = it->second;
  if (added) {
    copy.floats = aligned_floats(ops.floats(n, k));
    impl_->bytes += static_cast<int64_t>(sizeof(float)) * ops.floats(n, k);
  }
  if (!copy.current) {
    // Slices of k apart on each kernel thread: each writes its own part.
    float* out = copy.floats.get();
    const int64_t slices = (k + ops.slice_k - 1) / ops.slice_k;
    parallel_for(slices, 1, [&](int64_t begin, int64_t end) {
      ops.pack(trans_b, b, ldb, n, k, begin * ops.slice_k, std::min(end * ops.slice_k, k), out);
    });
    copy.current = true;
  }
  return copy.floats.get();
}

PackedWeightsScope::PackedWeightsScope(PackedWeights* packed) : before_(packed_here) { packed_here = packed; }
PackedWeightsScope::~PackedWeightsScope() { packed_here = before_; }

PackedWeights* packed_weights_here() { return packed_here; }

}  // namespace pf::cpu
