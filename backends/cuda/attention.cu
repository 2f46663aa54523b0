// attention and attention_grad in the flash-attention manner: keys and values in shared-memory tiles, scores in
// registers with an online softmax, and a backward that recomputes the scores from lse. f32 and bf16 (f32 sums).
#include <string>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

// A warp per query row (forward, dq) or per group of keys (dk, dv); a lane
// holds the head dimensions lane, lane + 32, ... of the rows it sums into.
constexpr int kWarp = 32;
constexpr int kWarps = 8;                 // warps per block
constexpr int kMaxHead = 128;             // largest head size D
constexpr int kPerLane = kMaxHead / kWarp;
constexpr int kTile = kWarp;              // keys per shared-memory tile: one per lane
constexpr int kStride = kMaxHead + 1;     // padded row: lane c reads row c without bank conflicts
constexpr int kKeysPerWarp = kTile / kWarps;

// Head n's rows start at base(n) and lie `stride` apart: [..., H, T, D]
// (layout "bhtd": inner = 1, stride = D) or [..., T, H, D] ("bthd": inner =
// H, stride = H * D), as AttentionHeads (ir/op_table.h) has it; lse and
// delta are [N, T] in both.
struct Geometry {
  int64_t heads;  // N: the product of every axis but T and D
  int t, d;
  int64_t inner;   // heads between two rows of one head
  int64_t stride;  // elements from one row of a head to its next
  float scale;
  bool causal;
  __host__ __device__ int64_t base(int64_t n) const { return n / inner * t * stride + n % inner * d; }
};

Geometry geometry_of(const KernelArgs& args, const TensorType& q) {
  const AttentionHeads h = attention_heads(args.attrs, q);
  const int64_t t = h.t, d = h.d;
  if (d > kMaxHead)
    throw Error("attention: the cuda kernels take head sizes up to " + std::to_string(kMaxHead) + ", got " + std::to_string(d) +
                " in " + q.str());
  if (t > (int64_t{1} << 30)) throw Error("attention: sequence length " + std::to_string(t) + " is too long for cuda");
  return {h.n,
          static_cast<int>(t),
          static_cast<int>(d),
          h.inner,
          h.row_stride(),
          static_cast<float>(attention_scale(args.attrs, q)),
          args.attrs.get_bool("causal", false)};
}

// Rows [first, first + kRows) of one head's [T, D] (rows g.stride apart) into shared rows of kRowStride floats, zero past T: key and
// value tiles (kTile rows of kStride) and kWarps rows of queries or of the output's gradient (kMaxHead). The
// whole block loads, so a __syncthreads() comes before anything reads them.
template <int kRows, int kRowStride, class T>
__device__ void load_rows(const T* src, int first, const Geometry& g, float* rows) {
  for (int i = threadIdx.x; i < kRows * g.d; i += blockDim.x) {
    const int r = i / g.d, x = i - r * g.d;
    rows[r * kRowStride + x] = first + r < g.t ? to_float(src[int64_t{first + r} * g.stride + x]) : 0.f;
  }
}

// One block: kWarps query rows of one head (blockIdx.y); warp w owns row blockIdx.x * kWarps + w.
template <class T>
__global__ void __launch_bounds__(kWarps * kWarp) forward_kernel(const T* q, const T* k, const T* v, T* o, float* lse,
                                                                 Geometry g) {
  __shared__ float ks[kTile * kStride], vs[kTile * kStride], qs[kWarps * kMaxHead];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t base = g.base(blockIdx.y);
  const int row0 = blockIdx.x * kWarps, row = row0 + warp;
  const bool active = row < g.t;
  load_rows<kWarps, kMaxHead>(q + base, row0, g, qs);
  float acc[kPerLane] = {};
  float m = -INFINITY, l = 0.f;
  const int end = g.causal ? min(g.t, row0 + kWarps) : g.t;  // the block's last row sees keys below this
  for (int j0 = 0; j0 < end; j0 += kTile) {
    __syncthreads();  // the query rows are loaded; the previous tile is read by every warp
    load_rows<kTile, kStride>(k + base, j0, g, ks);
    load_rows<kTile, kStride>(v + base, j0, g, vs);
    __syncthreads();
    const int j = j0 + lane;
    const bool visible = active && j < g.t && (!g.causal || j <= row);
    float s = -INFINITY;
    if (visible) {
      float dot = 0.f;
      for (int x = 0; x < g.d; ++x) dot += qs[warp * kMaxHead + x] * ks[lane * kStride + x];
      s = dot * g.scale;
    }
    const float m_new = fmaxf(m, warp_max(s));
    if (m_new == -INFINITY) continue;  // nothing visible yet
    const float alpha = expf(m - m_new);
    const float p = visible ? expf(s - m_new) : 0.f;
    l = l * alpha + warp_sum(p);
    m = m_new;
#pragma unroll
    for (int u = 0; u < kPerLane; ++u) acc[u] *= alpha;
    for (int c = 0; c < kTile; ++c) {
      const float pc = __shfl_sync(0xffffffffu, p, c);
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) {
        const int x = lane + u * kWarp;
        if (x < g.d) acc[u] += pc * vs[c * kStride + x];
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int x = lane + u * kWarp;
    if (x < g.d) o[base + row * g.stride + x] = from_float<T>(acc[u] / l);
  }
  if (lane == 0) lse[blockIdx.y * int64_t{g.t} + row] = m + logf(l);
}

// delta[n, i] = sum_x g[n, i, x] o[n, i, x]: a warp per row.
template <class T>
__global__ void delta_kernel(const T* grad, const T* o, float* delta, Geometry g) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = g.heads * g.t;
  for (int64_t r = (blockIdx.x * int64_t{blockDim.x} + threadIdx.x) / kWarp; r < rows;
       r += int64_t{gridDim.x} * blockDim.x / kWarp) {
    const int64_t at = g.base(r / g.t) + r % g.t * g.stride;
    float s = 0.f;
    for (int x = lane; x < g.d; x += kWarp) s += to_float(grad[at + x]) * to_float(o[at + x]);
    s = warp_sum(s);
    if (lane == 0) delta[r] = s;
  }
}

// dq: as the forward, a warp per query row; with p = exp(s - lse) known, no
// running maximum: dq_i = scale * sum_j p_ij (dp_ij - delta_i) k_j.
template <class T>
__global__ void __launch_bounds__(kWarps * kWarp) dq_kernel(const T* grad, const T* q, const T* k, const T* v,
                                                            const float* lse, const float* delta, T* dq, Geometry g) {
  __shared__ float ks[kTile * kStride], vs[kTile * kStride], qs[kWarps * kMaxHead], gs[kWarps * kMaxHead];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t base = g.base(blockIdx.y);
  const int row0 = blockIdx.x * kWarps, row = row0 + warp;
  const bool active = row < g.t;
  load_rows<kWarps, kMaxHead>(q + base, row0, g, qs);
  load_rows<kWarps, kMaxHead>(grad + base, row0, g, gs);
  const int64_t stat = blockIdx.y * int64_t{g.t} + row;
  const float row_lse = active ? lse[stat] : 0.f, row_delta = active ? delta[stat] : 0.f;
  float acc[kPerLane] = {};
  const int end = g.causal ? min(g.t, row0 + kWarps) : g.t;
  for (int j0 = 0; j0 < end; j0 += kTile) {
    __syncthreads();
    load_rows<kTile, kStride>(k + base, j0, g, ks);
    load_rows<kTile, kStride>(v + base, j0, g, vs);
    __syncthreads();
    const int j = j0 + lane;
    float ds = 0.f;
    if (active && j < g.t && (!g.causal || j <= row)) {
      float s = 0.f, dp = 0.f;
      for (int x = 0; x < g.d; ++x) {
        s += qs[warp * kMaxHead + x] * ks[lane * kStride + x];
        dp += gs[warp * kMaxHead + x] * vs[lane * kStride + x];
      }
      const float p = expf(s * g.scale - row_lse);
      ds = p * (dp - row_delta) * g.scale;
    }
    for (int c = 0; c < kTile; ++c) {
      const float dsc = __shfl_sync(0xffffffffu, ds, c);
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) {
        const int x = lane + u * kWarp;
        if (x < g.d) acc[u] += dsc * ks[c * kStride + x];
      }
    }
  }
  if (!active) return;
#pragma unroll
  for (int u = 0; u < kPerLane; ++u) {
    const int x = lane + u * kWarp;
    if (x < g.d) dq[base + row * g.stride + x] = from_float<T>(acc[u]);
  }
}

// dk, dv: one block per tile of kTile keys of one head; warp w owns keys
// j0 + w * kKeysPerWarp ..., their k, v, dk and dv rows spread over its
// lanes. Query rows come through shared memory kWarps at a time:
//   dv_j = sum_i p_ij g_i,  dk_j = scale * sum_i p_ij (dp_ij - delta_i) q_i.
template <class T>
__global__ void __launch_bounds__(kWarps * kWarp) dkv_kernel(const T* grad, const T* q, const T* k, const T* v,
                                                             const float* lse, const float* delta, T* dk, T* dv,
                                                             Geometry g) {
  __shared__ float qs[kWarps * kMaxHead], gs[kWarps * kMaxHead], stats[2 * kWarps];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t base = g.base(blockIdx.y);
  const int j0 = blockIdx.x * kTile, first_key = j0 + warp * kKeysPerWarp;
  float kr[kKeysPerWarp][kPerLane], vr[kKeysPerWarp][kPerLane], dkr[kKeysPerWarp][kPerLane] = {},
                                                                 dvr[kKeysPerWarp][kPerLane] = {};
#pragma unroll
  for (int e = 0; e < kKeysPerWarp; ++e)
#pragma unroll
    for (int u = 0; u < kPerLane; ++u) {
      const int j = first_key + e, x = lane + u * kWarp;
      const bool in = j < g.t && x < g.d;
      kr[e][u] = in ? to_float(k[base + j * g.stride + x]) : 0.f;
      vr[e][u] = in ? to_float(v[base + j * g.stride + x]) : 0.f;
    }
  const int start = g.causal ? j0 / kWarps * kWarps : 0;  // rows before the tile's first key see none of it
  for (int i0 = start; i0 < g.t; i0 += kWarps) {
    __syncthreads();
    load_rows<kWarps, kMaxHead>(q + base, i0, g, qs);
    load_rows<kWarps, kMaxHead>(grad + base, i0, g, gs);
    if (threadIdx.x < kWarps && i0 + static_cast<int>(threadIdx.x) < g.t) {
      const int64_t stat = blockIdx.y * int64_t{g.t} + i0 + threadIdx.x;
      stats[threadIdx.x] = lse[stat];
      stats[kWarps + threadIdx.x] = delta[stat];
    }
    __syncthreads();
    for (int r = 0; r < kWarps && i0 + r < g.t; ++r) {
      const int i = i0 + r;
      float qx[kPerLane], gx[kPerLane];
#pragma unroll
      for (int u = 0; u < kPerLane; ++u) {
        const int x = lane + u * kWarp;
        qx[u] = x < g.d ? qs[r * kMaxHead + x] : 0.f;
        gx[u] = x < g.d ? gs[r * kMaxHead + x] : 0.f;
      }
#pragma unroll
      for (int e = 0; e < kKeysPerWarp; ++e) {
        const int j = first_key + e;
        if (j >= g.t || (g.causal && j > i)) continue;  // uniform over the warp
        float s = 0.f, dp = 0.f;
#pragma unroll
        for (int u = 0; u < kPerLane; ++u) {
          s += qx[u] * kr[e][u];
          dp += gx[u] * vr[e][u];
        }
        s = warp_sum(s);
        dp = warp_sum(dp);
        const float p = expf(s * g.scale - stats[r]);
        const float ds = p * (dp - stats[kWarps + r]) * g.scale;
#pragma unroll
        for (int u = 0; u < kPerLane; ++u) {
          dvr[e][u] += p * gx[u];
          dkr[e][u] += ds * qx[u];
        }
      }
    }
  }
#pragma unroll
  for (int e = 0; e < kKeysPerWarp; ++e)
#pragma unroll
    for (int u = 0; u < kPerLane; ++u) {
      const int j = first_key + e, x = lane + u * kWarp;
      if (j < g.t && x < g.d) {
        dk[base + j * g.stride + x] = from_float<T>(dkr[e][u]);
        dv[base + j * g.stride + x] = from_float<T>(dvr[e][u]);
      }
    }
}

// Every query head reads its own keys here: grouped-query attention (k and v
// shared by several heads of q) runs on CPU stages only.
void refuse_shared_keys(const TensorType& q, const TensorType& k) {
  if (k != q)
    throw Error("attention: k " + k.str() + " shared by the heads of q " + q.str() +
                " (grouped-query attention) has no cuda kernel yet; place the stage on a cpu device");
}

unsigned row_blocks(int t, int per_block) { return static_cast<unsigned>((t + per_block - 1) / per_block); }

void check_grid(const Geometry& g) {
  if (g.heads > 65535) throw Error("attention: " + std::to_string(g.heads) + " heads exceed the cuda grid (65535)");
}

// operands q, k, v [..., H, T, D] or [..., T, H, D] (layout); results o of their type, lse [..., H, T] in f32.
template <class T>
void attention(const KernelArgs& args, const LaunchContext& ctx) {
  refuse_shared_keys(args.in_types[0], args.in_types[1]);
  const Geometry g = geometry_of(args, args.in_types[0]);
  if (g.heads == 0 || g.t == 0) return;
  check_grid(g);
  const dim3 grid(row_blocks(g.t, kWarps), static_cast<unsigned>(g.heads));
  forward_kernel<T><<<grid, kWarps * kWarp, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<const T*>(args.in[2]),
      static_cast<T*>(args.out[0]), static_cast<float*>(args.out[1]), g);
  PF_CUDA_CHECK_LAUNCH();
}

// operands g, q, k, v, o, lse; results dq, dk, dv.
template <class T>
void attention_grad(const KernelArgs& args, const LaunchContext& ctx) {
  refuse_shared_keys(args.in_types[1], args.in_types[2]);
  const Geometry g = geometry_of(args, args.in_types[1]);
  if (g.heads == 0 || g.t == 0) return;
  check_grid(g);
  const T* in[5];
  for (int i = 0; i < 5; ++i) in[i] = static_cast<const T*>(args.in[i]);
  const auto* lse = static_cast<const float*>(args.in[5]);  // f32 for either T
  const int64_t rows = g.heads * g.t;
  auto* delta = static_cast<float*>(ctx.scratch(static_cast<size_t>(rows) * sizeof(float)));  // (N, T)
  delta_kernel<T><<<blocks_for(rows * kWarp), kThreads, 0, ctx.stream>>>(in[0], in[4], delta, g);
  PF_CUDA_CHECK_LAUNCH();
  dq_kernel<T><<<dim3(row_blocks(g.t, kWarps), static_cast<unsigned>(g.heads)), kWarps * kWarp, 0, ctx.stream>>>(
      in[0], in[1], in[2], in[3], lse, delta, static_cast<T*>(args.out[0]), g);
  PF_CUDA_CHECK_LAUNCH();
  dkv_kernel<T><<<dim3(row_blocks(g.t, kTile), static_cast<unsigned>(g.heads)), kWarps * kWarp, 0, ctx.stream>>>(
      in[0], in[1], in[2], in[3], lse, delta, static_cast<T*>(args.out[1]), static_cast<T*>(args.out[2]), g);
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_attention_kernels(KernelTable& t) {
  t.set_float(OpKind::attention, attention<float>, attention<bf16>);
  t.set_float(OpKind::attention_grad, attention_grad<float>, attention_grad<bf16>);
}

}  // namespace pf::cuda
