// The CUDA kernel table: built once from the op families, looked up by op and dtype.
#include "backends/cuda/kernels.h"

#include <fmt/format.h>

#include <stdexcept>

#include "backends/cuda/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

KernelRow& KernelTable::empty_row(OpKind op) {
  KernelRow& r = rows_[static_cast<size_t>(op)];
  if (r.f32 || r.bf16 || r.any_dtype)
    throw std::logic_error(fmt::format("cuda kernel table: {} is filled twice", op_name(op)));
  return r;
}

void KernelTable::set_float(OpKind op, Kernel f32, Kernel bf16) {
  KernelRow& r = empty_row(op);
  r.f32 = f32;
  r.bf16 = bf16;
}

void KernelTable::set_any_dtype(OpKind op, Kernel kernel) { empty_row(op).any_dtype = kernel; }

namespace {

const KernelTable& table() {
  static const KernelTable filled = [] {
    KernelTable t;
    add_elementwise_kernels(t);
    add_reduce_norm_kernels(t);
    add_movement_loss_kernels(t);
    add_pool_kernels(t);
    add_matmul_kernels(t);
    add_conv_kernels(t);
    return t;
  }();
  return filled;
}

Kernel lookup(OpKind op, DType dtype) {
  const KernelRow& r = table().row(op);
  switch (dtype) {
    case DType::f32:
      return r.f32 ? r.f32 : r.any_dtype;
    case DType::bf16:
      return r.bf16 ? r.bf16 : r.any_dtype;
    case DType::i32:
    case DType::i64:
    case DType::boolean:
      return r.any_dtype;
    case DType::f16:
    case DType::f64:
      return nullptr;  // not stored on the device
  }
  return nullptr;
}

}  // namespace

Kernel forward_kernel(OpKind op, DType dtype) {
  if (Kernel k = lookup(op, dtype)) return k;
  throw Error(fmt::format("no cuda kernel for {} in {}", op_name(op), dtype_name(dtype)));
}

bool has_forward_kernel(OpKind op, DType dtype) { return lookup(op, dtype) != nullptr; }

std::string describe(const DeviceErrorSlot& e) {
  auto range = [&](const char* op, const char* what) {
    return fmt::format("{}: {} {} at position {} is out of range [0, {})", op, what, e.value, e.position, e.bound);
  };
  switch (e.code) {
    case kEmbeddingIndex:
      return range("embedding", "index");
    case kEmbeddingGradIndex:
      return range("embedding_grad", "index");
    case kCrossEntropyTarget:
      return range("cross_entropy", "target");
    case kCrossEntropyGradTarget:
      return range("cross_entropy_grad", "target");
    default:
      return fmt::format("unknown device error code {}", e.code);
  }
}

}  // namespace pf::cuda
