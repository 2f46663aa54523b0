// Mixture of experts: the route (each expert's slots, the tokens in them), the gates and their gradient, the
// dispatch and combine of token rows through the slots, each expert's load, and its products over the slots in
// use. Every result is the same bits on any number of threads: the route is filled in one fixed order, and each
// token's sum over its slots runs in expert order.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "backends/cpu/parallel.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

// Token n's top_k experts, best first: the largest logits, the lower index
// first among equal ones.
template <class T>
void top_experts(const T* logits, int64_t experts, int64_t top_k, int64_t* chosen) {
  for (int64_t k = 0; k < top_k; ++k) {
    int64_t best = -1;
    for (int64_t e = 0; e < experts; ++e) {
      if (std::find(chosen, chosen + k, e) != chosen + k) continue;
      if (best < 0 || logits[e] > logits[best]) best = e;
    }
    chosen[k] = best;
  }
}

// Token n's router probability for expert e: the softmax of its logits.
template <class T>
double router_probability(const T* logits, int64_t experts, int64_t e) {
  double top = -INFINITY, sum = 0;
  for (int64_t j = 0; j < experts; ++j) top = std::max(top, static_cast<double>(logits[j]));
  for (int64_t j = 0; j < experts; ++j) sum += std::exp(static_cast<double>(logits[j]) - top);
  return std::exp(static_cast<double>(logits[e]) - top) / sum;
}

// drop="probs": each expert keeps, of the tokens choosing it, the `capacity`
// with the highest router probability (the earlier token among equal ones),
// in its slots in token order.
template <class T>
void fill_by_probability(const T* logits, int64_t tokens, int64_t experts, int64_t top_k,
                         const std::vector<int64_t>& chosen, int64_t first, int64_t held, int64_t capacity,
                         int32_t* route) {
  std::vector<std::pair<double, int64_t>> takers;  // (-probability, token): the best first
  for (int64_t e = first; e < first + held; ++e) {
    takers.clear();
    for (int64_t n = 0; n < tokens; ++n)
      for (int64_t k = 0; k < top_k; ++k)
        if (chosen[n * top_k + k] == e) takers.emplace_back(-router_probability(logits + n * experts, experts, e), n);
    if (static_cast<int64_t>(takers.size()) > capacity) {
      std::partial_sort(takers.begin(), takers.begin() + capacity, takers.end());
      takers.resize(static_cast<size_t>(capacity));
      std::sort(takers.begin(), takers.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
    }
    for (size_t s = 0; s < takers.size(); ++s)
      route[(e - first) * capacity + static_cast<int64_t>(s)] = static_cast<int32_t>(takers[s].second);
  }
}

// The route: experts [E, capacity], each slot the token it holds or -1. The
// tokens' first choices are placed before any second choice, each choice
// in token order, and a token that finds its expert full is dropped there
// (GShard's and Switch's priority; drop="probs" keeps the likeliest
// instead): the route depends on nothing else, and a route of some of the
// experts (first_expert on, a rank's under tensor parallelism) is their
// rows of the whole one.
template <class T>
void moe_route(const KernelArgs& args) {
  const auto* logits = static_cast<const T*>(args.in[0]);
  const int64_t tokens = args.in_types[0].shape[0], experts = args.in_types[0].shape[1];
  const int64_t top_k = args.attrs.get_int("top_k", 1), capacity = args.out_types[0].shape[1];
  const int64_t first = args.attrs.get_int("first_expert", 0), held = args.out_types[0].shape[0];
  std::vector<int64_t> chosen(static_cast<size_t>(tokens * top_k));
  parallel_for(tokens, std::max<int64_t>(1, kElementwiseGrain / (experts * top_k)), [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) top_experts(logits + n * experts, experts, top_k, &chosen[n * top_k]);
  });
  auto* route = static_cast<int32_t*>(args.out[0]);
  std::fill_n(route, held * capacity, -1);
  if (moe_drops_by_probability(args.attrs))
    return fill_by_probability(logits, tokens, experts, top_k, chosen, first, held, capacity, route);
  std::vector<int64_t> filled(static_cast<size_t>(experts), 0);
  for (int64_t k = 0; k < top_k; ++k) {
    for (int64_t n = 0; n < tokens; ++n) {
      const int64_t e = chosen[n * top_k + k];
      if (filled[e] == capacity) continue;
      if (e >= first && e < first + held) route[(e - first) * capacity + filled[e]] = static_cast<int32_t>(n);
      ++filled[e];
    }
  }
}

// The token in slot `slot` of the route, -1 for an empty one; pf::Error for
// a value no moe_route writes.
int64_t token_at(const KernelArgs& args, int route_operand, int64_t slot, int64_t tokens, const char* op) {
  const int64_t n = static_cast<const int32_t*>(args.in[route_operand])[slot];
  if (n < -1 || n >= tokens)
    throw Error(fmt::format("{}: slot {} of the route holds token {}, outside [-1, {})", op, slot, n, tokens));
  return n;
}

// The softmax weights of one token's experts for its gates: over its top_k
// logits (renormalize) or over every expert's. `weight[e]` is set for the
// experts taking part, 0 for the others.
template <class T>
void gate_softmax(const T* logits, int64_t experts, int64_t top_k, bool renormalize, double* weight,
                  int64_t* chosen) {
  std::fill_n(weight, experts, 0.0);
  if (renormalize) {
    top_experts(logits, experts, top_k, chosen);
  } else {
    top_k = experts;
    for (int64_t e = 0; e < experts; ++e) chosen[e] = e;
  }
  double top = -INFINITY, sum = 0;
  for (int64_t k = 0; k < top_k; ++k) top = std::max(top, static_cast<double>(logits[chosen[k]]));
  for (int64_t k = 0; k < top_k; ++k) sum += weight[chosen[k]] = std::exp(static_cast<double>(logits[chosen[k]]) - top);
  for (int64_t k = 0; k < top_k; ++k) weight[chosen[k]] /= sum;
}

// Each slot's token, by token: `slot_of[n * experts + e]` is the slot of
// expert e holding token n, or -1. The route holds the slots of its rows'
// experts from `first` on, of `experts` in all.
std::vector<int64_t> slots_by_token(const KernelArgs& args, int route_operand, int64_t tokens, int64_t first,
                                    int64_t experts, const char* op) {
  const TensorType& route = args.in_types[route_operand];
  const int64_t held = route.shape[0], capacity = route.shape[1];
  std::vector<int64_t> slot_of(static_cast<size_t>(tokens * experts), -1);
  for (int64_t s = 0; s < held * capacity; ++s) {
    const int64_t n = token_at(args, route_operand, s, tokens, op);
    if (n < 0) continue;
    int64_t& at = slot_of[n * experts + first + s / capacity];
    if (at >= 0)
      throw Error(fmt::format("{}: token {} is in two slots of expert {} ({} and {})", op, n, first + s / capacity,
                              at % capacity, s % capacity));
    at = s;
  }
  return slot_of;
}

// Calls visit(n, slots, weight) for each token the route holds in a slot:
// `slots[e]` its slot in expert e or -1, `weight[e]` its gate's softmax
// weight for expert e (0 for an expert not taking part), e counted over all
// of the logits' experts however many the route holds. A token in an
// expert outside its top_k stops the op: the route came from another top_k.
template <class T, class Visit>
void for_each_routed_token(const KernelArgs& args, int logits_operand, const char* op, Visit visit) {
  const auto* logits = static_cast<const T*>(args.in[logits_operand]);
  const int64_t tokens = args.in_types[logits_operand].shape[0], experts = args.in_types[logits_operand].shape[1];
  const int64_t top_k = args.attrs.get_int("top_k", 1);
  const bool renormalize = moe_renormalize(args.attrs);
  const std::vector<int64_t> slot_of =
      slots_by_token(args, logits_operand + 1, tokens, args.attrs.get_int("first_expert", 0), experts, op);
  std::vector<double> weight(static_cast<size_t>(experts));
  std::vector<int64_t> chosen(static_cast<size_t>(experts));
  for (int64_t n = 0; n < tokens; ++n) {
    const int64_t* slots = &slot_of[n * experts];
    if (std::all_of(slots, slots + experts, [](int64_t s) { return s < 0; })) continue;
    gate_softmax(logits + n * experts, experts, top_k, renormalize, weight.data(), chosen.data());
    const auto top = chosen.begin() + (renormalize ? top_k : experts);
    for (int64_t e = 0; e < experts; ++e)
      if (slots[e] >= 0 && std::find(chosen.begin(), top, e) == top)
        throw Error(fmt::format("{}: token {} is routed to expert {}, which is not among its top {}: give {} the "
                                "top_k of the moe_route that made the route",
                                op, n, e, top_k, op));
    visit(n, slots, weight.data());
  }
}

// gates [E, capacity]: each slot's token's softmax weight for the slot's expert, 0 in an empty slot.
template <class T>
void moe_gates(const KernelArgs& args) {
  auto* gates = static_cast<T*>(args.out[0]);
  const int64_t experts = args.in_types[0].shape[1];
  std::fill_n(gates, args.out_types[0].numel(), T(0));
  for_each_routed_token<T>(args, 0, "moe_gates", [&](int64_t, const int64_t* slots, const double* weight) {
    for (int64_t e = 0; e < experts; ++e)
      if (slots[e] >= 0) gates[slots[e]] = static_cast<T>(weight[e]);
  });
}

// dlogits [N, E] from dgates: with w the token's softmax weights over the
// experts taking part and G its gates' gradients (0 where a choice was
// dropped), dl_j = w_j (G_j - sum_i w_i G_i) for each expert j taking part.
template <class T>
void moe_gates_grad(const KernelArgs& args) {
  const auto* g = static_cast<const T*>(args.in[0]);
  auto* dlogits = static_cast<T*>(args.out[0]);
  const int64_t experts = args.in_types[1].shape[1];
  std::fill_n(dlogits, args.out_types[0].numel(), T(0));
  for_each_routed_token<T>(args, 1, "moe_gates_grad", [&](int64_t n, const int64_t* slots, const double* weight) {
    double mean = 0;
    for (int64_t e = 0; e < experts; ++e)
      if (slots[e] >= 0) mean += weight[e] * static_cast<double>(g[slots[e]]);
    for (int64_t e = 0; e < experts; ++e) {
      const double ge = slots[e] < 0 ? 0.0 : static_cast<double>(g[slots[e]]);
      dlogits[n * experts + e] = static_cast<T>(weight[e] * (ge - mean));
    }
  });
}

// x [N, C] -> [E, capacity, C]: each slot its token's row, zeros in an empty slot.
template <class T>
void moe_dispatch(const KernelArgs& args) {
  const auto* x = static_cast<const T*>(args.in[0]);
  const int64_t tokens = args.in_types[0].shape[0], features = args.in_types[0].shape[1];
  const int64_t slots = args.in_types[1].numel();
  for (int64_t s = 0; s < slots; ++s) token_at(args, 1, s, tokens, "moe_dispatch");
  const auto* route = static_cast<const int32_t*>(args.in[1]);
  auto* out = static_cast<T*>(args.out[0]);
  parallel_for(slots, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(features, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t s = begin; s < end; ++s) {
                   if (route[s] < 0)
                     std::fill_n(out + s * features, features, T(0));
                   else
                     std::memcpy(out + s * features, x + route[s] * features, sizeof(T) * features);
                 }
               });
}

// y [E, capacity, C] (, gates [E, capacity]) -> [tokens, C]: each token's
// rows of its slots, weighed by their gates, summed in expert order; zeros
// for a token in no slot.
template <class T>
void moe_combine(const KernelArgs& args) {
  const auto* y = static_cast<const T*>(args.in[0]);
  const T* gates = args.in.size() > 2 ? static_cast<const T*>(args.in[2]) : nullptr;
  const int64_t tokens = args.out_types[0].shape[0], features = args.out_types[0].shape[1];
  const int64_t experts = args.in_types[1].shape[0];
  const std::vector<int64_t> slot_of = slots_by_token(args, 1, tokens, 0, experts, "moe_combine");
  auto* out = static_cast<T*>(args.out[0]);
  parallel_for(tokens, std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(features * experts, 1)),
               [&](int64_t begin, int64_t end) {
                 for (int64_t n = begin; n < end; ++n) {
                   T* row = out + n * features;
                   std::fill_n(row, features, T(0));
                   for (int64_t e = 0; e < experts; ++e) {
                     const int64_t s = slot_of[n * experts + e];
                     if (s < 0) continue;
                     const T w = gates ? gates[s] : T(1);
                     const T* src = y + s * features;
                     for (int64_t c = 0; c < features; ++c) row[c] += w * src[c];
                   }
                 }
               });
}

// [E]: the share of the tokens whose top_k holds each expert (whether or not
// its slots took them): K over E each when the load is even.
template <class T>
void moe_load(const KernelArgs& args) {
  const auto* logits = static_cast<const T*>(args.in[0]);
  const int64_t tokens = args.in_types[0].shape[0], experts = args.in_types[0].shape[1];
  const int64_t top_k = args.attrs.get_int("top_k", 1);
  std::vector<int64_t> count(static_cast<size_t>(experts), 0), chosen(static_cast<size_t>(top_k));
  for (int64_t n = 0; n < tokens; ++n) {
    top_experts(logits + n * experts, experts, top_k, chosen.data());
    for (int64_t e : chosen) ++count[e];
  }
  auto* load = static_cast<T*>(args.out[0]);
  for (int64_t e = 0; e < experts; ++e)
    load[e] = tokens == 0 ? T(0) : static_cast<T>(static_cast<double>(count[e]) / static_cast<double>(tokens));
}

// Where the experts' products start under `threads` threads: runs of whole
// experts, cut so that each holds about 1/threads of the slots in use (a
// product's work), one run per thread.
std::vector<int64_t> expert_runs(const int32_t* route, int64_t experts, int64_t capacity, int threads) {
  std::vector<int64_t> used(static_cast<size_t>(experts));
  int64_t total = 0;
  for (int64_t e = 0; e < experts; ++e) total += used[static_cast<size_t>(e)] = slots_in_use(route, e, capacity);
  std::vector<int64_t> start = {0};
  int64_t e = 0, done = 0;
  for (int t = 1; t < threads; ++t) {
    // Up to the expert that takes the running sum past t/threads of the total.
    while (e < experts && (done + used[static_cast<size_t>(e)]) * threads <= total * t)
      done += used[static_cast<size_t>(e++)];
    start.push_back(e);
  }
  start.push_back(experts);
  return start;
}

// One GEMM per expert over its slots in use: out[e, :n] = a[e, :n] op(b[e])
// (its other rows zero), or, under transpose_a, out[e] = a[e, :n]^T b[e, :n].
// On more than one thread (f32), runs of whole experts side by side, each
// product single-threaded, rather than each product split over the threads
// in turn: each thread packs only its own operands and zeroes its own rows,
// and nobody waits at every expert (as the executor's GEMM pairs, fusion.h).
// A product's bits do not depend on its split (blas.h), so neither do these.
template <class T>
void moe_matmul(const KernelArgs& args) {
  const auto* a = static_cast<const T*>(args.in[0]);
  const auto* b = static_cast<const T*>(args.in[1]);
  const auto* route = static_cast<const int32_t*>(args.in[2]);
  auto* out = static_cast<T*>(args.out[0]);
  const bool ta = args.attrs.get_bool("transpose_a", false), tb = args.attrs.get_bool("transpose_b", false);
  const Shape &as = args.in_types[0].shape, &bs = args.in_types[1].shape, &os = args.out_types[0].shape;
  const int64_t experts = as[0], capacity = as[1];
  const int64_t a_size = as[1] * as[2], b_size = bs[1] * bs[2], out_size = os[1] * os[2];
  auto product = [&](int64_t e) {
    const int64_t used = slots_in_use(route, e, capacity);
    const T* ae = a + e * a_size;
    const T* be = b + e * b_size;
    T* oe = out + e * out_size;
    if (ta) {
      gemm(true, false, os[1], os[2], used, ae, as[2], be, bs[2], oe, os[2]);
    } else {
      gemm(false, tb, used, os[2], as[2], ae, as[2], be, bs[2], oe, os[2]);
      std::fill(oe + used * os[2], oe + out_size, T(0));
    }
  };
  const int threads = kernel_threads();
  if (std::is_same_v<T, float> && threads > 1 && experts >= threads) {
    const std::vector<int64_t> start = expert_runs(route, experts, capacity, threads);
    parallel_for(threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t)
        for (int64_t e = start[static_cast<size_t>(t)]; e < start[static_cast<size_t>(t) + 1]; ++e) product(e);
    });
    return;
  }
  for (int64_t e = 0; e < experts; ++e) product(e);
}

}  // namespace

void add_moe_kernels(KernelTable& table) {
  table.set_float(OpKind::moe_route, moe_route<float>, moe_route<double>);
  table.set_float(OpKind::moe_gates, moe_gates<float>, moe_gates<double>);
  table.set_float(OpKind::moe_gates_grad, moe_gates_grad<float>, moe_gates_grad<double>);
  table.set_float(OpKind::moe_dispatch, moe_dispatch<float>, moe_dispatch<double>);
  table.set_float(OpKind::moe_combine, moe_combine<float>, moe_combine<double>);
  table.set_float(OpKind::moe_load, moe_load<float>, moe_load<double>);
  table.set_float(OpKind::moe_matmul, moe_matmul<float>, moe_matmul<double>);
}

}  // namespace pf::cpu
