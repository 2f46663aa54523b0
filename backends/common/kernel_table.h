// The kernel table of a backend: one row per op, a kernel per float dtype the backend stores, or one for every dtype.
#pragma once

#include <array>
#include <cstddef>
#include <string_view>

#include "ir/dtype.h"
#include "ir/op_table.h"

namespace pf::backend {

/// Throw std::logic_error("<backend> kernel table: <op> is filled twice") and
/// pf::Error("no <backend> kernel for <op> in <dtype>"); out of line, so
/// that the template below needs neither fmt nor the error headers (the
/// CUDA kernels include it through nvcc).
[[noreturn]] void throw_filled_twice(std::string_view backend, OpKind op);
[[noreturn]] void throw_no_kernel(std::string_view backend, OpKind op, DType dtype);

/// The table a backend's forward_kernel() reads, filled once by its op
/// families. A row holds an op's kernels for f32 and for the backend's other
/// float dtype `kOtherFloat` (f64 on the CPU, bf16 on CUDA), or one kernel
/// that reads the dtypes from its argument types, for the ops that only
/// produce or move values; that one also serves i32, i64 and bool. Filling a
/// row twice is a programming error and throws std::logic_error.
template <class Kernel, DType kOtherFloat>
class KernelTable {
 public:
  /// `backend` ("cpu", "cuda") names the table in errors; a string literal.
  explicit KernelTable(std::string_view backend) : backend_(backend) {}

  void set_float(OpKind op, Kernel f32, Kernel other) {
    Row& r = empty_row(op);
    r.f32 = f32;
    r.other = other;
  }
  void set_any_dtype(OpKind op, Kernel kernel) { empty_row(op).any_dtype = kernel; }

  /// The kernel of `op` for `dtype`, or nullptr when the table has none.
  Kernel find(OpKind op, DType dtype) const {
    const Row& r = rows_[static_cast<size_t>(op)];
    if (dtype == DType::f32) return r.f32 ? r.f32 : r.any_dtype;
    if (dtype == kOtherFloat) return r.other ? r.other : r.any_dtype;
    if (dtype == DType::i32 || dtype == DType::i64 || dtype == DType::boolean) return r.any_dtype;
    return nullptr;  // a float dtype the backend does not store
  }
  /// The same, or pf::Error("no <backend> kernel for <op> in <dtype>").
  Kernel get(OpKind op, DType dtype) const {
    if (Kernel k = find(op, dtype)) return k;
    throw_no_kernel(backend_, op, dtype);
  }

 private:
  struct Row {
    Kernel f32 = nullptr;
    Kernel other = nullptr;
    Kernel any_dtype = nullptr;
  };

  Row& empty_row(OpKind op) {
    Row& r = rows_[static_cast<size_t>(op)];
    if (r.f32 || r.other || r.any_dtype) throw_filled_twice(backend_, op);
    return r;
  }

  std::string_view backend_;
  std::array<Row, kNumOps> rows_{};
};

}  // namespace pf::backend
