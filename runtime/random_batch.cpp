// Random inputs for every argument of a graph.
#include "runtime/random_batch.h"

#include <random>

namespace pf {

RandomBatch random_batch(const Function& g, uint32_t seed, int32_t int_range) {
  RandomBatch b;
  std::mt19937 rng(seed);
  for (ValueId a : g.args) {
    const TensorType& t = g.type_of(a);
    std::vector<std::byte> bytes(static_cast<size_t>(t.bytes()));
    if (t.dtype == DType::f32) {
      auto* p = reinterpret_cast<float*>(bytes.data());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::uniform_real_distribution<float>(-1, 1)(rng);
    } else {
      auto* p = reinterpret_cast<int32_t*>(bytes.data());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<int32_t>(rng() % static_cast<uint32_t>(int_range));
    }
    b.data.push_back(std::move(bytes));
  }
  for (size_t i = 0; i < g.args.size(); ++i) {
    b.named.emplace_back(g.values[g.args[i]].name, b.data[i].data());
    b.pointers.push_back(b.data[i].data());
  }
  return b;
}

}  // namespace pf
