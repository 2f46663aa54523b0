// Reductions (reduce_sum/mean/max, sum_to, reduce_max_grad), softmax and log_softmax, layernorm and rmsnorm, and their gradients (f32).
#include <cmath>
#include <cstdint>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"

namespace pf::cuda {

namespace {

// ---------------------------------------------------------------------------
// Generic reduction: a Load gives the value of input element `off` for output
// `o`, a Combine folds values. A group that is one contiguous run (a row
// reduction) gets a block, whose threads read along the run; otherwise each
// output gets a thread, and neighbouring threads read neighbouring elements
// (column sums such as a bias gradient over [B*T, C]).

struct SumCombine {
  static __device__ float init() { return 0.f; }
  static __device__ float apply(float a, float b) { return a + b; }
};
struct MaxCombine {
  static __device__ float init() { return -INFINITY; }
  static __device__ float apply(float a, float b) { return max_no_nan(a, b); }
};

struct ValueLoad {
  const float* x;
  __device__ float operator()(int64_t off, int64_t) const { return x[off]; }
};
// 1 where x equals its group's maximum y (reduce_max_grad's tie count).
struct TieLoad {
  const float* x;
  const float* y;
  __device__ float operator()(int64_t off, int64_t o) const { return x[off] == y[o] ? 1.f : 0.f; }
};

template <class C>
__device__ float block_reduce(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v = C::apply(v, __shfl_xor_sync(0xffffffffu, v, o));
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < static_cast<int>(blockDim.x >> 5) ? shared[lane] : C::init();
  for (int o = 16; o > 0; o >>= 1) v = C::apply(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

template <class C, class L>
__global__ void reduce_block_kernel(L load, float* out, int64_t outputs, StridedPlan outer, int64_t group, float scale) {
  __shared__ float shared[32];
  for (int64_t o = blockIdx.x; o < outputs; o += gridDim.x) {
    const int64_t base = offset_of(outer, 0, o);
    float acc = C::init();
    for (int64_t r = threadIdx.x; r < group; r += blockDim.x) acc = C::apply(acc, load(base + r, o));
    acc = block_reduce<C>(acc, shared);
    if (threadIdx.x == 0) out[o] = acc * scale;
  }
}

template <class C, class L>
__global__ void reduce_thread_kernel(L load, float* out, int64_t outputs, StridedPlan outer, StridedPlan inner,
                                     int64_t group, float scale) {
  PF_GRID_STRIDE(o, outputs) {
    const int64_t base = offset_of(outer, 0, o);
    float acc = C::init();
    for (int64_t r = 0; r < group; ++r) acc = C::apply(acc, load(base + offset_of(inner, 0, r), o));
    out[o] = acc * scale;
  }
}

template <class C, class L>
void launch_reduce(const ReducePlan& p, L load, float* out, float scale, cudaStream_t stream) {
  if (p.outputs == 0) return;
  if (p.contiguous) {
    const int64_t want = (p.group + 31) / 32 * 32;
    const int threads = static_cast<int>(want < 32 ? 32 : (want > kThreads ? kThreads : want));
    const auto blocks = static_cast<unsigned>(p.outputs < 65536 ? p.outputs : 65536);
    reduce_block_kernel<C><<<blocks, threads, 0, stream>>>(load, out, p.outputs, p.outer, p.group, scale);
  } else {
    reduce_thread_kernel<C><<<blocks_for(p.outputs), kThreads, 0, stream>>>(load, out, p.outputs, p.outer, p.inner,
                                                                          p.group, scale);
  }
  PF_CUDA_CHECK_LAUNCH();
}

// Which axes of x the op's `axes` attribute reduces.
std::vector<bool> reduced_axes(const KernelArgs& args, const TensorType& x) {
  std::vector<bool> reduced(x.shape.size(), false);
  for (int64_t a : args.attrs.get_ints("axes", {})) reduced[normalize_axis(a, x.rank())] = true;
  return reduced;
}

template <class C, bool kMean>
void reduce(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& x = args.in_types[0];
  const ReducePlan p = plan_reduce(x.shape, reduced_axes(args, x));
  // An empty mean is 0 * (1 / 0) = NaN, the mean of nothing, as on the CPU.
  const float scale = kMean ? 1.f / static_cast<float>(p.group) : 1.f;
  launch_reduce<C>(p, ValueLoad{static_cast<const float*>(args.in[0])}, static_cast<float*>(args.out[0]), scale,
                   ctx.stream);
}

// sum_to(shape): sums the axes that broadcasting `shape` to x expands
// (`shape` aligned on the right; missing and size-1 axes are summed).
void sum_to(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& x = args.in_types[0];
  const Shape& target = args.out_types[0].shape;
  const size_t lead = x.shape.size() - target.size();
  std::vector<bool> reduced(x.shape.size(), true);
  for (size_t d = 0; d < target.size(); ++d) reduced[lead + d] = target[d] == 1;
  launch_reduce<SumCombine>(plan_reduce(x.shape, reduced), ValueLoad{static_cast<const float*>(args.in[0])},
                            static_cast<float*>(args.out[0]), 1.f, ctx.stream);
}

// reduce_max_grad(g, x, y): dx = g / ties where x equals its group's maximum
// (ties: how many elements do), else 0; as the CPU and PyTorch's amax.
__global__ void reduce_max_grad_kernel(const float* g, const float* x, const float* y, const float* ties, float* dx,
                                       int64_t n, StridedPlan to_output) {
  PF_GRID_STRIDE(i, n) {
    const int64_t o = offset_of(to_output, 0, i);
    dx[i] = x[i] == y[o] ? g[o] / ties[o] : 0.f;
  }
}

void reduce_max_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& x = args.in_types[1];
  const int64_t n = x.numel();
  if (n == 0) return;
  const std::vector<bool> reduced = reduced_axes(args, x);
  const ReducePlan p = plan_reduce(x.shape, reduced);
  auto* ties = static_cast<float*>(ctx.scratch(static_cast<size_t>(p.outputs) * sizeof(float)));  // (outputs,)
  const auto* xp = static_cast<const float*>(args.in[1]);
  const auto* yp = static_cast<const float*>(args.in[2]);
  launch_reduce<SumCombine>(p, TieLoad{xp, yp}, ties, 1.f, ctx.stream);
  Shape kept = x.shape;
  for (size_t d = 0; d < kept.size(); ++d)
    if (reduced[d]) kept[d] = 1;
  const Shape* operands[] = {&kept};
  reduce_max_grad_kernel<<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const float*>(args.in[0]), xp, yp,
                                                                       ties, static_cast<float*>(args.out[0]), n,
                                                                       plan_broadcast(x.shape, operands));
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// softmax / log_softmax over an axis of [outer, n, inner], shifted by the
// maximum so exp never overflows. inner == 1: a block per row; otherwise a
// thread per column (neighbouring threads read neighbouring elements).

template <bool kLog>
__global__ void softmax_rows_kernel(const float* x, float* y, int64_t rows, int64_t n) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = max_no_nan(m, xr[i]);
    m = block_max(m, shared);
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += expf(xr[i] - m);
    s = block_sum(s, shared);
    if (kLog) {
      const float shift = m + logf(s);
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] - shift;
    } else {
      const float inv = 1.f / s;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
    }
  }
}

template <bool kLog>
__global__ void softmax_columns_kernel(const float* x, float* y, int64_t outer, int64_t n, int64_t inner) {
  PF_GRID_STRIDE(c, outer * inner) {
    const int64_t o = c / inner, k = c - o * inner;
    const float* xc = x + o * n * inner + k;
    float* yc = y + o * n * inner + k;
    float m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = max_no_nan(m, xc[j * inner]);
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) s += expf(xc[j * inner] - m);
    if (kLog) {
      const float shift = m + logf(s);
      for (int64_t j = 0; j < n; ++j) yc[j * inner] = xc[j * inner] - shift;
    } else {
      const float inv = 1.f / s;
      for (int64_t j = 0; j < n; ++j) yc[j * inner] = expf(xc[j * inner] - m) * inv;
    }
  }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(rows < 65536 ? rows : 65536); }

template <bool kLog>
void softmax(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[0];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", -1), t.rank()));
  if (s.outer == 0 || s.n == 0 || s.inner == 0) return;
  const auto* x = static_cast<const float*>(args.in[0]);
  auto* y = static_cast<float*>(args.out[0]);
  if (s.inner == 1)
    softmax_rows_kernel<kLog><<<row_blocks(s.outer), kThreads, 0, ctx.stream>>>(x, y, s.outer, s.n);
  else
    softmax_columns_kernel<kLog><<<blocks_for(s.outer * s.inner), kThreads, 0, ctx.stream>>>(x, y, s.outer, s.n,
                                                                                             s.inner);
  PF_CUDA_CHECK_LAUNCH();
}

// softmax_grad: dx = y (g - sum(g y)); log_softmax_grad: dx = g - exp(y) sum(g).
template <bool kLog>
__global__ void softmax_grad_rows_kernel(const float* g, const float* y, float* dx, int64_t rows, int64_t n) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *gr = g + r * n, *yr = y + r * n;
    float* dr = dx + r * n;
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += kLog ? gr[i] : gr[i] * yr[i];
    s = block_sum(s, shared);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dr[i] = kLog ? gr[i] - expf(yr[i]) * s : yr[i] * (gr[i] - s);
  }
}

template <bool kLog>
__global__ void softmax_grad_columns_kernel(const float* g, const float* y, float* dx, int64_t outer, int64_t n,
                                            int64_t inner) {
  PF_GRID_STRIDE(c, outer * inner) {
    const int64_t o = c / inner, k = c - o * inner, base = o * n * inner + k;
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j * inner;
      s += kLog ? g[i] : g[i] * y[i];
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j * inner;
      dx[i] = kLog ? g[i] - expf(y[i]) * s : y[i] * (g[i] - s);
    }
  }
}

template <bool kLog>
void softmax_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[1];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", -1), t.rank()));
  if (s.outer == 0 || s.n == 0 || s.inner == 0) return;
  const auto* g = static_cast<const float*>(args.in[0]);
  const auto* y = static_cast<const float*>(args.in[1]);
  auto* dx = static_cast<float*>(args.out[0]);
  if (s.inner == 1)
    softmax_grad_rows_kernel<kLog><<<row_blocks(s.outer), kThreads, 0, ctx.stream>>>(g, y, dx, s.outer, s.n);
  else
    softmax_grad_columns_kernel<kLog><<<blocks_for(s.outer * s.inner), kThreads, 0, ctx.stream>>>(g, y, dx, s.outer,
                                                                                                   s.n, s.inner);
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// layernorm and rmsnorm over the last axis: a block per row. Statistics in
// float, mean first and then the centred squares (two passes: no
// cancellation when |mean| >> stddev, which the CPU avoids by a shift).

struct RowStats {
  float mean, rstd;
};

__device__ RowStats layernorm_stats(const float* xr, int64_t c, float eps, float* shared) {
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += xr[i];
  const float mean = block_sum(s, shared) / static_cast<float>(c);
  float sq = 0.f;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    const float d = xr[i] - mean;
    sq += d * d;
  }
  const float var = block_sum(sq, shared) / static_cast<float>(c);
  return {mean, 1.f / sqrtf(var + eps)};
}

__device__ float rms_scale(const float* xr, int64_t c, float eps, float* shared) {
  float sq = 0.f;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) sq += xr[i] * xr[i];
  return 1.f / sqrtf(block_sum(sq, shared) / static_cast<float>(c) + eps);
}

__global__ void layernorm_kernel(const float* x, const float* w, const float* b, float* y, int64_t rows, int64_t c,
                                 float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * c;
    const RowStats st = layernorm_stats(xr, c, eps, shared);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) y[r * c + i] = (xr[i] - st.mean) * st.rstd * w[i] + b[i];
  }
}

__global__ void rmsnorm_kernel(const float* x, const float* w, float* y, int64_t rows, int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * c;
    const float rms = rms_scale(xr, c, eps, shared);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) y[r * c + i] = xr[i] * rms * w[i];
  }
}

void layernorm(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[0].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[0].numel() / c;
  if (rows == 0) return;
  layernorm_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const float*>(args.in[0]), static_cast<const float*>(args.in[1]),
      static_cast<const float*>(args.in[2]), static_cast<float*>(args.out[0]), rows, c,
      static_cast<float>(args.attrs.get_real("eps", 1e-5)));
  PF_CUDA_CHECK_LAUNCH();
}

void rmsnorm(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[0].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[0].numel() / c;
  if (rows == 0) return;
  rmsnorm_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const float*>(args.in[0]), static_cast<const float*>(args.in[1]), static_cast<float*>(args.out[0]),
      rows, c, static_cast<float>(args.attrs.get_real("eps", 1e-6)));
  PF_CUDA_CHECK_LAUNCH();
}

// Gradients. A block per row writes dx and keeps the row's statistics (mean
// and rstd, or the rms scale) in scratch; then a thread per column sums dw
// (and db) over the rows, in row order: deterministic, no atomics.
//   layernorm: xhat = (x - mean) rstd, gw = g w,
//              dx = rstd (gw - mean(gw) - xhat mean(gw xhat)), dw = sum g xhat, db = sum g
//   rmsnorm:   xhat = x r, dx = r (gw - xhat mean(gw xhat)), dw = sum g xhat

__global__ void layernorm_grad_rows_kernel(const float* g, const float* x, const float* w, float* dx, float2* stats,
                                           int64_t rows, int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * c, *gr = g + r * c;
    const RowStats st = layernorm_stats(xr, c, eps, shared);
    float s_gw = 0.f, s_gwx = 0.f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float gw = gr[i] * w[i];
      s_gw += gw;
      s_gwx += gw * (xr[i] - st.mean) * st.rstd;
    }
    const float a = block_sum(s_gw, shared) / static_cast<float>(c);
    const float b = block_sum(s_gwx, shared) / static_cast<float>(c);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xhat = (xr[i] - st.mean) * st.rstd;
      dx[r * c + i] = st.rstd * (gr[i] * w[i] - a - xhat * b);
    }
    if (threadIdx.x == 0) stats[r] = make_float2(st.mean, st.rstd);
  }
}

__global__ void layernorm_grad_columns_kernel(const float* g, const float* x, const float2* stats, float* dw,
                                              float* db, int64_t rows, int64_t c) {
  PF_GRID_STRIDE(i, c) {
    float sw = 0.f, sb = 0.f;
    for (int64_t r = 0; r < rows; ++r) {
      const float gv = g[r * c + i];
      sw += gv * (x[r * c + i] - stats[r].x) * stats[r].y;
      sb += gv;
    }
    dw[i] = sw;
    db[i] = sb;
  }
}

void layernorm_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const auto* g = static_cast<const float*>(args.in[0]);
  const auto* x = static_cast<const float*>(args.in[1]);
  auto* stats = static_cast<float2*>(ctx.scratch(static_cast<size_t>(rows) * sizeof(float2)));  // (rows,) mean, rstd
  if (rows > 0) {
    layernorm_grad_rows_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        g, x, static_cast<const float*>(args.in[2]), static_cast<float*>(args.out[0]), stats, rows, c,
        static_cast<float>(args.attrs.get_real("eps", 1e-5)));
    PF_CUDA_CHECK_LAUNCH();
  }
  layernorm_grad_columns_kernel<<<blocks_for(c), kThreads, 0, ctx.stream>>>(
      g, x, stats, static_cast<float*>(args.out[1]), static_cast<float*>(args.out[2]), rows, c);
  PF_CUDA_CHECK_LAUNCH();
}

__global__ void rmsnorm_grad_rows_kernel(const float* g, const float* x, const float* w, float* dx, float* scales,
                                         int64_t rows, int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *xr = x + r * c, *gr = g + r * c;
    const float rms = rms_scale(xr, c, eps, shared);
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += gr[i] * w[i] * xr[i] * rms;
    const float b = block_sum(s, shared) / static_cast<float>(c);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) dx[r * c + i] = rms * (gr[i] * w[i] - xr[i] * rms * b);
    if (threadIdx.x == 0) scales[r] = rms;
  }
}

__global__ void rmsnorm_grad_columns_kernel(const float* g, const float* x, const float* scales, float* dw,
                                            int64_t rows, int64_t c) {
  PF_GRID_STRIDE(i, c) {
    float sw = 0.f;
    for (int64_t r = 0; r < rows; ++r) sw += g[r * c + i] * x[r * c + i] * scales[r];
    dw[i] = sw;
  }
}

void rmsnorm_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const auto* g = static_cast<const float*>(args.in[0]);
  const auto* x = static_cast<const float*>(args.in[1]);
  auto* scales = static_cast<float*>(ctx.scratch(static_cast<size_t>(rows) * sizeof(float)));  // (rows,)
  if (rows > 0) {
    rmsnorm_grad_rows_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        g, x, static_cast<const float*>(args.in[2]), static_cast<float*>(args.out[0]), scales, rows, c,
        static_cast<float>(args.attrs.get_real("eps", 1e-6)));
    PF_CUDA_CHECK_LAUNCH();
  }
  rmsnorm_grad_columns_kernel<<<blocks_for(c), kThreads, 0, ctx.stream>>>(g, x, scales,
                                                                           static_cast<float*>(args.out[1]), rows, c);
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_reduce_norm_kernels(KernelTable& t) {
  t.set_float(OpKind::reduce_sum, reduce<SumCombine, false>, nullptr);
  t.set_float(OpKind::reduce_mean, reduce<SumCombine, true>, nullptr);
  t.set_float(OpKind::reduce_max, reduce<MaxCombine, false>, nullptr);
  t.set_float(OpKind::sum_to, sum_to, nullptr);
  t.set_float(OpKind::reduce_max_grad, reduce_max_grad, nullptr);
  t.set_float(OpKind::softmax, softmax<false>, nullptr);
  t.set_float(OpKind::log_softmax, softmax<true>, nullptr);
  t.set_float(OpKind::softmax_grad, softmax_grad<false>, nullptr);
  t.set_float(OpKind::log_softmax_grad, softmax_grad<true>, nullptr);
  t.set_float(OpKind::layernorm, layernorm, nullptr);
  t.set_float(OpKind::rmsnorm, rmsnorm, nullptr);
  t.set_float(OpKind::layernorm_grad, layernorm_grad, nullptr);
  t.set_float(OpKind::rmsnorm_grad, rmsnorm_grad, nullptr);
}

}  // namespace pf::cuda
