// Optimizer steps on device arrays, with the formulas of runtime/optimizer.h (SGD with momentum, AdamW), and the per-step arithmetic on parameter arrays.
#include "backends/cuda/optimizers.h"

#include <cmath>

#include "backends/cuda/common.cuh"

namespace pf::cuda {

namespace {

__global__ void sgd_kernel(float* w, const float* grad, int64_t n, float lr, float wd) {
  PF_GRID_STRIDE(i, n) w[i] -= lr * (grad[i] + wd * w[i]);
}

__global__ void sgd_momentum_kernel(float* w, const float* grad, float* buf, int64_t n, float lr, float mu, float wd,
                                    bool nesterov) {
  PF_GRID_STRIDE(i, n) {
    const float g = grad[i] + wd * w[i];
    buf[i] = mu * buf[i] + g;
    const float d = nesterov ? g + mu * buf[i] : buf[i];
    w[i] -= lr * d;
  }
}

__global__ void adamw_kernel(float* w, const float* g, float* m, float* v, int64_t n, float shrink, float b1,
                             float one_minus_b1, float b2, float one_minus_b2, float step_size, float sqrt_bc2,
                             float eps) {
  PF_GRID_STRIDE(i, n) {
    w[i] *= shrink;
    m[i] = b1 * m[i] + one_minus_b1 * g[i];
    v[i] = b2 * v[i] + one_minus_b2 * g[i] * g[i];
    // The same operation order as PyTorch's addcdiv_, so results round alike.
    const float denom = sqrtf(v[i]) / sqrt_bc2 + eps;
    w[i] -= step_size * (m[i] / denom);
  }
}

template <class T, bool kOverwrite>
__global__ void accumulate_kernel(float* acc, const T* src, int64_t n) {
  PF_GRID_STRIDE(i, n) acc[i] = kOverwrite ? to_float(src[i]) : acc[i] + to_float(src[i]);
}

__global__ void round_to_bf16_kernel(const float* src, bf16* dst, int64_t n) {
  PF_GRID_STRIDE(i, n) dst[i] = __float2bfloat16_rn(src[i]);
}

__global__ void scale_kernel(float* x, int64_t n, float factor) {
  PF_GRID_STRIDE(i, n) x[i] *= factor;
}

// Block b sums the squares of its strided share of x in double, then the
// block's threads are added in a fixed tree order.
__global__ void sum_of_squares_kernel(const float* x, int64_t n, double* partials) {
  __shared__ double shared[kThreads];
  double s = 0;
  PF_GRID_STRIDE(i, n) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  shared[threadIdx.x] = s;
  __syncthreads();
  for (int w = kThreads / 2; w > 0; w >>= 1) {
    if (static_cast<int>(threadIdx.x) < w) shared[threadIdx.x] += shared[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) partials[blockIdx.x] = shared[0];
}

}  // namespace

void sgd_step(float* w, const float* grad, float* momentum_buffer, int64_t n, double lr, double momentum,
              double weight_decay, bool nesterov, cudaStream_t stream) {
  if (n == 0) return;
  const auto lr_f = static_cast<float>(lr), wd = static_cast<float>(weight_decay);
  if (momentum == 0)
    sgd_kernel<<<blocks_for(n), kThreads, 0, stream>>>(w, grad, n, lr_f, wd);
  else
    sgd_momentum_kernel<<<blocks_for(n), kThreads, 0, stream>>>(w, grad, momentum_buffer, n, lr_f,
                                                                  static_cast<float>(momentum), wd, nesterov);
  PF_CUDA_CHECK_LAUNCH();
}

void adamw_step(float* w, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, cudaStream_t stream) {
  if (n == 0) return;
  // Per-step scalars in double, as PyTorch computes them in Python floats.
  const auto step_size = static_cast<float>(lr / (1.0 - std::pow(beta1, static_cast<double>(t))));
  const auto sqrt_bc2 = static_cast<float>(std::sqrt(1.0 - std::pow(beta2, static_cast<double>(t))));
  adamw_kernel<<<blocks_for(n), kThreads, 0, stream>>>(
      w, grad, exp_avg, exp_avg_sq, n, static_cast<float>(1.0 - lr * weight_decay), static_cast<float>(beta1),
      static_cast<float>(1.0 - beta1), static_cast<float>(beta2), static_cast<float>(1.0 - beta2), step_size, sqrt_bc2,
      static_cast<float>(eps));
  PF_CUDA_CHECK_LAUNCH();
}

void accumulate(float* acc, const void* src, DType src_dtype, int64_t n, bool overwrite, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = blocks_for(n);
  if (src_dtype == DType::bf16) {
    const auto* s = static_cast<const bf16*>(src);
    if (overwrite)
      accumulate_kernel<bf16, true><<<blocks, kThreads, 0, stream>>>(acc, s, n);
    else
      accumulate_kernel<bf16, false><<<blocks, kThreads, 0, stream>>>(acc, s, n);
  } else {
    const auto* s = static_cast<const float*>(src);
    if (overwrite)
      accumulate_kernel<float, true><<<blocks, kThreads, 0, stream>>>(acc, s, n);
    else
      accumulate_kernel<float, false><<<blocks, kThreads, 0, stream>>>(acc, s, n);
  }
  PF_CUDA_CHECK_LAUNCH();
}

void round_to_bf16(const float* src, void* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  round_to_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(src, static_cast<bf16*>(dst), n);
  PF_CUDA_CHECK_LAUNCH();
}

void scale(float* x, int64_t n, double factor, cudaStream_t stream) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, static_cast<float>(factor));
  PF_CUDA_CHECK_LAUNCH();
}

int sum_of_squares(const float* x, int64_t n, double* partials, cudaStream_t stream) {
  if (n == 0) return 0;
  const unsigned blocks = blocks_for(n) < kMaxSquarePartials ? blocks_for(n) : kMaxSquarePartials;
  sum_of_squares_kernel<<<blocks, kThreads, 0, stream>>>(x, n, partials);
  PF_CUDA_CHECK_LAUNCH();
  return static_cast<int>(blocks);
}

}  // namespace pf::cuda
