// The tp_ ops on a GPU stage: the whole activation copied on the stream,
// partial products summed over the group in device memory, the group's
// maximum of a softmax's row maxima taken through host memory, and the
// sequence-parallel parts cut and placed by strided copies, gathered and
// reduce-scattered through the group's sum.
#include <cuda_runtime.h>

#include <span>
#include <vector>

#include "backends/common/tensor_parallel_args.h"
#include "backends/cuda/check.h"
#include "backends/cuda/kernel_table.h"

namespace pf::cuda {

namespace {

using backend::group_of;
using backend::token_part;

std::span<float> result(const KernelArgs& args) {
  return {static_cast<float*>(args.out[0]), static_cast<size_t>(args.out_types[0].numel())};
}

/// Copies `part` of the tokens between a whole (f32) and the part's own
/// buffer on the stream: one strided copy, a row per index before the axis.
void copy_part(const ParamPiece& part, const TensorType& whole, const void* from, void* to, bool into_whole,
               const LaunchContext& ctx) {
  int64_t rows = 1, inner = sizeof(float);
  for (int a = 0; a < whole.rank(); ++a) {
    if (a < part.axis) rows *= whole.shape[static_cast<size_t>(a)];
    if (a > part.axis) inner *= whole.shape[static_cast<size_t>(a)];
  }
  const auto width = static_cast<size_t>((part.end - part.begin) * inner),
             pitch = static_cast<size_t>(part.whole_rows * inner), offset = static_cast<size_t>(part.begin * inner);
  if (width == 0 || rows == 0) return;
  if (into_whole)
    PF_CUDA_CHECK(cudaMemcpy2DAsync(static_cast<char*>(to) + offset, pitch, from, width, width,
                                    static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, ctx.stream));
  else
    PF_CUDA_CHECK(cudaMemcpy2DAsync(to, width, static_cast<const char*>(from) + offset, pitch, width,
                                    static_cast<size_t>(rows), cudaMemcpyDeviceToDevice, ctx.stream));
}

void copy_operand(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t bytes = args.out_types[0].bytes();
  if (bytes > 0 && args.out[0] != args.in[0])
    PF_CUDA_CHECK(cudaMemcpyAsync(args.out[0], args.in[0], static_cast<size_t>(bytes), cudaMemcpyDeviceToDevice,
                                  ctx.stream));
}

void tp_copy(const KernelArgs& args, const LaunchContext& ctx) { copy_operand(args, ctx); }

// The group reads the device buffer once the copy has landed: a group of
// GPU ranks (NCCL) sums device memory on a stream of its own.
void tp_reduce(const KernelArgs& args, const LaunchContext& ctx) {
  backend::TensorParallelGroup& group = group_of(args, OpKind::tp_reduce);
  copy_operand(args, ctx);
  PF_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  group.all_reduce(result(args));
}

// The maximum goes through host memory: a group may combine it there
// (CommTensorParallelGroup gathers every rank's values into a host buffer
// to take it through the communicator's sum), which device memory would
// not survive. It is one value per row, so the copies are small.
void tp_max(const KernelArgs& args, const LaunchContext& ctx) {
  backend::TensorParallelGroup& group = group_of(args, OpKind::tp_max);
  const auto n = static_cast<size_t>(args.out_types[0].numel());
  std::vector<float> values(n);
  if (n > 0)
    PF_CUDA_CHECK(cudaMemcpyAsync(values.data(), args.in[0], n * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
  PF_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  group.all_reduce_max(std::span<float>(values));  // every rank calls, even with nothing to combine
  // From pageable memory the copy returns once `values` has been staged, so
  // they may go when this returns.
  if (n > 0)
    PF_CUDA_CHECK(cudaMemcpyAsync(args.out[0], values.data(), n * sizeof(float), cudaMemcpyHostToDevice, ctx.stream));
}

// The sum goes into a whole of the stream's own, then the rank's part out.
template <OpKind kKind>
void reduce_scatter(const KernelArgs& args, const LaunchContext& ctx) {
  const ParamPiece part = token_part(args, kKind, args.in_types[0]);
  const auto bytes = static_cast<size_t>(args.in_types[0].bytes());
  void* sum = nullptr;
  PF_CUDA_CHECK(cudaMallocAsync(&sum, bytes, ctx.stream));
  if (bytes > 0) PF_CUDA_CHECK(cudaMemcpyAsync(sum, args.in[0], bytes, cudaMemcpyDeviceToDevice, ctx.stream));
  PF_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  group_of(args, kKind).all_reduce(
      std::span<float>(static_cast<float*>(sum), static_cast<size_t>(args.in_types[0].numel())));
  copy_part(part, args.in_types[0], sum, args.out[0], false, ctx);
  PF_CUDA_CHECK(cudaFreeAsync(sum, ctx.stream));
}

// The rank's part placed in a zeroed whole; the group's sum adds the others'.
// (The group's all_gather and reduce_scatter work on host memory; its sum is
// the collective a GPU group runs on device memory.)
template <OpKind kKind>
void gather(const KernelArgs& args, const LaunchContext& ctx) {
  const ParamPiece part = token_part(args, kKind, args.out_types[0]);
  const auto bytes = static_cast<size_t>(args.out_types[0].bytes());
  if (bytes > 0) PF_CUDA_CHECK(cudaMemsetAsync(args.out[0], 0, bytes, ctx.stream));
  copy_part(part, args.out_types[0], args.in[0], args.out[0], true, ctx);
  PF_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  group_of(args, kKind).all_reduce(result(args));
}

void tp_scatter(const KernelArgs& args, const LaunchContext& ctx) {
  copy_part(token_part(args, OpKind::tp_scatter, args.in_types[0]), args.in_types[0], args.in[0], args.out[0], false,
            ctx);
}

}  // namespace

void add_tensor_parallel_kernels(KernelTable& t) {
  t.set_any_dtype(OpKind::tp_copy, tp_copy);
  t.set_float(OpKind::tp_reduce, tp_reduce, nullptr);  // f32 only: the group sums floats
  t.set_float(OpKind::tp_max, tp_max, nullptr);        // f32 only, as tp_reduce
  t.set_float(OpKind::tp_reduce_scatter, reduce_scatter<OpKind::tp_reduce_scatter>, nullptr);
  t.set_float(OpKind::tp_all_gather, gather<OpKind::tp_all_gather>, nullptr);
  t.set_float(OpKind::tp_scatter, tp_scatter, nullptr);
  t.set_float(OpKind::tp_gather, gather<OpKind::tp_gather>, nullptr);
  t.set_float(OpKind::ep_all_gather, gather<OpKind::ep_all_gather>, nullptr);
  t.set_float(OpKind::ep_reduce_scatter, reduce_scatter<OpKind::ep_reduce_scatter>, nullptr);
}

}  // namespace pf::cuda
