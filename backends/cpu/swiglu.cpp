// SwiGLU in one pass: swiglu (silu(gate) * up) and swiglu_grad (both operands' gradients). With a route (the
// operands an expert's slots, [E, capacity, ...]) only the slots in use are read and computed, the rest of each
// result zeroed: a dropless route fills K of every E slots per token. Each element is computed alone, by the
// same functions silu and silu_grad use, so the split between threads never changes a result.
#include <algorithm>
#include <cstdint>
#include <initializer_list>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "backends/cpu/vector_math.h"

#include "backends/cpu/kernel_isa_begin.h"  // last: the code below is compiled once per instruction set
#include "backends/cpu/activations.h"        // kSilu, kSiluGrad

namespace pf::cpu::PF_KERNEL_ISA {

namespace {

// Runs `body(begin, end)` over the elements of the results that are
// computed: all of them, or with a route (operand `route_operand`, when
// there is one) each expert's slots in use, whose other slots `results`
// then get zeros.
template <class T, class Body>
void over_computed(const KernelArgs& args, size_t route_operand, std::initializer_list<T*> results, Body body) {
  const int64_t n = args.out_types[0].numel();
  if (args.in.size() <= route_operand) return parallel_for(n, kElementwiseGrain, body);
  const auto* route = static_cast<const int32_t*>(args.in[route_operand]);
  const Shape& shape = args.out_types[0].shape;
  const int64_t experts = shape[0], capacity = shape[1];
  const int64_t row = experts * capacity == 0 ? 0 : n / (experts * capacity);
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t first = e * capacity * row, used = slots_in_use(route, e, capacity) * row;
    parallel_for(used, kElementwiseGrain, [&](int64_t begin, int64_t end) { body(first + begin, first + end); });
    for (T* r : results) std::fill(r + first + used, r + first + capacity * row, T(0));
  }
}

template <class T>
void swiglu(const KernelArgs& args) {
  const auto* gate = static_cast<const T*>(args.in[0]);
  const auto* up = static_cast<const T*>(args.in[1]);
  auto* y = static_cast<T*>(args.out[0]);
  over_computed<T>(args, 2, {y}, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) y[i] = kSilu(gate[i]) * up[i];
  });
}

// d gate = silu'(gate) (g up), d up = g silu(gate): the products the
// unfused chain's mul gradient makes, then silu_grad's.
template <class T>
void swiglu_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  const auto* gate = static_cast<const T*>(args.in[1]);
  const auto* up = static_cast<const T*>(args.in[2]);
  auto* d_gate = static_cast<T*>(args.out[0]);
  auto* d_up = static_cast<T*>(args.out[1]);
  over_computed<T>(args, 3, {d_gate, d_up}, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      d_gate[i] = kSiluGrad(g[i] * up[i], gate[i]);
      d_up[i] = g[i] * kSilu(gate[i]);
    }
  });
}

}  // namespace

void add_swiglu_kernels(KernelTable& table) {
  table.set_float(OpKind::swiglu, swiglu<float>, swiglu<double>);
  table.set_float(OpKind::swiglu_grad, swiglu_grad<float>, swiglu_grad<double>);
}

}  // namespace pf::cpu::PF_KERNEL_ISA

#include "backends/cpu/kernel_isa_end.h"
