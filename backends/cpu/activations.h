// The activation functions that more than one kernel family computes, as captureless lambdas (internal to
// backends/cpu). Included after kernel_isa_begin.h, so that each instruction set's copy of a family gets its own.
#pragma once

#include <cmath>

#ifndef PF_KERNEL_ISA
#error "include backends/cpu/activations.h after backends/cpu/kernel_isa_begin.h"
#endif

namespace pf::cpu::PF_KERNEL_ISA {

// x sigmoid(x) (Llama's SwiGLU gate): for very negative x, exp(-x) overflows
// to inf and x / inf is 0.
constexpr auto kSilu = [](auto x) { return x / (decltype(x)(1) + std::exp(-x)); };

// d/dx of x s, s = sigmoid(x), times g: g (s + x s (1 - s)). Where s (1 - s)
// is 0 (|x| past ~17 in f32, or infinite) the second term is 0, not 0 * inf.
constexpr auto kSiluGrad = [](auto g, auto x) {
  using T = decltype(x);
  const T s = T(1) / (T(1) + std::exp(-x));
  const T slope = s * (T(1) - s);
  return g * (slope == T(0) ? s : s + x * slope);
};

}  // namespace pf::cpu::PF_KERNEL_ISA
