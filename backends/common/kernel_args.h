// What a kernel sees on every backend: its operands and results with their types, and the op's evaluated attributes.
#pragma once

#include <span>

#include "ir/op_table.h"
#include "ir/types.h"

namespace pf::backend {

/// A kernel's arguments: its operands and results as contiguous row-major
/// buffers with their concrete types (host memory on the CPU, the device's
/// memory on a GPU), and the op's evaluated attributes. Results are
/// preallocated by the caller; a kernel overwrites every element and never
/// reads what was there before, unless `accumulate` is set: then it adds
/// its result to what is there (only kernels an executor marked as able to
/// see it set).
struct KernelArgs {
  std::span<const TensorType> in_types;
  std::span<const void* const> in;  // operands, contiguous row-major
  std::span<const TensorType> out_types;
  std::span<void* const> out;  // results, preallocated, contiguous
  const OpAttrs& attrs;
  bool accumulate = false;
};

}  // namespace pf::backend
