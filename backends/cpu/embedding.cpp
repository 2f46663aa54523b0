// embedding(table [V, C], ids [...]) -> [..., C]: a row gather, with every id checked.
#include <fmt/format.h>

#include <cstdint>
#include <cstring>

#include "backends/cpu/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

template <class T, class Id>
void gather(const T* table, int64_t vocab, int64_t c, const Id* ids, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) {
    const auto id = static_cast<int64_t>(ids[i]);
    if (id < 0 || id >= vocab)
      throw Error(fmt::format("embedding: index {} at position {} is out of range [0, {})", id, i, vocab));
    std::memcpy(out + i * c, table + id * c, static_cast<size_t>(c) * sizeof(T));
  }
}

template <class T>
void embedding(const KernelArgs& args) {
  const auto* table = static_cast<const T*>(args.in[0]);
  const int64_t vocab = args.in_types[0].shape[0], c = args.in_types[0].shape[1];
  const int64_t n = args.in_types[1].numel();
  auto* out = static_cast<T*>(args.out[0]);
  if (args.in_types[1].dtype == DType::i32)
    gather(table, vocab, c, static_cast<const int32_t*>(args.in[1]), n, out);
  else
    gather(table, vocab, c, static_cast<const int64_t*>(args.in[1]), n, out);
}

}  // namespace

void add_embedding_kernels(KernelTable& table) {
  table.set_float(OpKind::embedding, embedding<float>, embedding<double>);
}

}  // namespace pf::cpu
