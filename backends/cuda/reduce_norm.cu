// Reductions (reduce_sum/mean/max, sum_to, reduce_max_grad), softmax and log_softmax, layernorm and rmsnorm, and their gradients (f32 and bf16).
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
// (column sums such as a bias gradient over [B*T, C]). Every kernel below
// reads and writes T (float or bf16) and computes in float, so that a bf16
// stage sums thousands of rows without losing the low bits of its terms.

struct SumCombine {
  static __device__ float init() { return 0.f; }
  static __device__ float apply(float a, float b) { return a + b; }
};
struct MaxCombine {
  static __device__ float init() { return -INFINITY; }
  static __device__ float apply(float a, float b) { return max_no_nan(a, b); }
};

template <class T>
struct ValueLoad {
  const T* x;
  __device__ float operator()(int64_t off, int64_t) const { return to_float(x[off]); }
};
// 1 where x equals its group's maximum y (reduce_max_grad's tie count).
template <class T>
struct TieLoad {
  const T* x;
  const T* y;
  __device__ float operator()(int64_t off, int64_t o) const { return to_float(x[off]) == to_float(y[o]) ? 1.f : 0.f; }
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

template <class C, class L, class O>
__global__ void reduce_block_kernel(L load, O* out, int64_t outputs, StridedPlan outer, int64_t group, float scale) {
  __shared__ float shared[32];
  for (int64_t o = blockIdx.x; o < outputs; o += gridDim.x) {
    const int64_t base = offset_of(outer, 0, o);
    float acc = C::init();
    for (int64_t r = threadIdx.x; r < group; r += blockDim.x) acc = C::apply(acc, load(base + r, o));
    acc = block_reduce<C>(acc, shared);
    if (threadIdx.x == 0) out[o] = from_float<O>(acc * scale);
  }
}

template <class C, class L, class O>
__global__ void reduce_thread_kernel(L load, O* out, int64_t outputs, StridedPlan outer, StridedPlan inner,
                                     int64_t group, float scale) {
  PF_GRID_STRIDE(o, outputs) {
    const int64_t base = offset_of(outer, 0, o);
    float acc = C::init();
    for (int64_t r = 0; r < group; ++r) acc = C::apply(acc, load(base + offset_of(inner, 0, r), o));
    out[o] = from_float<O>(acc * scale);
  }
}

template <class C, class L, class O>
void launch_reduce(const ReducePlan& p, L load, O* out, float scale, cudaStream_t stream) {
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

template <class T, class C, bool kMean>
void reduce(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& x = args.in_types[0];
  const ReducePlan p = plan_reduce(x.shape, reduced_axes(args, x));
  // An empty mean is 0 * (1 / 0) = NaN, the mean of nothing, as on the CPU.
  const float scale = kMean ? 1.f / static_cast<float>(p.group) : 1.f;
  launch_reduce<C>(p, ValueLoad<T>{static_cast<const T*>(args.in[0])}, static_cast<T*>(args.out[0]), scale,
                   ctx.stream);
}

// sum_to(shape): sums the axes that broadcasting `shape` to x expands
// (`shape` aligned on the right; missing and size-1 axes are summed).
template <class T>
void sum_to(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& x = args.in_types[0];
  const Shape& target = args.out_types[0].shape;
  const size_t lead = x.shape.size() - target.size();
  std::vector<bool> reduced(x.shape.size(), true);
  for (size_t d = 0; d < target.size(); ++d) reduced[lead + d] = target[d] == 1;
  launch_reduce<SumCombine>(plan_reduce(x.shape, reduced), ValueLoad<T>{static_cast<const T*>(args.in[0])},
                            static_cast<T*>(args.out[0]), 1.f, ctx.stream);
}

// reduce_max_grad(g, x, y): dx = g / ties where x equals its group's maximum
// (ties: how many elements do), else 0; as the CPU and PyTorch's amax.
template <class T>
__global__ void reduce_max_grad_kernel(const T* g, const T* x, const T* y, const float* ties, T* dx, int64_t n,
                                       StridedPlan to_output) {
  PF_GRID_STRIDE(i, n) {
    const int64_t o = offset_of(to_output, 0, i);
    dx[i] = from_float<T>(to_float(x[i]) == to_float(y[o]) ? to_float(g[o]) / ties[o] : 0.f);
  }
}

template <class T>
void reduce_max_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& x = args.in_types[1];
  const int64_t n = x.numel();
  if (n == 0) return;
  const std::vector<bool> reduced = reduced_axes(args, x);
  const ReducePlan p = plan_reduce(x.shape, reduced);
  auto* ties = static_cast<float*>(ctx.scratch(static_cast<size_t>(p.outputs) * sizeof(float)));  // (outputs,)
  const auto* xp = static_cast<const T*>(args.in[1]);
  const auto* yp = static_cast<const T*>(args.in[2]);
  launch_reduce<SumCombine>(p, TieLoad<T>{xp, yp}, ties, 1.f, ctx.stream);
  Shape kept = x.shape;
  for (size_t d = 0; d < kept.size(); ++d)
    if (reduced[d]) kept[d] = 1;
  const Shape* operands[] = {&kept};
  reduce_max_grad_kernel<T><<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const T*>(args.in[0]), xp, yp,
                                                                          ties, static_cast<T*>(args.out[0]), n,
                                                                          plan_broadcast(x.shape, operands));
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// softmax / log_softmax over an axis of [outer, n, inner], shifted by the
// maximum so exp never overflows. inner == 1: a block per row; otherwise a
// thread per column (neighbouring threads read neighbouring elements).

template <class T, bool kLog>
__global__ void softmax_rows_kernel(const T* x, T* y, int64_t rows, int64_t n) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    T* yr = y + r * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = max_no_nan(m, to_float(xr[i]));
    m = block_max(m, shared);
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += expf(to_float(xr[i]) - m);
    s = block_sum(s, shared);
    if (kLog) {
      const float shift = m + logf(s);
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = from_float<T>(to_float(xr[i]) - shift);
    } else {
      const float inv = 1.f / s;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = from_float<T>(expf(to_float(xr[i]) - m) * inv);
    }
  }
}

template <class T, bool kLog>
__global__ void softmax_columns_kernel(const T* x, T* y, int64_t outer, int64_t n, int64_t inner) {
  PF_GRID_STRIDE(c, outer * inner) {
    const int64_t o = c / inner, k = c - o * inner;
    const T* xc = x + o * n * inner + k;
    T* yc = y + o * n * inner + k;
    float m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) m = max_no_nan(m, to_float(xc[j * inner]));
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) s += expf(to_float(xc[j * inner]) - m);
    if (kLog) {
      const float shift = m + logf(s);
      for (int64_t j = 0; j < n; ++j) yc[j * inner] = from_float<T>(to_float(xc[j * inner]) - shift);
    } else {
      const float inv = 1.f / s;
      for (int64_t j = 0; j < n; ++j) yc[j * inner] = from_float<T>(expf(to_float(xc[j * inner]) - m) * inv);
    }
  }
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>(rows < 65536 ? rows : 65536); }

template <class T, bool kLog>
void softmax(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[0];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", -1), t.rank()));
  if (s.outer == 0 || s.n == 0 || s.inner == 0) return;
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  if (s.inner == 1)
    softmax_rows_kernel<T, kLog><<<row_blocks(s.outer), kThreads, 0, ctx.stream>>>(x, y, s.outer, s.n);
  else
    softmax_columns_kernel<T, kLog><<<blocks_for(s.outer * s.inner), kThreads, 0, ctx.stream>>>(x, y, s.outer, s.n,
                                                                                                s.inner);
  PF_CUDA_CHECK_LAUNCH();
}

// softmax_grad: dx = y (g - sum(g y)); log_softmax_grad: dx = g - exp(y) sum(g).
// One element of either gradient, from g, y and the row's sum s.
template <bool kLog>
__device__ __forceinline__ float softmax_grad_at(float g, float y, float s) {
  return kLog ? g - expf(y) * s : y * (g - s);
}

template <class T, bool kLog>
__global__ void softmax_grad_rows_kernel(const T* g, const T* y, T* dx, int64_t rows, int64_t n) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *gr = g + r * n, *yr = y + r * n;
    T* dr = dx + r * n;
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      s += kLog ? to_float(gr[i]) : to_float(gr[i]) * to_float(yr[i]);
    s = block_sum(s, shared);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      dr[i] = from_float<T>(softmax_grad_at<kLog>(to_float(gr[i]), to_float(yr[i]), s));
  }
}

template <class T, bool kLog>
__global__ void softmax_grad_columns_kernel(const T* g, const T* y, T* dx, int64_t outer, int64_t n, int64_t inner) {
  PF_GRID_STRIDE(c, outer * inner) {
    const int64_t o = c / inner, k = c - o * inner, base = o * n * inner + k;
    float s = 0.f;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j * inner;
      s += kLog ? to_float(g[i]) : to_float(g[i]) * to_float(y[i]);
    }
    for (int64_t j = 0; j < n; ++j) {
      const int64_t i = base + j * inner;
      dx[i] = from_float<T>(softmax_grad_at<kLog>(to_float(g[i]), to_float(y[i]), s));
    }
  }
}

template <class T, bool kLog>
void softmax_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[1];
  const AxisSplit s = split_at_axis(t.shape, normalize_axis(args.attrs.get_int("axis", -1), t.rank()));
  if (s.outer == 0 || s.n == 0 || s.inner == 0) return;
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* y = static_cast<const T*>(args.in[1]);
  auto* dx = static_cast<T*>(args.out[0]);
  if (s.inner == 1)
    softmax_grad_rows_kernel<T, kLog><<<row_blocks(s.outer), kThreads, 0, ctx.stream>>>(g, y, dx, s.outer, s.n);
  else
    softmax_grad_columns_kernel<T, kLog><<<blocks_for(s.outer * s.inner), kThreads, 0, ctx.stream>>>(
        g, y, dx, s.outer, s.n, s.inner);
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// layernorm and rmsnorm over the last axis: a block per row. Statistics in
// float, mean first and then the centred squares (two passes: no
// cancellation when |mean| >> stddev, which the CPU avoids by a shift).

struct RowStats {
  float mean, rstd;
};

template <class T>
__device__ RowStats layernorm_stats(const T* xr, int64_t c, float eps, float* shared) {
  float s = 0.f;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += to_float(xr[i]);
  const float mean = block_sum(s, shared) / static_cast<float>(c);
  float sq = 0.f;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
    const float d = to_float(xr[i]) - mean;
    sq += d * d;
  }
  const float var = block_sum(sq, shared) / static_cast<float>(c);
  return {mean, 1.f / sqrtf(var + eps)};
}

template <class T>
__device__ float rms_scale(const T* xr, int64_t c, float eps, float* shared) {
  float sq = 0.f;
  for (int64_t i = threadIdx.x; i < c; i += blockDim.x) sq += to_float(xr[i]) * to_float(xr[i]);
  return 1.f / sqrtf(block_sum(sq, shared) / static_cast<float>(c) + eps);
}

template <class T>
__global__ void layernorm_kernel(const T* x, const T* w, const T* b, T* y, int64_t rows, int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * c;
    const RowStats st = layernorm_stats(xr, c, eps, shared);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      y[r * c + i] = from_float<T>((to_float(xr[i]) - st.mean) * st.rstd * to_float(w[i]) + to_float(b[i]));
  }
}

template <class T>
__global__ void rmsnorm_kernel(const T* x, const T* w, T* y, int64_t rows, int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * c;
    const float rms = rms_scale(xr, c, eps, shared);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      y[r * c + i] = from_float<T>(to_float(xr[i]) * rms * to_float(w[i]));
  }
}

template <class T>
void layernorm(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[0].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[0].numel() / c;
  if (rows == 0) return;
  layernorm_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<const T*>(args.in[2]),
      static_cast<T*>(args.out[0]), rows, c, static_cast<float>(args.attrs.get_real("eps", 1e-5)));
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
void rmsnorm(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[0].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[0].numel() / c;
  if (rows == 0) return;
  rmsnorm_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<T*>(args.out[0]), rows, c,
      static_cast<float>(args.attrs.get_real("eps", 1e-6)));
  PF_CUDA_CHECK_LAUNCH();
}

// Gradients. A block per row writes dx and keeps the row's statistics (mean
// and rstd, or the rms scale) in scratch; then a thread per column sums dw
// (and db) over the rows, in row order: deterministic, no atomics.
//   layernorm: xhat = (x - mean) rstd, gw = g w,
//              dx = rstd (gw - mean(gw) - xhat mean(gw xhat)), dw = sum g xhat, db = sum g
//   rmsnorm:   xhat = x r, dx = r (gw - xhat mean(gw xhat)), dw = sum g xhat

template <class T>
__global__ void layernorm_grad_rows_kernel(const T* g, const T* x, const T* w, T* dx, float2* stats, int64_t rows,
                                           int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * c, *gr = g + r * c;
    const RowStats st = layernorm_stats(xr, c, eps, shared);
    float s_gw = 0.f, s_gwx = 0.f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float gw = to_float(gr[i]) * to_float(w[i]);
      s_gw += gw;
      s_gwx += gw * (to_float(xr[i]) - st.mean) * st.rstd;
    }
    const float a = block_sum(s_gw, shared) / static_cast<float>(c);
    const float b = block_sum(s_gwx, shared) / static_cast<float>(c);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) {
      const float xhat = (to_float(xr[i]) - st.mean) * st.rstd;
      dx[r * c + i] = from_float<T>(st.rstd * (to_float(gr[i]) * to_float(w[i]) - a - xhat * b));
    }
    if (threadIdx.x == 0) stats[r] = make_float2(st.mean, st.rstd);
  }
}

template <class T>
__global__ void layernorm_grad_columns_kernel(const T* g, const T* x, const float2* stats, T* dw, T* db, int64_t rows,
                                              int64_t c) {
  PF_GRID_STRIDE(i, c) {
    float sw = 0.f, sb = 0.f;
    for (int64_t r = 0; r < rows; ++r) {
      const float gv = to_float(g[r * c + i]);
      sw += gv * (to_float(x[r * c + i]) - stats[r].x) * stats[r].y;
      sb += gv;
    }
    dw[i] = from_float<T>(sw);
    db[i] = from_float<T>(sb);
  }
}

template <class T>
void layernorm_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  auto* stats = static_cast<float2*>(ctx.scratch(static_cast<size_t>(rows) * sizeof(float2)));  // (rows,) mean, rstd
  if (rows > 0) {
    layernorm_grad_rows_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        g, x, static_cast<const T*>(args.in[2]), static_cast<T*>(args.out[0]), stats, rows, c,
        static_cast<float>(args.attrs.get_real("eps", 1e-5)));
    PF_CUDA_CHECK_LAUNCH();
  }
  layernorm_grad_columns_kernel<T><<<blocks_for(c), kThreads, 0, ctx.stream>>>(
      g, x, stats, static_cast<T*>(args.out[1]), static_cast<T*>(args.out[2]), rows, c);
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
__global__ void rmsnorm_grad_rows_kernel(const T* g, const T* x, const T* w, T* dx, float* scales, int64_t rows,
                                         int64_t c, float eps) {
  __shared__ float shared[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * c, *gr = g + r * c;
    const float rms = rms_scale(xr, c, eps, shared);
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x) s += to_float(gr[i]) * to_float(w[i]) * to_float(xr[i]) * rms;
    const float b = block_sum(s, shared) / static_cast<float>(c);
    for (int64_t i = threadIdx.x; i < c; i += blockDim.x)
      dx[r * c + i] = from_float<T>(rms * (to_float(gr[i]) * to_float(w[i]) - to_float(xr[i]) * rms * b));
    if (threadIdx.x == 0) scales[r] = rms;
  }
}

template <class T>
__global__ void rmsnorm_grad_columns_kernel(const T* g, const T* x, const float* scales, T* dw, int64_t rows,
                                            int64_t c) {
  PF_GRID_STRIDE(i, c) {
    float sw = 0.f;
    for (int64_t r = 0; r < rows; ++r) sw += to_float(g[r * c + i]) * to_float(x[r * c + i]) * scales[r];
    dw[i] = from_float<T>(sw);
  }
}

template <class T>
void rmsnorm_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  auto* scales = static_cast<float*>(ctx.scratch(static_cast<size_t>(rows) * sizeof(float)));  // (rows,)
  if (rows > 0) {
    rmsnorm_grad_rows_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        g, x, static_cast<const T*>(args.in[2]), static_cast<T*>(args.out[0]), scales, rows, c,
        static_cast<float>(args.attrs.get_real("eps", 1e-6)));
    PF_CUDA_CHECK_LAUNCH();
  }
  rmsnorm_grad_columns_kernel<T><<<blocks_for(c), kThreads, 0, ctx.stream>>>(g, x, scales,
                                                                              static_cast<T*>(args.out[1]), rows, c);
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_reduce_norm_kernels(KernelTable& t) {
  t.set_float(OpKind::reduce_sum, reduce<float, SumCombine, false>, reduce<bf16, SumCombine, false>);
  t.set_float(OpKind::reduce_mean, reduce<float, SumCombine, true>, reduce<bf16, SumCombine, true>);
  t.set_float(OpKind::reduce_max, reduce<float, MaxCombine, false>, reduce<bf16, MaxCombine, false>);
  t.set_float(OpKind::sum_to, sum_to<float>, sum_to<bf16>);
  t.set_float(OpKind::reduce_max_grad, reduce_max_grad<float>, reduce_max_grad<bf16>);
  t.set_float(OpKind::softmax, softmax<float, false>, softmax<bf16, false>);
  t.set_float(OpKind::log_softmax, softmax<float, true>, softmax<bf16, true>);
  t.set_float(OpKind::softmax_grad, softmax_grad<float, false>, softmax_grad<bf16, false>);
  t.set_float(OpKind::log_softmax_grad, softmax_grad<float, true>, softmax_grad<bf16, true>);
  t.set_float(OpKind::layernorm, layernorm<float>, layernorm<bf16>);
  t.set_float(OpKind::rmsnorm, rmsnorm<float>, rmsnorm<bf16>);
  t.set_float(OpKind::layernorm_grad, layernorm_grad<float>, layernorm_grad<bf16>);
  t.set_float(OpKind::rmsnorm_grad, rmsnorm_grad<float>, rmsnorm_grad<bf16>);
}

}  // namespace pf::cuda
