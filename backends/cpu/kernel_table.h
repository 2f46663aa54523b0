// The CPU kernel table and the per-family functions that fill it (internal to backends/cpu).
#pragma once

#include "backends/common/kernel_table.h"
#include "backends/cpu/kernels.h"

namespace pf::cpu {

/// The table that forward_kernel() reads: per op, its f32 and f64 kernels
/// (set_float) or one for every dtype (set_any_dtype). Each op family fills
/// its own rows.
using KernelTable = backend::KernelTable<Kernel, DType::f64>;

// One function per family file; kernels.cpp calls them all.
void add_source_kernels(KernelTable& table);     // sources.cpp: constant, dim_value, causal_mask
void add_matmul_kernels(KernelTable& table);     // matmul.cpp
void add_dropout_kernels(KernelTable& table);    // dropout.cpp
void add_cast_kernels(KernelTable& table);       // cast.cpp
void add_embedding_kernels(KernelTable& table);  // embedding.cpp: embedding, embedding_grad
void add_movement_kernels(KernelTable& table);   // movement.cpp: reshape ... split, broadcast_to, slice_grad
void add_conv_kernels(KernelTable& table);       // conv.cpp: conv2d
void add_pool_kernels(KernelTable& table);       // pool.cpp: max_pool2d, avg_pool2d
void add_attention_kernels(KernelTable& table);  // attention.cpp: attention(_grad), cached_attention
void add_rotary_kernels(KernelTable& table);     // rotary.cpp: rope
void add_moe_kernels(KernelTable& table);        // moe.cpp: the moe_ ops
void add_tensor_parallel_kernels(KernelTable& table);  // tensor_parallel.cpp: the tp_ ops
// vocab_parallel_loss.cpp: cross_entropy_parts, cross_entropy_total and their gradients
void add_vocab_parallel_loss_kernels(KernelTable& table);
// The backward ops' families, apart from those compiled per instruction set.
void add_conv_grad_kernels(KernelTable& table);  // conv_grad.cpp: conv2d_grad_input, conv2d_grad_weight
void add_pool_grad_kernels(KernelTable& table);  // pool_grad.cpp: max_pool2d_grad, avg_pool2d_grad

// The families compiled once per instruction set (kernel_isa_begin.h), where
// vector width pays: each of the namespaces isa_sse2, isa_avx2 and
// isa_avx512 has its own add_<family>_kernels, and kernels.cpp adds the
// ones cpu_isa() names.
//   binary.cpp: add, sub, mul, div, where      unary.cpp: neg ... gelu
//   unary_grad.cpp: relu_grad ... silu_grad    norm.cpp: softmax, log_softmax, layernorm, rmsnorm
//   norm_grad.cpp: softmax_grad ... rmsnorm_grad
//   reduce.cpp: reduce_sum ... reduce_max, sum_to, reduce_max_grad
//   loss.cpp: cross_entropy, mse_loss          loss_grad.cpp: cross_entropy_grad
//   swiglu.cpp: swiglu, swiglu_grad
#define PF_FOR_EACH_DISPATCHED_FAMILY(X) \
  X(binary) X(unary) X(unary_grad) X(norm) X(norm_grad) X(reduction) X(loss) X(loss_grad) X(swiglu)
#define PF_DECLARE_KERNEL_FAMILY(family) void add_##family##_kernels(KernelTable& table);
namespace isa_sse2 {
PF_FOR_EACH_DISPATCHED_FAMILY(PF_DECLARE_KERNEL_FAMILY)
}
namespace isa_avx2 {
PF_FOR_EACH_DISPATCHED_FAMILY(PF_DECLARE_KERNEL_FAMILY)
}
namespace isa_avx512 {
PF_FOR_EACH_DISPATCHED_FAMILY(PF_DECLARE_KERNEL_FAMILY)
}
#undef PF_DECLARE_KERNEL_FAMILY

}  // namespace pf::cpu
