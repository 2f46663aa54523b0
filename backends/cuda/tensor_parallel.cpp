// tp_copy, tp_reduce and tp_max on a GPU stage: the whole activation copied on
// the stream, partial products summed over the group in device memory, and
// the group's maximum of a softmax's row maxima taken through host memory.
#include <cuda_runtime.h>

#include <span>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/kernel_table.h"

namespace pf::cuda {

namespace {

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
  if (!args.group) backend::throw_no_tensor_parallel_group();
  copy_operand(args, ctx);
  PF_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  args.group->all_reduce(
      std::span<float>(static_cast<float*>(args.out[0]), static_cast<size_t>(args.out_types[0].numel())));
}

// The maximum goes through host memory: a group may combine it there
// (CommTensorParallelGroup gathers every rank's values into a host buffer
// to take it through the communicator's sum), which device memory would
// not survive. It is one value per row, so the copies are small.
void tp_max(const KernelArgs& args, const LaunchContext& ctx) {
  if (!args.group) backend::throw_no_tensor_parallel_group();
  const auto n = static_cast<size_t>(args.out_types[0].numel());
  std::vector<float> values(n);
  if (n > 0)
    PF_CUDA_CHECK(cudaMemcpyAsync(values.data(), args.in[0], n * sizeof(float), cudaMemcpyDeviceToHost, ctx.stream));
  PF_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  args.group->all_reduce_max(std::span<float>(values));  // every rank calls, even with nothing to combine
  // From pageable memory the copy returns once `values` has been staged, so
  // they may go when this returns.
  if (n > 0)
    PF_CUDA_CHECK(cudaMemcpyAsync(args.out[0], values.data(), n * sizeof(float), cudaMemcpyHostToDevice, ctx.stream));
}

}  // namespace

void add_tensor_parallel_kernels(KernelTable& t) {
  t.set_any_dtype(OpKind::tp_copy, tp_copy);
  t.set_float(OpKind::tp_reduce, tp_reduce, nullptr);  // f32 only: the group sums floats
  t.set_float(OpKind::tp_max, tp_max, nullptr);        // f32 only, as tp_reduce
}

}  // namespace pf::cuda
