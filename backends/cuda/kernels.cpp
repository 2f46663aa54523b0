// The CUDA kernel table: built once from the op families, looked up by op and dtype.
#include "backends/cuda/kernels.h"

#include <fmt/format.h>

#include "backends/cuda/kernel_table.h"

namespace pf::cuda {

namespace {

const KernelTable& table() {
  static const KernelTable filled = [] {
    KernelTable t("cuda");
    add_elementwise_kernels(t);
    add_reduce_norm_kernels(t);
    add_movement_loss_kernels(t);
    add_pool_kernels(t);
    add_attention_kernels(t);
    add_matmul_kernels(t);
    add_conv_kernels(t);
    add_tensor_parallel_kernels(t);
    add_moe_kernels(t);
    return t;
  }();
  return filled;
}

}  // namespace

// f16 and f64 have no kernels: they are not stored on the device.
Kernel forward_kernel(OpKind op, DType dtype) { return table().get(op, dtype); }

bool has_forward_kernel(OpKind op, DType dtype) { return table().find(op, dtype) != nullptr; }

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
    case kCrossEntropyPartsTarget:
      return range("cross_entropy_parts", "target");
    case kCrossEntropyPartsGradTarget:
      return range("cross_entropy_parts_grad", "target");
    default:
      return fmt::format("unknown device error code {}", e.code);
  }
}

}  // namespace pf::cuda
