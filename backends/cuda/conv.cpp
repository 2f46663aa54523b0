// conv2d and its gradients through cuDNN (NCHW, groups, stride, padding, optional bias), deterministic algorithms only (f32).
#include <fmt/format.h>

#include <climits>
#include <cstdint>
#include <vector>

#include "backends/cuda/check.h"
#include "backends/cuda/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

int to_int(int64_t v) {
  if (v > INT_MAX) throw Error(fmt::format("cuda conv2d: size {} exceeds cuDNN's int range", v));
  return static_cast<int>(v);
}

// RAII holders of the descriptors one call needs (host-only objects; cheap).
struct TensorDesc {
  cudnnTensorDescriptor_t d = nullptr;
  explicit TensorDesc(const Shape& s) {
    PF_CUDA_CHECK(cudnnCreateTensorDescriptor(&d));
    PF_CUDA_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, to_int(s[0]), to_int(s[1]),
                                             to_int(s[2]), to_int(s[3])));
  }
  ~TensorDesc() { (void)cudnnDestroyTensorDescriptor(d); }
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
};

struct FilterDesc {
  cudnnFilterDescriptor_t d = nullptr;
  explicit FilterDesc(const Shape& s) {
    PF_CUDA_CHECK(cudnnCreateFilterDescriptor(&d));
    PF_CUDA_CHECK(cudnnSetFilter4dDescriptor(d, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, to_int(s[0]), to_int(s[1]),
                                             to_int(s[2]), to_int(s[3])));
  }
  ~FilterDesc() { (void)cudnnDestroyFilterDescriptor(d); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
};

struct ConvDesc {
  cudnnConvolutionDescriptor_t d = nullptr;
  ConvDesc(const KernelArgs& args, const LaunchContext& ctx) {
    const std::vector<int64_t> s = args.attrs.get_ints("stride", {1, 1});
    const std::vector<int64_t> p = args.attrs.get_ints("padding", {0, 0});
    PF_CUDA_CHECK(cudnnCreateConvolutionDescriptor(&d));
    // Cross-correlation, as every framework's "convolution" (and the CPU's im2col).
    PF_CUDA_CHECK(cudnnSetConvolution2dDescriptor(d, to_int(p[0]), to_int(p[1]), to_int(s[0]), to_int(s[1]), 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    PF_CUDA_CHECK(cudnnSetConvolutionGroupCount(d, to_int(args.attrs.get_int("groups", 1))));
    // FMA math forbids TF32 tensor cores; the default math allows them.
    PF_CUDA_CHECK(cudnnSetConvolutionMathType(d, ctx.allow_tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
  }
  ~ConvDesc() { (void)cudnnDestroyConvolutionDescriptor(d); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
};

// The first algorithm of cuDNN's heuristic ranking that works and gives the
// same bits every run (gradients must not depend on atomics' order).
template <class Perf>
auto pick(const Perf* perf, int count, const char* what) {
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].determinism == CUDNN_DETERMINISTIC) return perf[i].algo;
  throw Error(fmt::format("cudnn: no deterministic algorithm for {}", what));
}

constexpr int kMaxAlgos = 16;

// x: (N, C, H, W), weight: (O, C/groups, kh, kw), bias: (O,) -> y: (N, O, OH, OW).
void conv2d(const KernelArgs& args, const LaunchContext& ctx) {
  if (args.out_types[0].numel() == 0) return;
  const TensorDesc x(args.in_types[0].shape), y(args.out_types[0].shape);
  const FilterDesc w(args.in_types[1].shape);
  const ConvDesc conv(args, ctx);
  cudnnConvolutionFwdAlgoPerf_t perf[kMaxAlgos];
  int count = 0;
  PF_CUDA_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(ctx.cudnn, x.d, w.d, conv.d, y.d, kMaxAlgos, &count, perf));
  const cudnnConvolutionFwdAlgo_t algo = pick(perf, count, "conv2d");
  size_t bytes = 0;
  PF_CUDA_CHECK(cudnnGetConvolutionForwardWorkspaceSize(ctx.cudnn, x.d, w.d, conv.d, y.d, algo, &bytes));
  void* workspace = bytes ? ctx.scratch(bytes) : nullptr;
  const float one = 1.f, zero = 0.f;
  PF_CUDA_CHECK(cudnnConvolutionForward(ctx.cudnn, &one, x.d, args.in[0], w.d, args.in[1], conv.d, algo, workspace,
                                        bytes, &zero, y.d, args.out[0]));
  if (args.in.size() == 3) {
    const TensorDesc bias({1, args.out_types[0].shape[1], 1, 1});
    PF_CUDA_CHECK(cudnnAddTensor(ctx.cudnn, &one, bias.d, args.in[2], &one, y.d, args.out[0]));
  }
}

// g: (N, O, OH, OW), weight -> dx: (N, C, H, W) of attribute input_shape.
void conv2d_grad_input(const KernelArgs& args, const LaunchContext& ctx) {
  if (args.out_types[0].numel() == 0) return;
  if (args.in_types[0].numel() == 0) {  // no outputs: nothing flows back
    PF_CUDA_CHECK(cudaMemsetAsync(args.out[0], 0, static_cast<size_t>(args.out_types[0].bytes()), ctx.stream));
    return;
  }
  const TensorDesc dy(args.in_types[0].shape), dx(args.out_types[0].shape);
  const FilterDesc w(args.in_types[1].shape);
  const ConvDesc conv(args, ctx);
  cudnnConvolutionBwdDataAlgoPerf_t perf[kMaxAlgos];
  int count = 0;
  PF_CUDA_CHECK(
      cudnnGetConvolutionBackwardDataAlgorithm_v7(ctx.cudnn, w.d, dy.d, conv.d, dx.d, kMaxAlgos, &count, perf));
  const cudnnConvolutionBwdDataAlgo_t algo = pick(perf, count, "conv2d_grad_input");
  size_t bytes = 0;
  PF_CUDA_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(ctx.cudnn, w.d, dy.d, conv.d, dx.d, algo, &bytes));
  void* workspace = bytes ? ctx.scratch(bytes) : nullptr;
  const float one = 1.f, zero = 0.f;
  PF_CUDA_CHECK(cudnnConvolutionBackwardData(ctx.cudnn, &one, w.d, args.in[1], dy.d, args.in[0], conv.d, algo,
                                             workspace, bytes, &zero, dx.d, args.out[0]));
}

// g: (N, O, OH, OW), x: (N, C, H, W) -> dw: (O, C/groups, kh, kw) of attribute weight_shape.
void conv2d_grad_weight(const KernelArgs& args, const LaunchContext& ctx) {
  if (args.out_types[0].numel() == 0) return;
  if (args.in_types[0].numel() == 0) {  // no images: no gradient
    PF_CUDA_CHECK(cudaMemsetAsync(args.out[0], 0, static_cast<size_t>(args.out_types[0].bytes()), ctx.stream));
    return;
  }
  const TensorDesc dy(args.in_types[0].shape), x(args.in_types[1].shape);
  const FilterDesc dw(args.out_types[0].shape);
  const ConvDesc conv(args, ctx);
  cudnnConvolutionBwdFilterAlgoPerf_t perf[kMaxAlgos];
  int count = 0;
  PF_CUDA_CHECK(
      cudnnGetConvolutionBackwardFilterAlgorithm_v7(ctx.cudnn, x.d, dy.d, conv.d, dw.d, kMaxAlgos, &count, perf));
  const cudnnConvolutionBwdFilterAlgo_t algo = pick(perf, count, "conv2d_grad_weight");
  size_t bytes = 0;
  PF_CUDA_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(ctx.cudnn, x.d, dy.d, conv.d, dw.d, algo, &bytes));
  void* workspace = bytes ? ctx.scratch(bytes) : nullptr;
  const float one = 1.f, zero = 0.f;
  PF_CUDA_CHECK(cudnnConvolutionBackwardFilter(ctx.cudnn, &one, x.d, args.in[1], dy.d, args.in[0], conv.d, algo,
                                               workspace, bytes, &zero, dw.d, args.out[0]));
}

}  // namespace

void add_conv_kernels(KernelTable& t) {
  t.set_float(OpKind::conv2d, conv2d, nullptr);
  t.set_float(OpKind::conv2d_grad_input, conv2d_grad_input, nullptr);
  t.set_float(OpKind::conv2d_grad_weight, conv2d_grad_weight, nullptr);
}

}  // namespace pf::cuda
