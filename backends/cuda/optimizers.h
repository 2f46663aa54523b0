// Optimizer steps on device arrays, with the formulas of runtime/optimizer.h (SGD with momentum, AdamW).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pf::cuda {

/// One SGD step over n parameters on `stream`, as runtime::Sgd::step (torch.optim.SGD, dampening 0):
///   g = grad + wd * w;  buf = momentum * buf + g;  d = nesterov ? g + momentum * buf : buf;  w -= lr * d
/// `momentum_buffer` may be null when momentum is 0 (then d = g). Pass weight_decay 0 for parameters that
/// do not decay (runtime::Param::decay false). Not yet called by the runtime: it has no device optimizer.
void sgd_step(float* w, const float* grad, float* momentum_buffer, int64_t n, double lr, double momentum,
              double weight_decay, bool nesterov, cudaStream_t stream);

/// One AdamW step (step `t`, 1-based) over n parameters, as runtime::AdamW::step: the per-step scalars in
/// double on the host, the elementwise update in f32 in PyTorch's operation order.
void adamw_step(float* w, const float* grad, float* exp_avg, float* exp_avg_sq, int64_t n, double lr, double beta1,
                double beta2, double eps, double weight_decay, int64_t t, cudaStream_t stream);

}  // namespace pf::cuda
