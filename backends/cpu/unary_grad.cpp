// Gradients of elementwise activations: relu_grad, gelu_grad, gelu_erf_grad and silu_grad, from the incoming gradient and the forward's input.
#include <cmath>
#include <cstdint>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/vector_math.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set
#include "backends/cpu/activations.h"        // kSiluGrad

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

// g * (x > 0) as a select, so that an inf or NaN in g where x <= 0 gives 0
// rather than NaN; x = 0 (the kink) gives 0, as in PyTorch.
constexpr auto kReluGrad = [](auto g, auto x) { return x > decltype(x)(0) ? g : decltype(g)(0); };

// The derivative of the forward's gelu, x * s with s = sigmoid(2u), u =
// sqrt(2/pi) (x + 0.044715 x^3), the same function as 0.5 x (1 + tanh(u)):
// s + x * s (1 - s) * 2u'. Where s (1 - s) underflows to 0 (|x| > ~10 in
// f32) the second term is 0; testing for it keeps 0 * inf (x^2 overflowing
// for huge |x|) from giving NaN.
constexpr auto kGeluGrad = [](auto g, auto x) {
  using T = decltype(x);
  const T k2 = T(2 * 0.7978845608028654);  // 2 sqrt(2/pi)
  const T c = T(0.044715);
  const T s = T(1) / (T(1) + std::exp(-k2 * (x + c * x * x * x)));
  const T slope = s * (T(1) - s);
  const T du2 = k2 * (T(1) + T(3) * c * x * x);  // 2u'
  return g * (slope == T(0) ? s : s + x * slope * du2);
};

// d/dx of x Phi(x) = Phi(x) + x phi(x), the normal CDF and density.
constexpr auto kGeluErfGrad = [](auto g, auto x) {
  using T = decltype(x);
  const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.7071067811865476)));
  const T pdf = T(0.3989422804014327) * std::exp(T(-0.5) * x * x);
  return g * (cdf + x * pdf);
};

template <class T, class F>
void activation_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* x = static_cast<const T*>(args.in[1]);
  auto* dx = static_cast<T*>(args.out[0]);
  const int64_t n = args.out_types[0].numel();
  F f;
  parallel_for(n, kElementwiseGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) dx[i] = f(g[i], x[i]);
  });
}

}  // namespace

void add_unary_grad_kernels(KernelTable& table) {
  table.set_float(OpKind::relu_grad, activation_grad<float, decltype(kReluGrad)>,
                  activation_grad<double, decltype(kReluGrad)>);
  table.set_float(OpKind::gelu_grad, activation_grad<float, decltype(kGeluGrad)>,
                  activation_grad<double, decltype(kGeluGrad)>);
  table.set_float(OpKind::gelu_erf_grad, activation_grad<float, decltype(kGeluErfGrad)>,
                  activation_grad<double, decltype(kGeluErfGrad)>);
  table.set_float(OpKind::silu_grad, activation_grad<float, decltype(kSiluGrad)>,
                  activation_grad<double, decltype(kSiluGrad)>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
