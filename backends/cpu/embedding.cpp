// embedding (a row gather from a [V, C] table) and embedding_grad (its scatter-add), with every id checked.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "backends/cpu/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

template <class Id>
int64_t checked_id(std::string_view op, const Id* ids, int64_t i, int64_t vocab) {
  const auto id = static_cast<int64_t>(ids[i]);
  if (id < 0 || id >= vocab)
    throw Error(fmt::format("{}: index {} at position {} is out of range [0, {})", op, id, i, vocab));
  return id;
}

template <class T, class Id>
void gather(const T* table, int64_t vocab, int64_t c, const Id* ids, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t id = checked_id("embedding", ids, i, vocab);
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

// The adjoint of gather: every row of g is added into the row of its id, so
// an id that repeats collects the sum of its rows; rows no id names stay 0
// (or, accumulating, as they were).
template <class T, class Id>
void scatter_add(const T* g, int64_t c, const Id* ids, int64_t n, int64_t vocab, bool accumulate, T* table) {
  if (!accumulate) std::fill_n(table, vocab * c, T(0));
  for (int64_t i = 0; i < n; ++i) {
    T* row = table + checked_id("embedding_grad", ids, i, vocab) * c;
    const T* gr = g + i * c;
    for (int64_t j = 0; j < c; ++j) row[j] += gr[j];
  }
}

// g (..., C), ids (...) -> dtable (rows, C).
template <class T>
void embedding_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const int64_t vocab = args.out_types[0].shape[0], c = args.out_types[0].shape[1];
  const int64_t n = args.in_types[1].numel();
  auto* table = static_cast<T*>(args.out[0]);
  if (args.in_types[1].dtype == DType::i32)
    scatter_add(g, c, static_cast<const int32_t*>(args.in[1]), n, vocab, args.accumulate, table);
  else
    scatter_add(g, c, static_cast<const int64_t*>(args.in[1]), n, vocab, args.accumulate, table);
}

}  // namespace

void add_embedding_kernels(KernelTable& table) {
  table.set_float(OpKind::embedding, embedding<float>, embedding<double>);
  table.set_float(OpKind::embedding_grad, embedding_grad<float>, embedding_grad<double>);
}

}  // namespace pf::cpu
