// The CPU kernel table: built once from the op families, looked up by op and dtype.
#include "backends/cpu/kernels.h"

#include <fmt/format.h>

#include <stdexcept>

#include "backends/cpu/cpu_isa.h"
#include "backends/cpu/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

KernelRow& KernelTable::empty_row(OpKind op) {
  KernelRow& r = rows_[static_cast<size_t>(op)];
  if (r.f32 || r.f64 || r.any_dtype)
    throw std::logic_error(fmt::format("cpu kernel table: {} is filled twice", op_name(op)));
  return r;
}

void KernelTable::set_float(OpKind op, Kernel f32, Kernel f64) {
  KernelRow& r = empty_row(op);
  r.f32 = f32;
  r.f64 = f64;
}

void KernelTable::set_any_dtype(OpKind op, Kernel kernel) { empty_row(op).any_dtype = kernel; }

namespace {

// The families compiled once per instruction set, in the copy cpu_isa() names.
void add_dispatched_kernels(KernelTable& t) {
#define PF_ADD_KERNEL_FAMILY(family) isa::add_##family##_kernels(t);
  switch (cpu_isa()) {
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
    KernelTable t;
    add_source_kernels(t);
    add_matmul_kernels(t);
    add_dropout_kernels(t);
    add_cast_kernels(t);
    add_embedding_kernels(t);
    add_movement_kernels(t);
    add_conv_kernels(t);
    add_pool_kernels(t);
    add_conv_grad_kernels(t);
    add_pool_grad_kernels(t);
    add_dispatched_kernels(t);
    return t;
  }();
  return filled;
}

Kernel lookup(OpKind op, DType dtype) {
  const KernelRow& r = table().row(op);
  switch (dtype) {
    case DType::f32:
      return r.f32 ? r.f32 : r.any_dtype;
    case DType::f64:
      return r.f64 ? r.f64 : r.any_dtype;
    case DType::i32:
    case DType::i64:
    case DType::boolean:
      return r.any_dtype;
    case DType::f16:
    case DType::bf16:
      return nullptr;  // the CPU backend stores no half types
  }
  return nullptr;
}

}  // namespace

Kernel forward_kernel(OpKind op, DType dtype) {
  if (Kernel k = lookup(op, dtype)) return k;
  throw Error(fmt::format("no cpu kernel for {} in {}", op_name(op), dtype_name(dtype)));
}

bool has_forward_kernel(OpKind op, DType dtype) { return lookup(op, dtype) != nullptr; }

}  // namespace pf::cpu
