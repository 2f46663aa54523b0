// embedding (a row gather from a [V, C] table) and embedding_grad (its scatter-add), with every id checked. A
// table may hold rows offset..offset+rows of a larger vocabulary (a rank's share under tensor parallelism):
// ids of the other rows gather zeros and scatter nowhere.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "backends/cpu/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

/// The rows a table holds of the vocabulary its ids index.
struct Rows {
  int64_t offset, rows, vocab;

  Rows(const OpAttrs& attrs, int64_t held)
      : offset(attrs.get_int("offset", 0)), rows(held), vocab(attrs.get_int("vocab", offset + held)) {}

  /// The row of id i in the table, or -1 where another table holds it.
  template <class Id>
  int64_t row(std::string_view op, const Id* ids, int64_t i) const {
    const auto id = static_cast<int64_t>(ids[i]);
    if (id < 0 || id >= vocab)
      throw Error(fmt::format("{}: index {} at position {} is out of range [0, {})", op, id, i, vocab));
    return id >= offset && id < offset + rows ? id - offset : -1;
  }
};

template <class T, class Id>
void gather(const T* table, const Rows& held, int64_t c, const Id* ids, int64_t n, T* out) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = held.row("embedding", ids, i);
    if (row < 0)
      std::fill_n(out + i * c, c, T(0));
    else
      std::memcpy(out + i * c, table + row * c, static_cast<size_t>(c) * sizeof(T));
  }
}

template <class T>
void embedding(const KernelArgs& args) {
  const auto* table = static_cast<const T*>(args.in[0]);
  const Rows held(args.attrs, args.in_types[0].shape[0]);
  const int64_t c = args.in_types[0].shape[1];
  const int64_t n = args.in_types[1].numel();
  auto* out = static_cast<T*>(args.out[0]);
  if (args.in_types[1].dtype == DType::i32)
    gather(table, held, c, static_cast<const int32_t*>(args.in[1]), n, out);
  else
    gather(table, held, c, static_cast<const int64_t*>(args.in[1]), n, out);
}

// The adjoint of gather: every row of g is added into the row of its id, so
// an id that repeats collects the sum of its rows; rows no id names stay 0
// (or, accumulating, as they were). Every id is checked before any write.
template <class T, class Id>
void scatter_add(const T* g, int64_t c, const Id* ids, int64_t n, const Rows& held, bool accumulate, T* table) {
  for (int64_t i = 0; i < n; ++i) held.row("embedding_grad", ids, i);
  if (!accumulate) std::fill_n(table, held.rows * c, T(0));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = held.row("embedding_grad", ids, i);
    if (row < 0) continue;
    T* dst = table + row * c;
    const T* gr = g + i * c;
    for (int64_t j = 0; j < c; ++j) dst[j] += gr[j];
  }
}

// g (..., C), ids (...) -> dtable (rows, C).
template <class T>
void embedding_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const Rows held(args.attrs, args.out_types[0].shape[0]);
  const int64_t c = args.out_types[0].shape[1];
  const int64_t n = args.in_types[1].numel();
  auto* table = static_cast<T*>(args.out[0]);
  if (args.in_types[1].dtype == DType::i32)
    scatter_add(g, c, static_cast<const int32_t*>(args.in[1]), n, held, args.accumulate, table);
  else
    scatter_add(g, c, static_cast<const int64_t*>(args.in[1]), n, held, args.accumulate, table);
}

}  // namespace

void add_embedding_kernels(KernelTable& table) {
  table.set_float(OpKind::embedding, embedding<float>, embedding<double>);
  table.set_float(OpKind::embedding_grad, embedding_grad<float>, embedding_grad<double>);
}

}  // namespace pf::cpu
