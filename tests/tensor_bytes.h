// Kernel tests' tensors held as doubles, to and from the bytes a kernel reads and writes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "ir/dtype.h"
#include "ir/types.h"

namespace pf::testing_support {

namespace tensor_bytes_detail {

inline void put(std::vector<std::byte>& bytes, size_t i, const void* element, size_t size) {
  std::memcpy(bytes.data() + i * size, element, size);
}

inline void get(const std::vector<std::byte>& bytes, size_t i, void* element, size_t size) {
  std::memcpy(element, bytes.data() + i * size, size);
}

}  // namespace tensor_bytes_detail

/// `values` stored as `dtype` stores them: f64, f32, bf16 (rounded to
/// nearest even), i32 and i64 (truncated), bool (nonzero is 1); at least
/// one byte, so an empty tensor still has an address.
inline std::vector<std::byte> tensor_bytes(DType dtype, const std::vector<double>& values) {
  using tensor_bytes_detail::put;
  std::vector<std::byte> bytes(std::max<size_t>(values.size() * dtype_size(dtype), 1));
  for (size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    switch (dtype) {
      case DType::f64: put(bytes, i, &v, sizeof v); break;
      case DType::f32: { const float e = static_cast<float>(v); put(bytes, i, &e, sizeof e); break; }
      case DType::bf16: { const uint16_t e = bf16_bits(static_cast<float>(v)); put(bytes, i, &e, sizeof e); break; }
      case DType::i32: { const int32_t e = static_cast<int32_t>(v); put(bytes, i, &e, sizeof e); break; }
      case DType::i64: { const int64_t e = static_cast<int64_t>(v); put(bytes, i, &e, sizeof e); break; }
      case DType::boolean: { const uint8_t e = v != 0; put(bytes, i, &e, sizeof e); break; }
      default: ADD_FAILURE() << "the test stores no " << dtype_name(dtype); return bytes;
    }
  }
  return bytes;
}

/// The `type.numel()` elements of `bytes`, each as a double.
inline std::vector<double> tensor_values(const TensorType& type, const std::vector<std::byte>& bytes) {
  using tensor_bytes_detail::get;
  std::vector<double> v(static_cast<size_t>(type.numel()));
  for (size_t i = 0; i < v.size(); ++i) {
    switch (type.dtype) {
      case DType::f64: get(bytes, i, &v[i], sizeof(double)); break;
      case DType::f32: { float e; get(bytes, i, &e, sizeof e); v[i] = e; break; }
      case DType::bf16: { uint16_t e; get(bytes, i, &e, sizeof e); v[i] = bf16_to_float(e); break; }
      case DType::i32: { int32_t e; get(bytes, i, &e, sizeof e); v[i] = e; break; }
      case DType::i64: { int64_t e; get(bytes, i, &e, sizeof e); v[i] = static_cast<double>(e); break; }
      case DType::boolean: { uint8_t e; get(bytes, i, &e, sizeof e); v[i] = e; break; }
      default: ADD_FAILURE() << "the test reads no " << dtype_name(type.dtype); return v;
    }
  }
  return v;
}

}  // namespace pf::testing_support
