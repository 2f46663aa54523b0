// Optimizer steps and the other per-step arithmetic on parameter arrays on the device: gradient accumulation, norms, clipping, bf16 copies.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ir/types.h"

namespace pf::cuda {

/// One SGD step over n parameters on `stream`, as runtime::Sgd::step (torch.optim.SGD, dampening 0):
///   g = grad + wd * w;  buf = momentum * buf + g;  d = nesterov ? g + momentum * buf : buf;  w -= lr * d
/// `momentum_buffer` may be null when momentum is 0 (then d = g). Pass weight_decay 0 for parameters that
/// do not decay (runtime::Param::decay false).
void sgd_step(float* w, const float* grad, float* momentum_buffer, int64_t n, double lr, double momentum,
              double weight_decay, bool nesterov, cudaStream_t stream);

/// One AdamW step (step `t`, 1-based) over n parameters, as runtime::AdamW::step: the per-step scalars in
/// double on the host, the elementwise update in f32 in PyTorch's operation order.
void adamw_step(float* w, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, cudaStream_t stream);

/// acc = src (`overwrite`) or acc + src, over n elements; `src_dtype` is f32 or bf16 (a bf16 program's
/// gradients summed into f32 master gradients).
void accumulate(float* acc, const void* src, DType src_dtype, int64_t n, bool overwrite, cudaStream_t stream);

/// dst = src rounded to bf16 (nearest even), over n elements: the bf16 copy of f32 master weights.
void round_to_bf16(const float* src, void* dst, int64_t n, cudaStream_t stream);

/// x *= factor over n elements (gradient clipping).
void scale(float* x, int64_t n, double factor, cudaStream_t stream);

/// The most partial sums sum_of_squares writes.
inline constexpr int kMaxSquarePartials = 256;
/// Writes partial sums of x^2 (in double) to `partials` and returns how many
/// (at most kMaxSquarePartials); their sum, in order, is sum(x^2). The split
/// depends only on n, so the total is the same on every run.
int sum_of_squares(const float* x, int64_t n, double* partials, cudaStream_t stream);

}  // namespace pf::cuda
