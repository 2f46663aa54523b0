// Device helpers shared by the .cu files: element types, launch sizes, strided offsets, block reductions, error reports (internal).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/check.h"
#include "backends/cuda/indexing.h"
#include "backends/cuda/kernels.h"

namespace pf::cuda {

using bf16 = __nv_bfloat16;

// Every kernel computes in float and converts at loads and stores, so one
// template serves f32 and bf16.
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(bf16 v) { return __bfloat162float(v); }
template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ bf16 from_float<bf16>(float v) {
  return __float2bfloat16_rn(v);
}

inline constexpr int kThreads = 256;

/// Blocks for a grid-stride loop over n elements: enough to fill any current
/// GPU, never more than the loop needs.
inline unsigned blocks_for(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > 65536 ? 65536 : b));
}

/// The element offsets of operands 0..N-1 for flat result index i: one
/// unravelling for all of them, in 32 bits with multiply-shift divisions
/// where the plan allows (see StridedPlan::index32).
template <int N>
__device__ __forceinline__ void offsets_of(const StridedPlan& p, int64_t i, int64_t (&off)[N]) {
  if (p.index32) {
    uint32_t x = static_cast<uint32_t>(i);
    int32_t o[N] = {};
    for (int d = p.rank - 1; d >= 0; --d) {
      const uint32_t q = (__umulhi(x, p.magic[d]) + x) >> p.shift[d];
      const auto r = static_cast<int32_t>(x - q * static_cast<uint32_t>(p.dims[d]));
#pragma unroll
      for (int k = 0; k < N; ++k) o[k] += r * static_cast<int32_t>(p.strides[k][d]);
      x = q;
    }
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = o[k];
    return;
  }
#pragma unroll
  for (int k = 0; k < N; ++k) off[k] = 0;
  for (int d = p.rank - 1; d >= 0; --d) {
    const int64_t q = i / p.dims[d];
    const int64_t r = i - q * p.dims[d];
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] += r * p.strides[k][d];
    i = q;
  }
}

/// The element offset of operand 0 for flat result index i.
__device__ __forceinline__ int64_t offset_of(const StridedPlan& p, int64_t i) {
  int64_t off[1];
  offsets_of<1>(p, i, off);
  return off[0];
}

#define PF_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < (n); i += int64_t{gridDim.x} * blockDim.x)

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// max that never lets a NaN win (as the CPU kernels' `x > m ? x : m`).
__device__ __forceinline__ float max_no_nan(float m, float x) { return x > m ? x : m; }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = max_no_nan(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/// The sum of `v` over the block (blockDim.x a multiple of 32, at most 1024),
/// returned to every thread. `shared` holds 32 floats; it may be reused after.
__device__ __forceinline__ float block_sum(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // shared may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? shared[lane] : 0.f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x >> 5;
  v = lane < warps ? shared[lane] : -INFINITY;
  return warp_max(v);
}

/// The maximum m of a row of n values (x(i) gives value i) and the sum of
/// exp(x - m) over it, returned to every thread, in one pass over the row:
/// each thread keeps a running maximum and rescales its sum when the
/// maximum grows. A row too long to stay in cache is then read once for
/// both instead of twice. -inf values add nothing; a NaN makes the sum NaN.
template <class Load>
__device__ __forceinline__ float2 row_max_and_exp_sum(Load x, int64_t n, float* shared) {
  float m = -INFINITY, s = 0.f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float v = x(i);
    if (v > m) {
      s = s * expf(m - v) + 1.f;
      m = v;
    } else if (!(v == -INFINITY)) {
      s += expf(v - m);
    }
  }
  const float row_max = block_max(m, shared);
  s = s == 0.f ? 0.f : s * expf(m - row_max);
  return make_float2(row_max, block_sum(s, shared));
}

/// Records bad data: the first report wins, later ones are dropped.
__device__ __forceinline__ void report_error(DeviceErrorSlot* slot, unsigned long long code, int step, int64_t position,
                                             int64_t value, int64_t bound) {
  if (atomicCAS(&slot->code, 0ull, code) == 0ull) {
    slot->step = step;
    slot->position = position;
    slot->value = value;
    slot->bound = bound;
  }
}

/// Reads an i32 or i64 index array element as int64.
__device__ __forceinline__ int64_t load_index(const void* p, bool is64, int64_t i) {
  return is64 ? static_cast<const int64_t*>(p)[i] : static_cast<const int32_t*>(p)[i];
}

}  // namespace pf::cuda
