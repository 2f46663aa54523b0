// Elementwise kernels: sources, binary ops with broadcasting, where, unary ops, rope, dropout, cast, activation gradients, transpose, broadcast_to.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "backends/cuda/common.cuh"
#include "backends/cuda/kernel_table.h"
#include "ir/diagnostic.h"

namespace pf::cuda {

namespace {

struct SiluGradOp {
  // s + x s (1 - s), s = sigmoid(x), as the CPU computes it.
  __device__ float operator()(float g, float x) const {
    const float s = 1.f / (1.f + expf(-x)), slope = s * (1.f - s);
    return g * (slope == 0.f ? s : s + x * slope);
  }
};

struct GeluErfGradOp {
  // Phi(x) + x phi(x), as the CPU computes it.
  __device__ float operator()(float g, float x) const {
    const float cdf = 0.5f * (1.f + erff(x * 0.7071067811865476f));
    const float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
    return g * (cdf + x * pdf);
  }
};

// ---------------------------------------------------------------------------
// Element-size kernels: fill, gather through a strided plan. Only bytes move,
// so one instantiation per element width serves every dtype.

template <class E>
__global__ void fill_kernel(E* out, int64_t n, E value) {
  PF_GRID_STRIDE(i, n) out[i] = value;
}

template <class E>
__global__ void gather_kernel(const E* in, E* out, int64_t n, StridedPlan plan) {
  PF_GRID_STRIDE(i, n) out[i] = in[offset_of(plan, i)];
}

void fill_bytes(void* out, int64_t n, DType t, const void* value, cudaStream_t stream) {
  if (n == 0) return;
  by_element_size(t, [&](auto e) {
    using E = decltype(e);
    E v;
    std::memcpy(&v, value, sizeof v);
    fill_kernel<E><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<E*>(out), n, v);
  });
  PF_CUDA_CHECK_LAUNCH();
}

void gather(const void* in, void* out, int64_t n, DType t, const StridedPlan& plan, cudaStream_t stream) {
  if (n == 0) return;
  by_element_size(t, [&](auto e) {
    using E = decltype(e);
    gather_kernel<E><<<blocks_for(n), kThreads, 0, stream>>>(static_cast<const E*>(in), static_cast<E*>(out), n, plan);
  });
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// Sources.

// Host conversions of a double to each stored dtype, as cast converts:
// integers saturate and NaN gives 0.
int64_t saturate(double v, double lo, double hi_exclusive, int64_t lo_i, int64_t hi_i) {
  if (std::isnan(v)) return 0;
  if (v >= hi_exclusive) return hi_i;
  if (v <= lo) return lo_i;
  return static_cast<int64_t>(v);
}

// The bytes of `v` as dtype `t` (at most 8).
void encode_value(double v, DType t, unsigned char* bytes) {
  switch (t) {
    case DType::f32: {
      const auto f = static_cast<float>(v);
      std::memcpy(bytes, &f, 4);
      return;
    }
    case DType::bf16: {
      const uint16_t b = bf16_bits(static_cast<float>(v));
      std::memcpy(bytes, &b, 2);
      return;
    }
    case DType::i32: {
      const auto i = static_cast<int32_t>(saturate(v, -2147483648.0, 2147483647.0, INT32_MIN, INT32_MAX));
      std::memcpy(bytes, &i, 4);
      return;
    }
    case DType::i64: {
      // 2^63 is exact in a double; every double below it converts exactly.
      const int64_t i = std::isnan(v) ? 0
                        : v >= 9223372036854775808.0 ? INT64_MAX
                        : v < -9223372036854775808.0 ? INT64_MIN
                                                      : static_cast<int64_t>(v);
      std::memcpy(bytes, &i, 8);
      return;
    }
    case DType::boolean:
      bytes[0] = v != 0;
      return;
    case DType::f16:
    case DType::f64:
      break;
  }
  throw Error("no cuda kernel for a value of " + std::string(dtype_name(t)));
}

void constant(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.out_types[0];
  unsigned char bytes[8] = {};
  encode_value(args.attrs.get_real("value", 0), t.dtype, bytes);
  fill_bytes(args.out[0], t.numel(), t.dtype, bytes, ctx.stream);
}

void dim_value(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.out_types[0];
  unsigned char bytes[8] = {};
  encode_value(static_cast<double>(args.attrs.get_int("value", 0)), t.dtype, bytes);
  fill_bytes(args.out[0], 1, t.dtype, bytes, ctx.stream);
}

// bool[..., N, N]: element (i, j) is true iff j <= i.
__global__ void causal_mask_kernel(uint8_t* out, int64_t total, int64_t n) {
  PF_GRID_STRIDE(f, total) {
    const int64_t k = f % (n * n);
    out[f] = (k % n) <= (k / n);
  }
}

void causal_mask(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.out_types[0];
  const int64_t total = t.numel();
  if (total == 0) return;
  causal_mask_kernel<<<blocks_for(total), kThreads, 0, ctx.stream>>>(static_cast<uint8_t*>(args.out[0]), total,
                                                                        t.shape.back());
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// Binary ops with broadcasting, and where.

struct AddOp {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct SubOp {
  __device__ float operator()(float a, float b) const { return a - b; }
};
struct MulOp {
  __device__ float operator()(float a, float b) const { return a * b; }
};
struct DivOp {
  __device__ float operator()(float a, float b) const { return a / b; }
};

template <class T, class F>
__global__ void binary_flat_kernel(const T* a, const T* b, T* c, int64_t n) {
  F f;
  PF_GRID_STRIDE(i, n) c[i] = from_float<T>(f(to_float(a[i]), to_float(b[i])));
}

template <class T, class F>
__global__ void binary_kernel(const T* a, const T* b, T* c, int64_t n, StridedPlan plan) {
  F f;
  PF_GRID_STRIDE(i, n) {
    int64_t off[2];
    offsets_of<2>(plan, i, off);
    c[i] = from_float<T>(f(to_float(a[off[0]]), to_float(b[off[1]])));
  }
}

template <class T, class F>
void binary(const KernelArgs& args, const LaunchContext& ctx) {
  const auto* a = static_cast<const T*>(args.in[0]);
  const auto* b = static_cast<const T*>(args.in[1]);
  auto* c = static_cast<T*>(args.out[0]);
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  const Shape* operands[] = {&args.in_types[0].shape, &args.in_types[1].shape};
  const StridedPlan plan = plan_broadcast(args.out_types[0].shape, operands);
  if (is_flat(plan, 2))
    binary_flat_kernel<T, F><<<blocks_for(n), kThreads, 0, ctx.stream>>>(a, b, c, n);
  else
    binary_kernel<T, F><<<blocks_for(n), kThreads, 0, ctx.stream>>>(a, b, c, n, plan);
  PF_CUDA_CHECK_LAUNCH();
}

template <class T>
__global__ void where_kernel(const uint8_t* cond, const T* a, const T* b, T* y, int64_t n, StridedPlan plan) {
  PF_GRID_STRIDE(i, n) {
    int64_t off[3];
    offsets_of<3>(plan, i, off);
    y[i] = cond[off[0]] ? a[off[1]] : b[off[2]];
  }
}

template <class T>
void where(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  const Shape* operands[] = {&args.in_types[0].shape, &args.in_types[1].shape, &args.in_types[2].shape};
  const StridedPlan plan = plan_broadcast(args.out_types[0].shape, operands);
  where_kernel<T><<<blocks_for(n), kThreads, 0, ctx.stream>>>(
      static_cast<const uint8_t*>(args.in[0]), static_cast<const T*>(args.in[1]), static_cast<const T*>(args.in[2]),
      static_cast<T*>(args.out[0]), n, plan);
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// Unary ops, in float whatever the stored type, with the CPU's formulas.

struct NegOp {
  __device__ float operator()(float x) const { return -x; }
};
struct ExpOp {
  __device__ float operator()(float x) const { return expf(x); }
};
struct LogOp {
  __device__ float operator()(float x) const { return logf(x); }
};
struct SqrtOp {
  __device__ float operator()(float x) const { return sqrtf(x); }
};
struct RsqrtOp {
  // 1 / sqrt rather than rsqrtf (2 ulp) so that results round as on the CPU.
  __device__ float operator()(float x) const { return 1.f / sqrtf(x); }
};
struct TanhOp {
  __device__ float operator()(float x) const { return tanhf(x); }
};
struct SigmoidOp {
  // exp(-x) overflows to inf for very negative x, giving exactly 0: no NaN.
  __device__ float operator()(float x) const { return 1.f / (1.f + expf(-x)); }
};
struct ReluOp {
  // A NaN passes through rather than turning into 0.
  __device__ float operator()(float x) const { return x < 0.f ? 0.f : x; }
};
struct GeluOp {
  // The tanh form as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3),
  // as the CPU computes it.
  __device__ float operator()(float x) const {
    const float k2 = 2.f * 0.7978845608028654f;
    return x / (1.f + expf(-k2 * (x + 0.044715f * x * x * x)));
  }
};
struct GeluErfOp {
  __device__ float operator()(float x) const { return 0.5f * x * (1.f + erff(x * 0.7071067811865476f)); }
};
struct SiluOp {
  __device__ float operator()(float x) const { return x / (1.f + expf(-x)); }
};
struct PowOp {
  float e;
  // The exponents models use most are exact products, as on the CPU.
  __device__ float operator()(float x) const {
    if (e == 1.f) return x;
    if (e == 2.f) return x * x;
    if (e == 3.f) return x * x * x;
    if (e == 0.5f) return sqrtf(x);
    if (e == -1.f) return 1.f / x;
    return powf(x, e);
  }
};

template <class T, class F>
__global__ void unary_kernel(const T* x, T* y, int64_t n, F f) {
  PF_GRID_STRIDE(i, n) y[i] = from_float<T>(f(to_float(x[i])));
}

template <class T, class F>
void unary_with(const KernelArgs& args, const LaunchContext& ctx, F f) {
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  unary_kernel<T, F><<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const T*>(args.in[0]),
                                                                   static_cast<T*>(args.out[0]), n, f);
  PF_CUDA_CHECK_LAUNCH();
}

template <class T, class F>
void unary(const KernelArgs& args, const LaunchContext& ctx) {
  unary_with<T>(args, ctx, F{});
}

template <class T>
void pow_kernel(const KernelArgs& args, const LaunchContext& ctx) {
  unary_with<T>(args, ctx, PowOp{static_cast<float>(args.attrs.get_real("exponent", 1))});
}

// ---------------------------------------------------------------------------
// rope: a thread per feature pair. Angles and their cosines and sines in
// double, rounded once, as the CPU computes them (rotary.cpp).

template <class T>
__global__ void rope_kernel(const T* x, T* y, int64_t pairs, RopeLayout l, const void* positions, bool i64,
                            int64_t outer_per_sequence, double theta, double sign) {
  const int64_t half = l.features / 2;
  PF_GRID_STRIDE(k, pairs) {
    // p: the index into the positions, [sequences, positions] flat.
    const int64_t r = k / half, i = k % half;
    const int64_t p = r / (l.positions * l.rows) / outer_per_sequence * l.positions + r / l.rows % l.positions;
    const double position = positions == nullptr ? static_cast<double>(p)
                            : i64 ? static_cast<double>(static_cast<const int64_t*>(positions)[p])
                                  : static_cast<double>(static_cast<const int32_t*>(positions)[p]);
    const double angle = position * pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(l.features));
    const float c = static_cast<float>(cos(angle)), s = static_cast<float>(sign * sin(angle));
    const T* xr = x + r * l.features;
    const float a = to_float(xr[i]), b = to_float(xr[half + i]);
    y[r * l.features + i] = from_float<T>(a * c - b * s);
    y[r * l.features + half + i] = from_float<T>(b * c + a * s);
  }
}

template <class T>
void rope(const KernelArgs& args, const LaunchContext& ctx) {
  const RopeLayout l = rope_layout(args.attrs, args.in_types[0]);
  const int64_t pairs = args.in_types[0].numel() / 2;
  if (pairs == 0) return;
  const bool given = args.in.size() > 1;
  // Positions [B, P] turn each sequence by its own; [P] or none, all alike.
  const int64_t sequences = given && args.in_types[1].rank() == 2 ? args.in_types[1].shape[0] : 1;
  rope_kernel<T><<<blocks_for(pairs), kThreads, 0, ctx.stream>>>(
      static_cast<const T*>(args.in[0]), static_cast<T*>(args.out[0]), pairs, l, given ? args.in[1] : nullptr,
      given && args.in_types[1].dtype == DType::i64, l.outer / sequences, rope_theta(args.attrs),
      args.attrs.get_bool("inverse", false) ? -1.0 : 1.0);
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// dropout: the CPU's counter-based mask (backends/cpu/dropout.cpp): element i
// is kept iff splitmix64(seed, i) >> 11 >= ceil(p * 2^53).

__device__ __forceinline__ uint64_t splitmix64(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class T>
__global__ void dropout_kernel(const T* x, T* y, int64_t n, uint64_t seed, uint64_t threshold, float scale) {
  PF_GRID_STRIDE(i, n) {
    const bool keep = (splitmix64(seed, static_cast<uint64_t>(i)) >> 11) >= threshold;
    y[i] = from_float<T>(keep ? to_float(x[i]) * scale : 0.f);
  }
}

template <class T>
void dropout(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t n = args.out_types[0].numel();
  if (n == 0) return;
  const double p = args.attrs.get_real("p", 0);
  const auto seed = static_cast<uint64_t>(args.attrs.get_int("seed", 0));
  const auto threshold = static_cast<uint64_t>(std::ceil(std::ldexp(p, 53)));
  const auto scale = static_cast<float>(1 / (1 - p));
  dropout_kernel<T><<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const T*>(args.in[0]),
                                                                  static_cast<T*>(args.out[0]), n, seed, threshold,
                                                                  scale);
  PF_CUDA_CHECK_LAUNCH();
}

// ---------------------------------------------------------------------------
// cast between f32, bf16, i32, i64 and bool (bytes 0/1), as the CPU casts:
// to bool means nonzero; float to integer saturates and sends NaN to 0.

template <class T>
inline constexpr bool kFloatLike = std::is_same_v<T, float> || std::is_same_v<T, bf16>;

template <class I>
__device__ __forceinline__ I saturate_to(float v) {
  constexpr double lo = static_cast<double>(std::numeric_limits<I>::min());
  constexpr double hi = -lo;  // 2^31 or 2^63, exact
  if (isnan(v)) return 0;
  const double d = v;
  if (d >= hi) return std::numeric_limits<I>::max();
  if (d <= lo) return std::numeric_limits<I>::min();
  return static_cast<I>(d);
}

template <class To, class From>
__device__ __forceinline__ To convert(From v) {
  if constexpr (std::is_same_v<To, From>) {
    return v;
  } else if constexpr (std::is_same_v<To, uint8_t>) {
    if constexpr (kFloatLike<From>)
      return to_float(v) != 0.f;
    else
      return v != 0;
  } else if constexpr (kFloatLike<From>) {
    if constexpr (kFloatLike<To>)
      return from_float<To>(to_float(v));
    else
      return saturate_to<To>(to_float(v));
  } else if constexpr (std::is_same_v<To, bf16>) {
    return from_float<bf16>(static_cast<float>(v));
  } else {
    return static_cast<To>(v);
  }
}

template <class To, class From>
__global__ void cast_kernel(const From* x, To* y, int64_t n) {
  PF_GRID_STRIDE(i, n) y[i] = convert<To>(x[i]);
}

template <class F>
void visit_stored(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f(float{});
    case DType::bf16:
      return f(bf16{});
    case DType::i32:
      return f(int32_t{});
    case DType::i64:
      return f(int64_t{});
    case DType::boolean:
      return f(uint8_t{});
    case DType::f16:
    case DType::f64:
      break;
  }
  throw Error("no cuda kernel for cast of " + std::string(dtype_name(t)));
}

void cast(const KernelArgs& args, const LaunchContext& ctx) {
  const int64_t n = args.out_types[0].numel();
  visit_stored(args.in_types[0].dtype, [&](auto from) {
    visit_stored(args.out_types[0].dtype, [&](auto to) {
      using From = decltype(from);
      using To = decltype(to);
      if (n == 0) return;
      cast_kernel<To, From><<<blocks_for(n), kThreads, 0, ctx.stream>>>(static_cast<const From*>(args.in[0]),
                                                                          static_cast<To*>(args.out[0]), n);
      PF_CUDA_CHECK_LAUNCH();
    });
  });
}

// ---------------------------------------------------------------------------
// Activation gradients from g and the forward's input x (same shapes).

struct ReluGradOp {
  // A select, so that inf or NaN in g where x <= 0 gives 0.
  __device__ float operator()(float g, float x) const { return x > 0.f ? g : 0.f; }
};
struct GeluGradOp {
  // d/dx of x * s, s = sigmoid(2u): s + x s (1 - s) 2u'; where s (1 - s) is
  // 0 the second term is skipped so that 0 * inf gives no NaN.
  __device__ float operator()(float g, float x) const {
    const float k2 = 2.f * 0.7978845608028654f, c = 0.044715f;
    const float s = 1.f / (1.f + expf(-k2 * (x + c * x * x * x)));
    const float slope = s * (1.f - s);
    const float du2 = k2 * (1.f + 3.f * c * x * x);
    return g * (slope == 0.f ? s : s + x * slope * du2);
  }
};

// ---------------------------------------------------------------------------
// Data movement through a strided gather: transpose and broadcast_to.

void transpose(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.in_types[0];
  const std::vector<int64_t> perm = args.attrs.get_ints("perm", {});
  gather(args.in[0], args.out[0], t.numel(), t.dtype, plan_transpose(t.shape, perm), ctx.stream);
}

void broadcast_to(const KernelArgs& args, const LaunchContext& ctx) {
  const TensorType& t = args.out_types[0];
  const Shape* operands[] = {&args.in_types[0].shape};
  gather(args.in[0], args.out[0], t.numel(), t.dtype, plan_broadcast(t.shape, operands), ctx.stream);
}

}  // namespace

void add_elementwise_kernels(KernelTable& t) {
  t.set_any_dtype(OpKind::constant, constant);
  t.set_float(OpKind::dim_value, dim_value, dim_value);
  t.set_any_dtype(OpKind::causal_mask, causal_mask);

  t.set_float(OpKind::add, binary<float, AddOp>, binary<bf16, AddOp>);
  t.set_float(OpKind::sub, binary<float, SubOp>, binary<bf16, SubOp>);
  t.set_float(OpKind::mul, binary<float, MulOp>, binary<bf16, MulOp>);
  t.set_float(OpKind::div, binary<float, DivOp>, binary<bf16, DivOp>);
  t.set_float(OpKind::where, where<float>, where<bf16>);

  t.set_float(OpKind::neg, unary<float, NegOp>, unary<bf16, NegOp>);
  t.set_float(OpKind::exp, unary<float, ExpOp>, unary<bf16, ExpOp>);
  t.set_float(OpKind::log, unary<float, LogOp>, unary<bf16, LogOp>);
  t.set_float(OpKind::sqrt, unary<float, SqrtOp>, unary<bf16, SqrtOp>);
  t.set_float(OpKind::rsqrt, unary<float, RsqrtOp>, unary<bf16, RsqrtOp>);
  t.set_float(OpKind::pow, pow_kernel<float>, pow_kernel<bf16>);
  t.set_float(OpKind::tanh, unary<float, TanhOp>, unary<bf16, TanhOp>);
  t.set_float(OpKind::sigmoid, unary<float, SigmoidOp>, unary<bf16, SigmoidOp>);
  t.set_float(OpKind::rope, rope<float>, rope<bf16>);
  t.set_float(OpKind::relu, unary<float, ReluOp>, unary<bf16, ReluOp>);
  t.set_float(OpKind::gelu, unary<float, GeluOp>, unary<bf16, GeluOp>);
  t.set_float(OpKind::gelu_erf, unary<float, GeluErfOp>, unary<bf16, GeluErfOp>);
  t.set_float(OpKind::silu, unary<float, SiluOp>, unary<bf16, SiluOp>);
  t.set_float(OpKind::dropout, dropout<float>, dropout<bf16>);
  t.set_any_dtype(OpKind::cast, cast);

  t.set_float(OpKind::relu_grad, binary<float, ReluGradOp>, binary<bf16, ReluGradOp>);
  t.set_float(OpKind::gelu_grad, binary<float, GeluGradOp>, binary<bf16, GeluGradOp>);
  t.set_float(OpKind::gelu_erf_grad, binary<float, GeluErfGradOp>, binary<bf16, GeluErfGradOp>);
  t.set_float(OpKind::silu_grad, binary<float, SiluGradOp>, binary<bf16, SiluGradOp>);

  t.set_any_dtype(OpKind::transpose, transpose);
  t.set_any_dtype(OpKind::broadcast_to, broadcast_to);
}

}  // namespace pf::cuda
