// The CUDA kernel table and the per-family functions that fill it (internal to backends/cuda).
#pragma once

#include <array>

#include "backends/cuda/kernels.h"

namespace pf::cuda {

/// One row per op: its f32 and bf16 kernels, or one kernel that reads the
/// dtypes from its argument types (ops that only move or produce values).
struct KernelRow {
  Kernel f32 = nullptr;
  Kernel bf16 = nullptr;
  Kernel any_dtype = nullptr;
};

/// Filled once by the families below; filling a row twice throws std::logic_error.
class KernelTable {
 public:
  void set_float(OpKind op, Kernel f32, Kernel bf16);
  void set_any_dtype(OpKind op, Kernel kernel);
  const KernelRow& row(OpKind op) const { return rows_[static_cast<size_t>(op)]; }

 private:
  KernelRow& empty_row(OpKind op);
  std::array<KernelRow, kNumOps> rows_{};
};

// One function per family file; kernels.cpp calls them all.
void add_elementwise_kernels(KernelTable& t);    // elementwise.cu: sources, binary, where, unary, dropout, cast,
                                                 //   relu_grad, gelu_grad, transpose, broadcast_to
void add_reduce_norm_kernels(KernelTable& t);    // reduce_norm.cu: reductions, sum_to, reduce_max_grad, softmax,
                                                 //   log_softmax, layernorm, rmsnorm and their gradients
void add_movement_loss_kernels(KernelTable& t);  // movement_loss.cu: reshape, slice, concat, split, slice_grad,
                                                 //   embedding(+grad), cross_entropy(+grad), mse_loss
void add_pool_kernels(KernelTable& t);           // pool.cu: max_pool2d, avg_pool2d and their gradients
void add_matmul_kernels(KernelTable& t);         // matmul.cpp: cuBLAS
void add_conv_kernels(KernelTable& t);           // conv.cpp: conv2d and its gradients through cuDNN

}  // namespace pf::cuda
