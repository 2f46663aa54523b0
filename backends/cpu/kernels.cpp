// The CPU kernel table: built once from the op families, looked up by op and dtype.
#include "backends/cpu/kernels.h"

#include "backends/cpu/cpu_isa.h"
#include "backends/cpu/kernel_table.h"

namespace pf::cpu {

namespace {

// The families compiled once per instruction set, in the copy cpu_isa() names.
void add_dispatched_kernels(KernelTable& t) {
#define PF_ADD_KERNEL_FAMILY(family) isa::add_##family##_kernels(t);
  switch (cpu_isa()) {
    case CpuIsa::amx:  // AMX's tiles take only the bf16 products (blas.cpp)
    case CpuIsa::avx512: {
      namespace isa = isa_avx512;
      PF_FOR_EACH_DISPATCHED_FAMILY(PF_ADD_KERNEL_FAMILY)
      return;
    }
    case CpuIsa::avx2: {
      namespace isa = isa_avx2;
      PF_FOR_EACH_DISPATCHED_FAMILY(PF_ADD_KERNEL_FAMILY)
      return;
    }
    case CpuIsa::sse2: {
      namespace isa = isa_sse2;
      PF_FOR_EACH_DISPATCHED_FAMILY(PF_ADD_KERNEL_FAMILY)
      return;
    }
  }
#undef PF_ADD_KERNEL_FAMILY
}

const KernelTable& table() {
  static const KernelTable filled = [] {
    KernelTable t("cpu");
    add_source_kernels(t);
    add_matmul_kernels(t);
    add_dropout_kernels(t);
    add_cast_kernels(t);
    add_embedding_kernels(t);
    add_movement_kernels(t);
    add_conv_kernels(t);
    add_pool_kernels(t);
    add_attention_kernels(t);
    add_rotary_kernels(t);
    add_moe_kernels(t);
    add_tensor_parallel_kernels(t);
    add_vocab_parallel_loss_kernels(t);
    add_conv_grad_kernels(t);
    add_pool_grad_kernels(t);
    add_dispatched_kernels(t);
    return t;
  }();
  return filled;
}

}  // namespace

// f16 and bf16 have no kernels: the CPU backend stores no half types.
Kernel forward_kernel(OpKind op, DType dtype) { return table().get(op, dtype); }

bool has_forward_kernel(OpKind op, DType dtype) { return table().find(op, dtype) != nullptr; }

}  // namespace pf::cpu
