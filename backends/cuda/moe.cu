// Mixture of experts on the GPU (f32 and bf16): the route, the gates and their gradient, the dispatch and the
// combine, each expert's load, the experts' products, and swiglu (which skips the slots not in use). The route is
// filled an expert per thread in the CPU's order (first choices before second ones, each in token order; or the
// likeliest under drop="probs"), so both backends route alike. The kernels trust a route to be one moe_route
// made: a token index out of range reads as an empty slot, and a token in an expert outside its top_k weighs 0
// (the CPU's kernels stop on both).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"
#include "ir/diagnostic.h"
#include "ir/op_table.h"

namespace pf::cuda {

namespace {

// A token's top_k experts are kept in registers: at most this many.
constexpr int64_t kMaxTopK = 32;

struct Routing {
  int64_t tokens, experts, top_k;
  int64_t first, held, capacity;  // the route's rows: experts first..first+held-1, `capacity` slots each
  bool renormalize;               // the gates' softmax over the top_k logits (else over every expert's)
};

Routing routing(const OpAttrs& attrs, const TensorType& logits, const TensorType& route) {
  const int64_t top_k = attrs.get_int("top_k", 1);
  if (top_k > kMaxTopK)
    throw Error("moe: the cuda kernels keep up to " + std::to_string(kMaxTopK) + " experts per token, got top_k " +
                std::to_string(top_k));
  return {logits.shape[0], logits.shape[1], top_k,          attrs.get_int("first_expert", 0),
          route.shape[0],  route.shape[1],  moe_renormalize(attrs)};
}

// Token n's top_k experts, best first: the larger logit, the lower index
// among equal ones (as the CPU picks them).
template <class T>
__device__ void top_experts(const T* logits, int64_t experts, int64_t top_k, int32_t* chosen) {
  for (int64_t k = 0; k < top_k; ++k) {
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e) {
      bool taken = false;
      for (int64_t j = 0; j < k; ++j) taken = taken || chosen[j] == e;
      if (!taken && (best < 0 || to_float(logits[e]) > to_float(logits[best]))) best = e;
    }
    chosen[k] = static_cast<int32_t>(best);
  }
}

template <class T>
__global__ void choose_kernel(const T* logits, Routing r, int32_t* chosen) {
  PF_GRID_STRIDE(n, r.tokens) top_experts(logits + n * r.experts, r.experts, r.top_k, chosen + n * r.top_k);
}

// A token's gate softmax over the experts taking part (its top_k, or every
// expert), in double as the CPU's.
template <class T>
struct GateSoftmax {
  const T* logits;  // the token's row
  Routing r;
  int32_t chosen[kMaxTopK];
  double top = -INFINITY, sum = 0;

  __device__ GateSoftmax(const T* row, const Routing& routing) : logits(row), r(routing) {
    if (r.renormalize) top_experts(logits, r.experts, r.top_k, chosen);
    for (int64_t k = 0; k < count(); ++k) top = fmax(top, logit(expert(k)));
    for (int64_t k = 0; k < count(); ++k) sum += exp(logit(expert(k)) - top);
  }
  __device__ int64_t count() const { return r.renormalize ? r.top_k : r.experts; }
  __device__ int64_t expert(int64_t k) const { return r.renormalize ? static_cast<int64_t>(chosen[k]) : k; }
  __device__ double logit(int64_t e) const { return static_cast<double>(to_float(logits[e])); }

  // Expert e's weight; 0 for an expert outside the softmax.
  __device__ double weight(int64_t e) const {
    for (int64_t k = 0; k < count(); ++k)
      if (expert(k) == e) return exp(logit(e) - top) / sum;
    return 0;
  }
};

// An expert per thread: its slots take the tokens choosing it, first
// choices before second ones, each in token order, until they are full.
__global__ void fill_by_position_kernel(const int32_t* chosen, Routing r, int32_t* route) {
  PF_GRID_STRIDE(i, r.held) {
    const int64_t e = r.first + i;
    int32_t* slots = route + i * r.capacity;
    int64_t filled = 0;
    for (int64_t k = 0; k < r.top_k; ++k)
      for (int64_t n = 0; n < r.tokens && filled < r.capacity; ++n)
        if (chosen[n * r.top_k + k] == e) slots[filled++] = static_cast<int32_t>(n);
    for (; filled < r.capacity; ++filled) slots[filled] = -1;
  }
}

// Token n's router probability for expert e: the softmax of its logits.
template <class T>
__device__ double router_probability(const T* logits, int64_t experts, int64_t e) {
  double top = -INFINITY, sum = 0;
  for (int64_t j = 0; j < experts; ++j) top = fmax(top, static_cast<double>(to_float(logits[j])));
  for (int64_t j = 0; j < experts; ++j) sum += exp(static_cast<double>(to_float(logits[j])) - top);
  return exp(static_cast<double>(to_float(logits[e])) - top) / sum;
}

__device__ bool chooses(const int32_t* chosen, const Routing& r, int64_t n, int64_t e) {
  for (int64_t k = 0; k < r.top_k; ++k)
    if (chosen[n * r.top_k + k] == e) return true;
  return false;
}

// drop="probs", an expert per thread: of the tokens choosing it, those
// fewer than `capacity` others outrank (a higher probability, or an equal
// one and an earlier token), in token order.
template <class T>
__global__ void fill_by_probability_kernel(const T* logits, const int32_t* chosen, Routing r, int32_t* route) {
  PF_GRID_STRIDE(i, r.held) {
    const int64_t e = r.first + i;
    int32_t* slots = route + i * r.capacity;
    int64_t filled = 0;
    for (int64_t n = 0; n < r.tokens && filled < r.capacity; ++n) {
      if (!chooses(chosen, r, n, e)) continue;
      const double p = router_probability(logits + n * r.experts, r.experts, e);
      int64_t above = 0;
      for (int64_t m = 0; m < r.tokens && above < r.capacity; ++m) {
        if (m == n || !chooses(chosen, r, m, e)) continue;
        const double q = router_probability(logits + m * r.experts, r.experts, e);
        above += q > p || (q == p && m < n);
      }
      if (above < r.capacity) slots[filled++] = static_cast<int32_t>(n);
    }
    for (; filled < r.capacity; ++filled) slots[filled] = -1;
  }
}

template <class T>
void moe_route(const KernelArgs& args, const LaunchContext& ctx) {
  const Routing r = routing(args.attrs, args.in_types[0], args.out_types[0]);
  const auto* logits = static_cast<const T*>(args.in[0]);
  auto* route = static_cast<int32_t*>(args.out[0]);
  if (r.held * r.capacity == 0) return;
  auto* chosen = static_cast<int32_t*>(ctx.scratch(static_cast<size_t>(std::max<int64_t>(1, r.tokens * r.top_k)) *
                                                   sizeof(int32_t)));
  if (r.tokens > 0) {
    choose_kernel<T><<<blocks_for(r.tokens), kThreads, 0, ctx.stream>>>(logits, r, chosen);
    PF_CUDA_CHECK_LAUNCH();
  }
  if (moe_drops_by_probability(args.attrs))
    fill_by_probability_kernel<T><<<blocks_for(r.held), kThreads, 0, ctx.stream>>>(logits, chosen, r, route);
  else
    fill_by_position_kernel<<<blocks_for(r.held), kThreads, 0, ctx.stream>>>(chosen, r, route);
  PF_CUDA_CHECK_LAUNCH();
}

// The token in slot s, or -1 for an empty slot (or one naming no token).
__device__ int64_t token_in(const int32_t* route, int64_t s, int64_t tokens) {
  const int64_t n = route[s];
  return n >= 0 && n < tokens ? n : -1;
}

template <class T>
__global__ void moe_gates_kernel(const T* logits, const int32_t* route, Routing r, T* gates) {
  PF_GRID_STRIDE(s, r.held * r.capacity) {
    const int64_t n = token_in(route, s, r.tokens);
    const double w = n < 0 ? 0.0 : GateSoftmax<T>(logits + n * r.experts, r).weight(r.first + s / r.capacity);
    gates[s] = from_float<T>(static_cast<float>(w));
  }
}

template <class T>
void moe_gates(const KernelArgs& args, const LaunchContext& ctx) {
  const Routing r = routing(args.attrs, args.in_types[0], args.in_types[1]);
  if (r.held * r.capacity == 0) return;
  moe_gates_kernel<T><<<blocks_for(r.held * r.capacity), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const int32_t*>(args.in[1]), r, static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// slot_of[n * experts + e]: the slot of expert e (first + the route's row)
// holding token n, or -1 (the buffer set to -1 first).
__global__ void slots_by_token_kernel(const int32_t* route, int64_t tokens, int64_t first, int64_t experts,
                                      int64_t held, int64_t capacity, int32_t* slot_of) {
  PF_GRID_STRIDE(s, held * capacity) {
    const int64_t n = token_in(route, s, tokens);
    if (n >= 0) slot_of[n * experts + first + s / capacity] = static_cast<int32_t>(s);
  }
}

int32_t* slots_by_token(const int32_t* route, int64_t tokens, int64_t first, int64_t experts, int64_t held,
                        int64_t capacity, void* buffer, const LaunchContext& ctx) {
  auto* slot_of = static_cast<int32_t*>(buffer);
  const size_t bytes = static_cast<size_t>(tokens * experts) * sizeof(int32_t);
  if (bytes > 0) PF_CUDA_CHECK(cudaMemsetAsync(slot_of, 0xFF, bytes, ctx.stream));
  if (held * capacity > 0) {
    slots_by_token_kernel<<<blocks_for(held * capacity), kThreads, 0, ctx.stream>>>(route, tokens, first, experts,
                                                                                    held, capacity, slot_of);
    PF_CUDA_CHECK_LAUNCH();
  }
  return slot_of;
}

// A token per thread: dl_j = w_j (G_j - sum_i w_i G_i) over the experts
// taking part, G_j the gradient of its gate in expert j's slot (0 where the
// choice was dropped or another rank holds the expert).
template <class T>
__global__ void moe_gates_grad_kernel(const T* g, const T* logits, const int32_t* slot_of, Routing r, T* dlogits) {
  PF_GRID_STRIDE(n, r.tokens) {
    const GateSoftmax<T> softmax(logits + n * r.experts, r);
    const int32_t* slots = slot_of + n * r.experts;
    double mean = 0;
    for (int64_t e = 0; e < r.experts; ++e)
      if (slots[e] >= 0) mean += softmax.weight(e) * static_cast<double>(to_float(g[slots[e]]));
    for (int64_t e = 0; e < r.experts; ++e) {
      const double ge = slots[e] < 0 ? 0.0 : static_cast<double>(to_float(g[slots[e]]));
      dlogits[n * r.experts + e] = from_float<T>(static_cast<float>(softmax.weight(e) * (ge - mean)));
    }
  }
}

template <class T>
void moe_gates_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const Routing r = routing(args.attrs, args.in_types[1], args.in_types[2]);
  if (r.tokens * r.experts == 0) return;
  const auto* route = static_cast<const int32_t*>(args.in[2]);
  const int32_t* slot_of =
      slots_by_token(route, r.tokens, r.first, r.experts, r.held, r.capacity,
                     ctx.scratch(static_cast<size_t>(r.tokens * r.experts) * sizeof(int32_t)), ctx);
  moe_gates_grad_kernel<T><<<blocks_for(r.tokens), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), slot_of, r,
      static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// x [N, C] -> [E, capacity, C]: each slot its token's row, zeros in an empty slot.
template <class T>
__global__ void moe_dispatch_kernel(const T* x, const int32_t* route, int64_t tokens, int64_t features,
                                    int64_t slots, T* out) {
  PF_GRID_STRIDE(i, slots * features) {
    const int64_t s = i / features, c = i - s * features;
    const int64_t n = token_in(route, s, tokens);
    out[i] = n < 0 ? from_float<T>(0.f) : x[n * features + c];
  }
}

template <class T>
void moe_dispatch(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t tokens = args.in_types[0].shape[0], features = args.in_types[0].shape[1];
  const int64_t slots = args.in_types[1].numel();
  if (slots * features == 0) return;
  moe_dispatch_kernel<T><<<blocks_for(slots * features), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const int32_t*>(args.in[1]), tokens, features, slots,
      static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// [tokens, C]: each token's rows of its slots, weighed by their gates,
// summed in expert order (as the CPU's); zeros for a token in no slot.
template <class T>
__global__ void moe_combine_kernel(const T* y, const T* gates, const int32_t* slot_of, int64_t tokens,
                                   int64_t features, int64_t experts, T* out) {
  PF_GRID_STRIDE(i, tokens * features) {
    const int64_t n = i / features, c = i - n * features;
    float sum = 0.f;
    for (int64_t e = 0; e < experts; ++e) {
      const int64_t s = slot_of[n * experts + e];
      if (s >= 0) sum += (gates ? to_float(gates[s]) : 1.f) * to_float(y[s * features + c]);
    }
    out[i] = from_float<T>(sum);
  }
}

template <class T>
void moe_combine(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t tokens = args.out_types[0].shape[0], features = args.out_types[0].shape[1];
  const int64_t experts = args.in_types[1].shape[0], capacity = args.in_types[1].shape[1];
  if (tokens * features == 0) return;
  const int32_t* slot_of =
      slots_by_token(static_cast<const int32_t*>(args.in[1]), tokens, 0, experts, experts, capacity,
                     ctx.scratch(static_cast<size_t>(std::max<int64_t>(1, tokens * experts)) * sizeof(int32_t)), ctx);
  moe_combine_kernel<T><<<blocks_for(tokens * features), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), args.in.size() > 2 ? static_cast<const T*>(args.in[2]) : nullptr, slot_of,
      tokens, features, experts, static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
__global__ void count_choices_kernel(const T* logits, Routing r, int32_t* count) {
  PF_GRID_STRIDE(n, r.tokens) {
    int32_t chosen[kMaxTopK];
    top_experts(logits + n * r.experts, r.experts, r.top_k, chosen);
    for (int64_t k = 0; k < r.top_k; ++k) atomicAdd(count + chosen[k], 1);
  }
}

template <class T>
__global__ void share_kernel(const int32_t* count, int64_t tokens, int64_t experts, T* load) {
  PF_GRID_STRIDE(e, experts) {
    load[e] = from_float<T>(tokens == 0 ? 0.f : static_cast<float>(static_cast<double>(count[e]) / tokens));
  }
}

// [E]: the share of the tokens whose top_k holds each expert (integer
// counts: the same on every run).
template <class T>
void moe_load(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& logits = args.in_types[0];
  const Routing r = routing(args.attrs, logits, TensorType{DType::i32, {logits.shape[1], 0}});
  if (r.experts == 0) return;
  auto* count = static_cast<int32_t*>(ctx.scratch(static_cast<size_t>(r.experts) * sizeof(int32_t)));
  PF_CUDA_CHECK(cudaMemsetAsync(count, 0, static_cast<size_t>(r.experts) * sizeof(int32_t), ctx.stream));
  if (r.tokens > 0) {
    count_choices_kernel<T><<<blocks_for(r.tokens), kThreads, 0, ctx.stream>>>(static_cast<const T*>(args.in[0]), r,
                                                                              count);
    PF_CUDA_CHECK_LAUNCH();
  }
  share_kernel<T><<<blocks_for(r.experts), kThreads, 0, ctx.stream>>>(count, r.tokens, r.experts,
                                                                       static_cast<T*>(args.out[0]));
  PF_CUDA_CHECK_LAUNCH();
}

// An expert's slots in use: up to its last slot holding a token.
__global__ void slots_in_use_kernel(const int32_t* route, int64_t experts, int64_t capacity, int32_t* used) {
  PF_GRID_STRIDE(e, experts) {
    int64_t n = capacity;
    while (n > 0 && route[e * capacity + n - 1] < 0) --n;
    used[e] = static_cast<int32_t>(n);
  }
}

// Rows [E, rows, cols] past each expert's slots in use set to 0, read from
// `in` (nullptr: in place).
template <class T>
__global__ void mask_rows_kernel(const T* in, const int32_t* used, int64_t experts, int64_t rows, int64_t cols,
                                 T* out) {
  PF_GRID_STRIDE(i, experts * rows * cols) {
    const int64_t e = i / (rows * cols), s = (i / cols) % rows;
    if (s >= used[e])
      out[i] = from_float<T>(0.f);
    else if (in)
      out[i] = in[i];
  }
}

// Each expert's product over its slots in use: one strided-batched cuBLAS
// product over every slot (the slots past the last in use hold zeros where
// a dispatch filled them), then the rows past it zeroed; under transpose_a
// (a sum over the slots) the operand's rows past it are zeroed first.
template <class T>
void moe_matmul(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType &a = args.in_types[0], &out = args.out_types[0];
  const int64_t experts = a.shape[0], capacity = a.shape[1];
  const bool transpose_a = args.attrs.get_bool("transpose_a", false);
  if (out.numel() == 0) return;
  const size_t used_bytes = (static_cast<size_t>(experts) * sizeof(int32_t) + 255) / 256 * 256;
  char* scratch = static_cast<char*>(ctx.scratch(used_bytes + (transpose_a ? static_cast<size_t>(a.bytes()) : 0)));
  auto* used = reinterpret_cast<int32_t*>(scratch);
  slots_in_use_kernel<<<blocks_for(experts), kThreads, 0, ctx.stream>>>(static_cast<const int32_t*>(args.in[2]),
                                                                        experts, capacity, used);
  PF_CUDA_CHECK_LAUNCH();
  const void* operands[2] = {args.in[0], args.in[1]};
  if (transpose_a && a.numel() > 0) {
    auto* masked = reinterpret_cast<T*>(scratch + used_bytes);
    mask_rows_kernel<T><<<blocks_for(a.numel()), kThreads, 0, ctx.stream>>>(
        static_cast<const T*>(args.in[0]), used, experts, capacity, a.shape[2], masked);
    PF_CUDA_CHECK_LAUNCH();
    operands[0] = masked;
  }
  const KernelArgs product{args.in_types.subspan(0, 2), operands, args.out_types, args.out, args.attrs};
  forward_kernel(OpKind::matmul, out.dtype)(product, ctx);
  if (!transpose_a) {
    mask_rows_kernel<T><<<blocks_for(out.numel()), kThreads, 0, ctx.stream>>>(
        nullptr, used, experts, capacity, out.shape[2], static_cast<T*>(args.out[0]));
    PF_CUDA_CHECK_LAUNCH();
  }
}

// silu(gate) * up, and its gradients: d gate = silu'(gate) (g up), d up =
// g silu(gate), as the CPU computes them. Beside the experts' products
// because over an expert's slots (a route given) they share its slots in
// use: the other slots' results are zero and their operands are not read.
// `used` null: every element.
struct SlotsInUse {
  const int32_t* used = nullptr;
  int64_t capacity = 1, row = 1;  // slots per expert, elements per slot
  __device__ bool skips(int64_t i) const { return used && (i / row) % capacity >= used[i / (row * capacity)]; }
};

__device__ __forceinline__ float silu(float x) { return x / (1.f + expf(-x)); }

template <class T>
__global__ void swiglu_kernel(const T* gate, const T* up, T* y, int64_t n, SlotsInUse slots) {
  PF_GRID_STRIDE(i, n) {
    y[i] = from_float<T>(slots.skips(i) ? 0.f : silu(to_float(gate[i])) * to_float(up[i]));
  }
}

template <class T>
__global__ void swiglu_grad_kernel(const T* g, const T* gate, const T* up, T* d_gate, T* d_up, int64_t n,
                                   SlotsInUse slots) {
  PF_GRID_STRIDE(i, n) {
    if (slots.skips(i)) {
      d_gate[i] = d_up[i] = from_float<T>(0.f);
      continue;
    }
    const float gi = to_float(g[i]), x = to_float(gate[i]);
    const float s = 1.f / (1.f + expf(-x)), slope = s * (1.f - s);
    d_gate[i] = from_float<T>(gi * to_float(up[i]) * (slope == 0.f ? s : s + x * slope));
    d_up[i] = from_float<T>(gi * silu(x));
  }
}

// The slots in use of the route operand `route_operand`, when the op has one.
SlotsInUse slots_of(const KernelArgs& args, size_t route_operand, const LaunchContext& ctx) {
  SlotsInUse slots;
  if (args.in.size() <= route_operand) return slots;
  const Shape& shape = args.out_types[0].shape;
  const int64_t experts = shape[0];
  slots.capacity = shape[1];
  slots.row = args.out_types[0].numel() / (experts * slots.capacity);
  auto* used = static_cast<int32_t*>(ctx.scratch(static_cast<size_t>(experts) * sizeof(int32_t)));
  slots_in_use_kernel<<<blocks_for(experts), kThreads, 0, ctx.stream>>>(
      static_cast<const int32_t*>(args.in[route_operand]), experts, slots.capacity, used);
  PF_CUDA_CHECK_LAUNCH();
  slots.used = used;
  return slots;
}

template <class T>
void swiglu(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  const SlotsInUse slots = slots_of(args, 2, ctx);
  swiglu_kernel<T><<<blocks_for(n), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<T*>(args.out[0]), n, slots);
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
void swiglu_grad(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  const SlotsInUse slots = slots_of(args, 3, ctx);
  swiglu_grad_kernel<T><<<blocks_for(n), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<const T*>(args.in[2]),
      static_cast<T*>(args.out[0]), static_cast<T*>(args.out[1]), n, slots);
  PF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void add_moe_kernels(KernelTable& t) {
  t.set_float(OpKind::moe_route, moe_route<float>, moe_route<bf16>);
  t.set_float(OpKind::moe_gates, moe_gates<float>, moe_gates<bf16>);
  t.set_float(OpKind::moe_gates_grad, moe_gates_grad<float>, moe_gates_grad<bf16>);
  t.set_float(OpKind::moe_dispatch, moe_dispatch<float>, moe_dispatch<bf16>);
  t.set_float(OpKind::moe_combine, moe_combine<float>, moe_combine<bf16>);
  t.set_float(OpKind::moe_load, moe_load<float>, moe_load<bf16>);
  t.set_float(OpKind::moe_matmul, moe_matmul<float>, moe_matmul<bf16>);
  t.set_float(OpKind::swiglu, swiglu<float>, swiglu<bf16>);
  t.set_float(OpKind::swiglu_grad, swiglu_grad<float>, swiglu_grad<bf16>);
}

}  // namespace pf::cuda
