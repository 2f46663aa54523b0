// The CUDA kernel table and the per-family functions that fill it (internal to backends/cuda).
#pragma once

#include "backends/common/kernel_table.h"
#include "backends/cuda/kernels.h"

namespace pf::cuda {

/// The table that forward_kernel() reads: per op, its f32 and bf16 kernels
/// (set_float) or one for every dtype (set_any_dtype). Filled once by the
/// families below.
using KernelTable = backend::KernelTable<Kernel, DType::bf16>;

// One function per family file; kernels.cpp calls them all.
void add_elementwise_kernels(KernelTable& t);    // elementwise.cu: sources, binary, where, unary, dropout, cast,
                                                 //   relu_grad ... silu_grad, rope, transpose, broadcast_to
void add_reduce_norm_kernels(KernelTable& t);    // reduce_norm.cu: reductions, sum_to, reduce_max_grad, softmax,
                                                 //   log_softmax, layernorm, rmsnorm and their gradients
void add_movement_loss_kernels(KernelTable& t);  // movement_loss.cu: reshape, slice, concat, split, slice_grad,
                                                 //   embedding(+grad), cross_entropy(+grad), mse_loss,
                                                 //   cross_entropy_parts and _total (+grad)
void add_attention_kernels(KernelTable& t);      // attention.cu: attention, attention_grad (flash-attention style)
void add_pool_kernels(KernelTable& t);           // pool.cu: max_pool2d, avg_pool2d and their gradients
void add_matmul_kernels(KernelTable& t);         // matmul.cpp: cuBLAS
void add_conv_kernels(KernelTable& t);           // conv.cpp: conv2d and its gradients through cuDNN
void add_tensor_parallel_kernels(KernelTable& t);  // tensor_parallel.cpp: the tp_ ops
void add_moe_kernels(KernelTable& t);            // moe.cu: the mixture-of-experts ops, swiglu(+grad)

}  // namespace pf::cuda
