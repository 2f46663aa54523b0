// Source kernels: constant and dim_value fill their result with one value, causal_mask writes a lower-triangular mask.
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

template <class T>
void fill(void* out, int64_t n, T value) {
  std::fill_n(static_cast<T*>(out), n, value);
}

// Any stored dtype: the value converts as cast would convert it.
void constant(const KernelArgs& args) {
  const TensorType& t = args.out_types[0];
  const double v = args.attrs.get_real("value", 0);
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::f32:
      return fill(args.out[0], n, static_cast<float>(v));
    case DType::f64:
      return fill(args.out[0], n, v);
    case DType::i32:
      return fill(args.out[0], n, saturate_to_i32(v));
    case DType::i64:
      return fill(args.out[0], n, saturate_to_i64(v));
    case DType::boolean:
      return fill(args.out[0], n, static_cast<uint8_t>(v != 0));
    case DType::f16:
    case DType::bf16:
      break;
  }
  throw Error(fmt::format("no cpu kernel for constant in {}", dtype_name(t.dtype)));
}

// dim_value: a float scalar holding a dimension's value (bound at compile time).
template <class T>
void dim_value(const KernelArgs& args) {
  *static_cast<T*>(args.out[0]) = static_cast<T>(args.attrs.get_int("value", 0));
}

// bool[..., N, N]: element (i, j) is true iff j <= i. The first matrix is
// written once and copied to the others.
void causal_mask(const KernelArgs& args) {
  const TensorType& t = args.out_types[0];
  auto* out = static_cast<uint8_t*>(args.out[0]);
  const int64_t n = t.shape.back();
  const int64_t size = n * n;
  if (size == 0) return;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) out[i * n + j] = j <= i;
  const int64_t matrices = t.numel() / size;
  for (int64_t m = 1; m < matrices; ++m) std::memcpy(out + m * size, out, static_cast<size_t>(size));
}

}  // namespace

void add_source_kernels(KernelTable& table) {
  table.set_any_dtype(OpKind::constant, constant);
  table.set_float(OpKind::dim_value, dim_value<float>, dim_value<double>);
  table.set_any_dtype(OpKind::causal_mask, causal_mask);
}

}  // namespace pf::cpu
