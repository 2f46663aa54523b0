// The CUDA backend's kernels: one table, indexed by op, taking KernelArgs (device pointers) and a launch context.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "backends/common/kernel_args.h"
#include "ir/op_table.h"

namespace pf::cuda {

using backend::KernelArgs;

/// Bad data found by a kernel on the device (an index out of range), which
/// the CPU kernels report by throwing. A kernel cannot throw: it records the
/// first such finding here (mapped host memory, so no copy is needed) and
/// whoever synchronises the stream turns it into pf::Error.
struct DeviceErrorSlot {
  unsigned long long code;  // DeviceErrorCode; 0: nothing found (set first, by atomicCAS)
  long long step;           // LaunchContext::step of the kernel that found it
  long long position;       // flat index of the offending element
  long long value;          // the offending value
  long long bound;          // the exclusive upper bound it broke
};

enum DeviceErrorCode : unsigned long long {
  kNoDeviceError = 0,
  kEmbeddingIndex = 1,       // "embedding: index V at position P is out of range [0, B)"
  kEmbeddingGradIndex = 2,   // the same for embedding_grad
  kCrossEntropyTarget = 3,   // "cross_entropy: target V at position P is out of range [0, B)"
  kCrossEntropyGradTarget = 4,
  // The same for cross_entropy_parts and its gradient, whose bound is the vocabulary that the rank's classes belong to.
  kCrossEntropyPartsTarget = 5,
  kCrossEntropyPartsGradTarget = 6,
};

/// The message the CPU kernel would throw for the same data.
std::string describe(const DeviceErrorSlot& e);

/// A per-stream scratch buffer that only grows (through the caching
/// allocator, so growing never frees memory that queued work still reads).
/// A kernel asks once and carves the bytes it needs out of the block.
class Workspace {
 public:
  virtual ~Workspace() = default;
  /// At least `bytes` of device memory, 256-byte aligned, valid for work
  /// queued on the stream until the next call.
  virtual void* get(size_t bytes) = 0;
};

/// Everything a kernel needs besides its arguments: where to queue work,
/// the library handles bound to that stream, scratch memory, where to
/// report bad data, and the math it may use.
struct LaunchContext {
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cublasLtHandle_t cublaslt = nullptr;  // the GEMMs with epilogues (gemm_fusion.h)
  cudnnHandle_t cudnn = nullptr;
  Workspace* workspace = nullptr;
  DeviceErrorSlot* errors = nullptr;  // device-visible (mapped)
  int step = -1;                      // the op's position, reported with bad data
  /// Let cuBLAS and cuDNN use TF32 tensor cores for f32 (10-bit mantissa
  /// products, f32 sums): about 1e-3 relative error instead of 1e-6.
  bool allow_tf32 = false;

  void* scratch(size_t bytes) const { return workspace->get(bytes); }
};

/// A kernel queues the op's work on ctx.stream and returns without waiting.
/// Operands and results are contiguous row-major device buffers, as for the
/// CPU kernels; the attributes are evaluated on the host. Results are
/// overwritten entirely. Host-side problems (an unsupported shape) throw
/// pf::Error at once; data problems are reported through ctx.errors.
using Kernel = void (*)(const KernelArgs& args, const LaunchContext& ctx);

/// The kernel of `op` for float dtype `dtype`: f32 for every op the CPU
/// backend runs, bf16 for every op but the convolutions and pools (matmul,
/// the elementwise ops, reductions, softmax, the norms, attention, embedding, the
/// losses and all their gradients, and every op that only moves or produces
/// values: cast, constant, reshape, transpose, slice, concat, split,
/// broadcast_to, slice_grad); bf16 kernels compute in f32 and round once.
/// Integer and bool operands keep their dtype; ops that only move or produce
/// values serve i32, i64 and bool too. f64 and f16 have no kernels. param
/// and call never have one. Throws pf::Error("no cuda kernel for <op> in <dtype>").
Kernel forward_kernel(OpKind op, DType dtype);
bool has_forward_kernel(OpKind op, DType dtype);

/// Kernels of op chains the executor fuses (softmax_fusion.h), f32 or bf16,
/// over the last axis; `mask` is bool with the trailing dimensions of the
/// scores, `scale` and `fill` hold one element:
///   masked_softmax:      operands x, scale, mask, fill; y = softmax(where(mask, x * scale, fill))
///   masked_softmax_grad: operands g, y, mask, fill, scale; dx = where(mask, softmax_grad(g, y), fill) * scale
Kernel masked_softmax_kernel(DType dtype);

/// The kernels of the linear layers the executor fuses (gemm_fusion.h), f32
/// or bf16, through cuBLASLt: operands x [..., K], w [K, N], bias [N]; the
/// result [..., N] is x w + bias, or gelu (tanh form) of it. matmul's own
/// kernel takes the bias-only form when given a third operand.
Kernel matmul_bias_gelu_kernel(DType dtype);
Kernel masked_softmax_grad_kernel(DType dtype);

}  // namespace pf::cuda
