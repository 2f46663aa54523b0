// Reductions (reduce_sum/mean/max, sum_to, reduce_max_grad), softmax and log_softmax, layernorm and rmsnorm, and their gradients (f32 and bf16).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"
#include "ir/align.h"
#include "ir/diagnostic.h"

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
    const int64_t base = offset_of(outer, o);
    float acc = C::init();
    for (int64_t r = threadIdx.x; r < group; r += blockDim.x) acc = C::apply(acc, load(base + r, o));
    acc = block_reduce<C>(acc, shared);
    if (threadIdx.x == 0) out[o] = from_float<O>(acc * scale);
  }
}

// A group that is not one run is read by a thread per output. Few outputs
// over long groups (a bias gradient: 768 columns of 8192 rows) would leave
// the GPU nearly idle and each thread waiting on one load after another, so
// such groups are cut into chunks of rows: blockIdx.y picks the chunk, each
// chunk's sums go to `partials` [chunks, outputs], and a second kernel adds
// the chunks in order. The cut depends on the shape alone: every GPU sums the
// same terms in the same order.

struct Chunking {
  int64_t chunks = 1, per_chunk = 0;
};

/// How `outputs` sums of `group` terms each are cut: enough threads to keep
/// a large GPU's loads in flight, at least 32 terms per chunk, no chunk empty.
Chunking chunk_groups(int64_t outputs, int64_t group) {
  constexpr int64_t kThreadsToFill = int64_t{1} << 20;
  constexpr int64_t kMinTerms = 32, kMaxChunks = 1024;
  const int64_t by_threads = kThreadsToFill / std::max<int64_t>(outputs, 1);
  const int64_t wanted = std::max<int64_t>(1, std::min({by_threads, group / kMinTerms, kMaxChunks}));
  Chunking c;
  c.per_chunk = (group + wanted - 1) / wanted;
  c.chunks = c.per_chunk > 0 ? (group + c.per_chunk - 1) / c.per_chunk : 1;
  return c;
}

template <class C, class L, class O>
__global__ void reduce_thread_kernel(L load, O* out, float* partials, int64_t outputs, StridedPlan outer,
                                     StridedPlan inner, int64_t group, int64_t per_chunk, float scale) {
  const int64_t begin = blockIdx.y * per_chunk;
  const int64_t end = begin + per_chunk < group ? begin + per_chunk : group;
  PF_GRID_STRIDE(o, outputs) {
    const int64_t base = offset_of(outer, o);
    float acc = C::init();
    for (int64_t r = begin; r < end; ++r) acc = C::apply(acc, load(base + offset_of(inner, r), o));
    if (partials)
      partials[blockIdx.y * outputs + o] = acc;
    else
      out[o] = from_float<O>(acc * scale);
  }
}

// A warp per output adds up its chunks (hundreds of them: one thread each
// would wait on one load after another).
template <class C, class O>
__global__ void reduce_chunks_kernel(const float* partials, int64_t chunks, O* out, int64_t outputs, float scale) {
  for (int64_t o = blockIdx.x; o < outputs; o += gridDim.x) {
    float acc = C::init();
    for (int64_t k = threadIdx.x; k < chunks; k += blockDim.x) acc = C::apply(acc, partials[k * outputs + o]);
    for (int d = 16; d > 0; d >>= 1) acc = C::apply(acc, __shfl_xor_sync(0xffffffffu, acc, d));
    if (threadIdx.x == 0) out[o] = from_float<O>(acc * scale);
  }
}

/// Adds up `chunks` partial results per output: a warp per output.
template <class C, class O>
void launch_reduce_chunks(const float* partials, int64_t chunks, O* out, int64_t outputs, float scale,
                          cudaStream_t stream) {
  const auto blocks = static_cast<unsigned>(outputs < 65536 ? outputs : 65536);
  reduce_chunks_kernel<C><<<blocks, 32, 0, stream>>>(partials, chunks, out, outputs, scale);
  PF_CUDA_CHECK_LAUNCH();
}

/// Floats of scratch launch_reduce needs for plan `p` (0: none).
int64_t reduce_scratch_floats(const ReducePlan& p) {
  if (p.contiguous) return 0;
  const Chunking c = chunk_groups(p.outputs, p.group);
  return c.chunks > 1 ? c.chunks * p.outputs : 0;
}

/// `partials`: reduce_scratch_floats(p) floats of scratch.
template <class C, class L, class O>
void launch_reduce(const ReducePlan& p, L load, O* out, float scale, float* partials, cudaStream_t stream) {
  if (p.outputs == 0) return;
  if (p.contiguous) {
    const int64_t want = (p.group + 31) / 32 * 32;
    const int threads = static_cast<int>(want < 32 ? 32 : (want > kThreads ? kThreads : want));
    const auto blocks = static_cast<unsigned>(p.outputs < 65536 ? p.outputs : 65536);
    reduce_block_kernel<C><<<blocks, threads, 0, stream>>>(load, out, p.outputs, p.outer, p.group, scale);
    PF_CUDA_CHECK_LAUNCH();
    return;
  }
  const Chunking c = chunk_groups(p.outputs, p.group);
  const dim3 grid(blocks_for(p.outputs), static_cast<unsigned>(c.chunks));
  reduce_thread_kernel<C><<<grid, kThreads, 0, stream>>>(load, out, c.chunks > 1 ? partials : nullptr, p.outputs,
                                                         p.outer, p.inner, p.group, c.per_chunk, scale);
  PF_CUDA_CHECK_LAUNCH();
  if (c.chunks > 1) launch_reduce_chunks<C>(partials, c.chunks, out, p.outputs, scale, stream);
}

/// launch_reduce with its scratch from the stream's workspace.
template <class C, class L, class O>
void launch_reduce(const ReducePlan& p, L load, O* out, float scale, const LaunchContext& ctx) {
  const int64_t floats = reduce_scratch_floats(p);
  auto* partials = floats ? static_cast<float*>(ctx.scratch(static_cast<size_t>(floats) * sizeof(float))) : nullptr;
  launch_reduce<C>(p, load, out, scale, partials, ctx.stream);
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
  launch_reduce<C>(p, ValueLoad<T>{static_cast<const T*>(args.in[0])}, static_cast<T*>(args.out[0]), scale, ctx);
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
                            static_cast<T*>(args.out[0]), 1.f, ctx);
}

// reduce_max_grad(g, x, y): dx = g / ties where x equals its group's maximum
// (ties: how many elements do), else 0; as the CPU and PyTorch's amax.
template <class T>
__global__ void reduce_max_grad_kernel(const T* g, const T* x, const T* y, const float* ties, T* dx, int64_t n,
                                       StridedPlan to_output) {
  PF_GRID_STRIDE(i, n) {
    const int64_t o = offset_of(to_output, i);
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
  // Scratch: the tie counts (outputs,), then the reduction's partial sums.
  const int64_t ties_floats = align_up(p.outputs, int64_t{64});
  auto* ties = static_cast<float*>(
      ctx.scratch(static_cast<size_t>(ties_floats + reduce_scratch_floats(p)) * sizeof(float)));
  const auto* xp = static_cast<const T*>(args.in[1]);
  const auto* yp = static_cast<const T*>(args.in[2]);
  launch_reduce<SumCombine>(p, TieLoad<T>{xp, yp}, ties, 1.f, ties + ties_floats, ctx.stream);
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
// Attention scores: softmax(where(mask, x * scale, fill)) and its gradient
// where(mask, softmax_grad(g, y), fill) * scale in one pass each over the
// last axis, for the executor's fusion of those op chains (the unfused
// chain reads and writes the B x H x T x T scores three times). The mask
// has the trailing dimensions of x: row r reads mask row r % mask_rows.
// Intermediates stay in float, where the chain rounds each to T.

// Rows of up to kPer * blockDim.x elements (the attention's T x T scores
// up to T = 2048) are held in registers: read once, each exp taken once.
template <class T, int kPer>
__global__ void masked_softmax_rows_kernel(const T* x, const T* scale_p, const uint8_t* mask, const T* fill_p, T* y,
                                           int64_t rows, int64_t n, int64_t mask_rows) {
  __shared__ float shared[32];
  const float scale = to_float(*scale_p), fill = to_float(*fill_p);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    const uint8_t* mr = mask + (r % mask_rows) * n;
    T* yr = y + r * n;
    float v[kPer];
    float m = -INFINITY;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + int64_t{j} * blockDim.x;
      v[j] = i < n ? (mr[i] ? to_float(xr[i]) * scale : fill) : -INFINITY;
      m = max_no_nan(m, v[j]);
    }
    m = block_max(m, shared);
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + int64_t{j} * blockDim.x;
      v[j] = i < n ? expf(v[j] - m) : 0.f;
      s += v[j];
    }
    const float inv = 1.f / block_sum(s, shared);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + int64_t{j} * blockDim.x;
      if (i < n) yr[i] = from_float<T>(v[j] * inv);
    }
  }
}

// Longer rows: one pass for the maximum and the sum, one to write.
template <class T>
__global__ void masked_softmax_long_rows_kernel(const T* x, const T* scale_p, const uint8_t* mask, const T* fill_p,
                                                T* y, int64_t rows, int64_t n, int64_t mask_rows) {
  __shared__ float shared[32];
  const float scale = to_float(*scale_p), fill = to_float(*fill_p);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* xr = x + r * n;
    const uint8_t* mr = mask + (r % mask_rows) * n;
    T* yr = y + r * n;
    auto score = [&](int64_t i) { return mr[i] ? to_float(xr[i]) * scale : fill; };
    const float2 ms = row_max_and_exp_sum(score, n, shared);
    const float inv = 1.f / ms.y;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = from_float<T>(expf(score(i) - ms.x) * inv);
  }
}

template <class T, int kPer>
__global__ void masked_softmax_grad_rows_kernel(const T* g, const T* y, const uint8_t* mask, const T* fill_p,
                                                const T* scale_p, T* dx, int64_t rows, int64_t n, int64_t mask_rows) {
  __shared__ float shared[32];
  const float scale = to_float(*scale_p), fill = to_float(*fill_p);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *gr = g + r * n, *yr = y + r * n;
    const uint8_t* mr = mask + (r % mask_rows) * n;
    T* dr = dx + r * n;
    float gv[kPer], yv[kPer];
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + int64_t{j} * blockDim.x;
      gv[j] = i < n ? to_float(gr[i]) : 0.f;
      yv[j] = i < n ? to_float(yr[i]) : 0.f;
      s += gv[j] * yv[j];
    }
    s = block_sum(s, shared);
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      const int64_t i = threadIdx.x + int64_t{j} * blockDim.x;
      if (i < n) dr[i] = from_float<T>((mr[i] ? softmax_grad_at<false>(gv[j], yv[j], s) : fill) * scale);
    }
  }
}

template <class T>
__global__ void masked_softmax_grad_long_rows_kernel(const T* g, const T* y, const uint8_t* mask, const T* fill_p,
                                                     const T* scale_p, T* dx, int64_t rows, int64_t n,
                                                     int64_t mask_rows) {
  __shared__ float shared[32];
  const float scale = to_float(*scale_p), fill = to_float(*fill_p);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *gr = g + r * n, *yr = y + r * n;
    const uint8_t* mr = mask + (r % mask_rows) * n;
    T* dr = dx + r * n;
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += to_float(gr[i]) * to_float(yr[i]);
    s = block_sum(s, shared);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      dr[i] = from_float<T>((mr[i] ? softmax_grad_at<false>(to_float(gr[i]), to_float(yr[i]), s) : fill) * scale);
  }
}

/// Rows of x and how many rows the mask holds; throws pf::Error for a mask that is not x's trailing dimensions.
AxisSplit masked_rows(const TensorType& x, const TensorType& mask, int64_t& mask_rows) {
  const size_t lead = x.shape.size() - std::min(x.shape.size(), mask.shape.size());
  if (mask.shape.empty() || mask.shape.size() > x.shape.size() ||
      !std::equal(mask.shape.begin(), mask.shape.end(), x.shape.begin() + static_cast<std::ptrdiff_t>(lead)))
    throw Error("fused softmax: the mask " + mask.str() + " is not the trailing dimensions of the scores " + x.str());
  const AxisSplit s = split_at_axis(x.shape, x.rank() - 1);
  mask_rows = s.n ? mask.numel() / s.n : 1;
  return s;
}

/// Launches the kernel that holds rows in registers (4 or 8 elements per
/// thread) where they fit, the long-row kernel otherwise.
template <class Kernel, class... Pointers>
void launch_masked_rows(const AxisSplit& s, int64_t mask_rows, cudaStream_t stream, Kernel held4, Kernel held8,
                        Kernel long_rows, Pointers... pointers) {
  if (s.outer == 0 || s.n == 0) return;
  const Kernel kernel = s.n <= 4 * kThreads ? held4 : s.n <= 8 * kThreads ? held8 : long_rows;
  kernel<<<row_blocks(s.outer), kThreads, 0, stream>>>(pointers..., s.outer, s.n, mask_rows);
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
void masked_softmax(const KernelArgs& args, const LaunchContext& ctx) {
  int64_t mask_rows = 1;
  const AxisSplit s = masked_rows(args.in_types[0], args.in_types[2], mask_rows);
  launch_masked_rows(s, mask_rows, ctx.stream, masked_softmax_rows_kernel<T, 4>, masked_softmax_rows_kernel<T, 8>,
                     masked_softmax_long_rows_kernel<T>, static_cast<const T*>(args.in[0]),
                     static_cast<const T*>(args.in[1]), static_cast<const uint8_t*>(args.in[2]),
                     static_cast<const T*>(args.in[3]), static_cast<T*>(args.out[0]));
}

template <class T>
void masked_softmax_grad(const KernelArgs& args, const LaunchContext& ctx) {
  int64_t mask_rows = 1;
  const AxisSplit s = masked_rows(args.in_types[0], args.in_types[2], mask_rows);
  launch_masked_rows(s, mask_rows, ctx.stream, masked_softmax_grad_rows_kernel<T, 4>,
                     masked_softmax_grad_rows_kernel<T, 8>, masked_softmax_grad_long_rows_kernel<T>,
                     static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]),
                     static_cast<const uint8_t*>(args.in[2]), static_cast<const T*>(args.in[3]),
                     static_cast<const T*>(args.in[4]), static_cast<T*>(args.out[0]));
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
// and rstd, or the rms scale) in scratch; then threads per column sum dw
// (and db) over chunks of rows, and the chunks in order: deterministic, no
// atomics.
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

// dw (and db) as column sums, cut into chunks of rows as launch_reduce cuts
// them: partial sums per chunk (pw, pb: [chunks, c]) when there are several.
template <class T>
__global__ void layernorm_grad_columns_kernel(const T* g, const T* x, const float2* stats, T* dw, T* db, float* pw,
                                              float* pb, int64_t rows, int64_t c, int64_t per_chunk) {
  const int64_t begin = blockIdx.y * per_chunk;
  const int64_t end = begin + per_chunk < rows ? begin + per_chunk : rows;
  PF_GRID_STRIDE(i, c) {
    float sw = 0.f, sb = 0.f;
    for (int64_t r = begin; r < end; ++r) {
      const float gv = to_float(g[r * c + i]);
      sw += gv * (to_float(x[r * c + i]) - stats[r].x) * stats[r].y;
      sb += gv;
    }
    if (pw) {
      pw[blockIdx.y * c + i] = sw;
      pb[blockIdx.y * c + i] = sb;
    } else {
      dw[i] = from_float<T>(sw);
      db[i] = from_float<T>(sb);
    }
  }
}

/// Scratch of a norm gradient: `row_floats` per row, then `sums` partial column sums of each chunk.
struct NormGradScratch {
  float* rows = nullptr;
  float* partials[2] = {};
  Chunking cut;
};

NormGradScratch norm_grad_scratch(const LaunchContext& ctx, int64_t rows, int64_t c, int64_t row_floats, int sums) {
  NormGradScratch s;
  s.cut = chunk_groups(c, rows);
  const int64_t head = align_up(rows * row_floats, int64_t{64});
  const int64_t each = s.cut.chunks > 1 ? s.cut.chunks * c : 0;
  s.rows = static_cast<float*>(ctx.scratch(static_cast<size_t>(head + sums * each) * sizeof(float)));
  if (each)
    for (int k = 0; k < sums; ++k) s.partials[k] = s.rows + head + k * each;
  return s;
}

/// Adds up the chunks' partial sums into `out` (nothing to do for one chunk).
template <class T>
void finish_column_sums(const NormGradScratch& s, int k, T* out, int64_t c, cudaStream_t stream) {
  if (s.cut.chunks > 1) launch_reduce_chunks<SumCombine>(s.partials[k], s.cut.chunks, out, c, 1.f, stream);
}

template <class T>
void layernorm_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t c = args.in_types[1].shape.back();
  if (c == 0) return;
  const int64_t rows = args.in_types[1].numel() / c;
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  const NormGradScratch s = norm_grad_scratch(ctx, rows, c, 2, 2);
  auto* stats = reinterpret_cast<float2*>(s.rows);  // (rows,) mean, rstd
  if (rows > 0) {
    layernorm_grad_rows_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        g, x, static_cast<const T*>(args.in[2]), static_cast<T*>(args.out[0]), stats, rows, c,
        static_cast<float>(args.attrs.get_real("eps", 1e-5)));
    PF_CUDA_CHECK_LAUNCH();
  }
  auto* dw = static_cast<T*>(args.out[1]);
  auto* db = static_cast<T*>(args.out[2]);
  const dim3 grid(blocks_for(c), static_cast<unsigned>(s.cut.chunks));
  layernorm_grad_columns_kernel<T><<<grid, kThreads, 0, ctx.stream>>>(g, x, stats, dw, db, s.partials[0],
                                                                       s.partials[1], rows, c, s.cut.per_chunk);
  PF_CUDA_CHECK_LAUNCH();
  finish_column_sums(s, 0, dw, c, ctx.stream);
  finish_column_sums(s, 1, db, c, ctx.stream);
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
__global__ void rmsnorm_grad_columns_kernel(const T* g, const T* x, const float* scales, T* dw, float* pw,
                                            int64_t rows, int64_t c, int64_t per_chunk) {
  const int64_t begin = blockIdx.y * per_chunk;
  const int64_t end = begin + per_chunk < rows ? begin + per_chunk : rows;
  PF_GRID_STRIDE(i, c) {
    float sw = 0.f;
    for (int64_t r = begin; r < end; ++r) sw += to_float(g[r * c + i]) * to_float(x[r * c + i]) * scales[r];
    if (pw)
      pw[blockIdx.y * c + i] = sw;
    else
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
  const NormGradScratch s = norm_grad_scratch(ctx, rows, c, 1, 1);
  float* scales = s.rows;  // (rows,)
  if (rows > 0) {
    rmsnorm_grad_rows_kernel<T><<<row_blocks(rows), kThreads, 0, ctx.stream>>>(
        g, x, static_cast<const T*>(args.in[2]), static_cast<T*>(args.out[0]), scales, rows, c,
        static_cast<float>(args.attrs.get_real("eps", 1e-6)));
    PF_CUDA_CHECK_LAUNCH();
  }
  auto* dw = static_cast<T*>(args.out[1]);
  const dim3 grid(blocks_for(c), static_cast<unsigned>(s.cut.chunks));
  rmsnorm_grad_columns_kernel<T><<<grid, kThreads, 0, ctx.stream>>>(g, x, scales, dw, s.partials[0], rows, c,
                                                                     s.cut.per_chunk);
  PF_CUDA_CHECK_LAUNCH();
  finish_column_sums(s, 0, dw, c, ctx.stream);
}

}  // namespace

Kernel masked_softmax_kernel(DType dtype) {
  if (dtype == DType::f32) return masked_softmax<float>;
  if (dtype == DType::bf16) return masked_softmax<bf16>;
  throw Error("no cuda kernel for the fused masked softmax in " + std::string(dtype_name(dtype)));
}

Kernel masked_softmax_grad_kernel(DType dtype) {
  if (dtype == DType::f32) return masked_softmax_grad<float>;
  if (dtype == DType::bf16) return masked_softmax_grad<bf16>;
  throw Error("no cuda kernel for the fused masked softmax gradient in " + std::string(dtype_name(dtype)));
}

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
