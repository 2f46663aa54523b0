// Elementwise unary kernels: neg, exp, log, sqrt, rsqrt, pow, tanh, sigmoid, relu, gelu, gelu_erf, silu.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/vector_math.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set
#include "backends/cpu/activations.h"        // kSilu

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

// The functions, as captureless lambdas: each kernel below is instantiated
// with one of their types. vector_math.h lets the loops over std::exp, log,
// tanh and pow vectorise.
constexpr auto kNeg = [](auto x) { return -x; };
constexpr auto kExp = [](auto x) { return std::exp(x); };
constexpr auto kLog = [](auto x) { return std::log(x); };
constexpr auto kSqrt = [](auto x) { return std::sqrt(x); };
constexpr auto kRsqrt = [](auto x) { return decltype(x)(1) / std::sqrt(x); };
constexpr auto kTanh = [](auto x) { return std::tanh(x); };
// exp(-x) overflows to inf for very negative x, giving exactly 0: no NaN.
constexpr auto kSigmoid = [](auto x) { return decltype(x)(1) / (decltype(x)(1) + std::exp(-x)); };
// Written so that a NaN passes through rather than turning into 0.
constexpr auto kRelu = [](auto x) { return x < decltype(x)(0) ? decltype(x)(0) : x; };
// The tanh form 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3),
// computed as x * sigmoid(2u), the same function (0.5 (1 + tanh(u)) =
// 1 / (1 + exp(-2u))), because a vector exp costs about half a vector tanh.
// For very negative x, exp overflows to inf and the result is 0: no NaN.
constexpr auto kGelu = [](auto x) {
  using T = decltype(x);
  const T k2 = T(2 * 0.7978845608028654);  // 2 sqrt(2/pi)
  return x / (T(1) + std::exp(-k2 * (x + T(0.044715) * x * x * x)));
};

// PyTorch's default nn.GELU(): x times the normal distribution's CDF.
constexpr auto kGeluErf = [](auto x) {
  using T = decltype(x);
  return T(0.5) * x * (T(1) + std::erf(x * T(0.7071067811865476)));
};

// Split over the device's threads; every element is computed alone, so the
// split never changes a result.
template <class T, class F>
void map(const T* x, T* y, int64_t n, F f) {
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = f(x[i]);
  });
}

template <class T, class F>
void unary(const KernelArgs& args) {
  map(static_cast<const T*>(args.in[0]), static_cast<T*>(args.out[0]), args.out_types[0].numel(), F{});
}

// pow(x, exponent): the exponents models use most are plain products, which
// are exact and far cheaper than std::pow.
template <class T>
void pow_kernel(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  auto* y = static_cast<T*>(args.out[0]);
  const int64_t n = args.out_types[0].numel();
  const double e = args.attrs.get_real("exponent", 1);
  if (e == 1) {
    std::copy_n(x, n, y);
  } else if (e == 2) {
    map(x, y, n, [](T v) { return v * v; });
  } else if (e == 3) {
    map(x, y, n, [](T v) { return v * v * v; });
  } else if (e == 0.5) {
    map(x, y, n, kSqrt);
  } else if (e == -1) {
    map(x, y, n, [](T v) { return T(1) / v; });
  } else {
    const T et = static_cast<T>(e);
    map(x, y, n, [et](T v) { return std::pow(v, et); });
  }
}

}  // namespace

void add_unary_kernels(KernelTable& table) {
  table.set_float(OpKind::neg, unary<float, decltype(kNeg)>, unary<double, decltype(kNeg)>);
  table.set_float(OpKind::exp, unary<float, decltype(kExp)>, unary<double, decltype(kExp)>);
  table.set_float(OpKind::log, unary<float, decltype(kLog)>, unary<double, decltype(kLog)>);
  table.set_float(OpKind::sqrt, unary<float, decltype(kSqrt)>, unary<double, decltype(kSqrt)>);
  table.set_float(OpKind::rsqrt, unary<float, decltype(kRsqrt)>, unary<double, decltype(kRsqrt)>);
  table.set_float(OpKind::pow, pow_kernel<float>, pow_kernel<double>);
  table.set_float(OpKind::tanh, unary<float, decltype(kTanh)>, unary<double, decltype(kTanh)>);
  table.set_float(OpKind::sigmoid, unary<float, decltype(kSigmoid)>, unary<double, decltype(kSigmoid)>);
  table.set_float(OpKind::relu, unary<float, decltype(kRelu)>, unary<double, decltype(kRelu)>);
  table.set_float(OpKind::gelu, unary<float, decltype(kGelu)>, unary<double, decltype(kGelu)>);
  table.set_float(OpKind::gelu_erf, unary<float, decltype(kGeluErf)>, unary<double, decltype(kGeluErf)>);
  table.set_float(OpKind::silu, unary<float, decltype(kSilu)>, unary<double, decltype(kSilu)>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
