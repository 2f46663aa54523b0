// Float64 references of the mixture-of-experts ops: routes, gates and their gradient, load, products, swiglu, moves.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

namespace {

// A token's experts ranked by logit, the larger first
// and the lower index first among equal logits (a stable sort).
std::vector<int64_t> ranked_experts(const Tensor& logits, int64_t n) {
  const int64_t e = logits.type.shape[1];
  std::vector<int64_t> order(static_cast<size_t>(e));
  for (int64_t j = 0; j < e; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits.v[n * e + a] > logits.v[n * e + b]; });
  return order;
}

}  // namespace

// The route for `capacity` slots: choice 0 of every token in token order,
// then choice 1, ..., each into its expert's next free slot while there is
// one. By probability: each expert keeps the tokens choosing it with the
// highest softmax of their logits at it (the earlier first among equals),
// in token order.
Tensor moe_route_of(const Tensor& logits, int64_t top_k, int64_t capacity, bool by_probability) {
  const int64_t n = logits.type.shape[0], e = logits.type.shape[1];
  Tensor route = values(DType::i32, {e, capacity}, std::vector<double>(static_cast<size_t>(e * capacity), -1.0));
  if (by_probability) {
    for (int64_t x = 0; x < e; ++x) {
      std::vector<std::pair<double, int64_t>> takers;
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<int64_t> order = ranked_experts(logits, t);
        if (std::find(order.begin(), order.begin() + top_k, x) == order.begin() + top_k) continue;
        double sum = 0;
        for (int64_t j = 0; j < e; ++j) sum += std::exp(logits.v[t * e + j]);
        takers.emplace_back(std::exp(logits.v[t * e + x]) / sum, t);
      }
      std::stable_sort(takers.begin(), takers.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      if (static_cast<int64_t>(takers.size()) > capacity) takers.resize(static_cast<size_t>(capacity));
      std::sort(takers.begin(), takers.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
      for (size_t s = 0; s < takers.size(); ++s) route.v[x * capacity + static_cast<int64_t>(s)] = takers[s].second;
    }
    return route;
  }
  std::vector<int64_t> used(static_cast<size_t>(e), 0);
  for (int64_t k = 0; k < top_k; ++k)
    for (int64_t t = 0; t < n; ++t) {
      const int64_t x = ranked_experts(logits, t)[k];
      if (used[x] < capacity) route.v[x * capacity + used[x]++] = static_cast<double>(t);
    }
  return route;
}

Reference moe_route_ref(int64_t top_k, bool by_probability) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    return Outputs{moe_route_of(in[0], top_k, out[0].shape[1], by_probability).v};
  };
}

namespace {

// Token n's gate weights per expert: softmax over its top_k logits or over all.
std::vector<double> moe_weights(const Tensor& logits, int64_t n, int64_t top_k, bool renormalize) {
  const int64_t e = logits.type.shape[1];
  const std::vector<int64_t> order = ranked_experts(logits, n);
  const int64_t taking_part = renormalize ? top_k : e;
  std::vector<double> w(static_cast<size_t>(e), 0.0);
  double sum = 0;
  for (int64_t k = 0; k < taking_part; ++k) sum += std::exp(logits.v[n * e + order[k]]);
  for (int64_t k = 0; k < taking_part; ++k) w[order[k]] = std::exp(logits.v[n * e + order[k]]) / sum;
  return w;
}

}  // namespace

Reference moe_gates_ref(int64_t top_k, bool renormalize) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &logits = in[0], &route = in[1];
    const int64_t capacity = route.type.shape[1];
    std::vector<double> gates(static_cast<size_t>(out[0].numel()), 0.0);
    for (size_t s = 0; s < route.v.size(); ++s)
      if (route.v[s] >= 0)
        gates[s] = moe_weights(logits, static_cast<int64_t>(route.v[s]), top_k, renormalize)[s / capacity];
    return Outputs{gates};
  };
}

// dlogits by the chain rule through the softmax's Jacobian, written out:
// d w_x / d l_j = w_x (delta_xj - w_j) over the experts taking part.
Reference moe_gates_grad_ref(int64_t top_k, bool renormalize) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &g = in[0], &logits = in[1], &route = in[2];
    const int64_t e = logits.type.shape[1], capacity = route.type.shape[1];
    std::vector<double> d(static_cast<size_t>(out[0].numel()), 0.0);
    for (size_t s = 0; s < route.v.size(); ++s) {
      if (route.v[s] < 0) continue;
      const auto n = static_cast<int64_t>(route.v[s]);
      const auto x = static_cast<int64_t>(s) / capacity;
      const std::vector<double> w = moe_weights(logits, n, top_k, renormalize);
      for (int64_t j = 0; j < e; ++j)
        if (w[j] > 0) d[n * e + j] += g.v[s] * w[x] * ((x == j ? 1.0 : 0.0) - w[j]);
    }
    return Outputs{d};
  };
}

// Each expert's share of the tokens: those whose top_k holds it, over all.
Reference moe_load_ref(int64_t top_k) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const int64_t n = in[0].type.shape[0];
    std::vector<double> load(static_cast<size_t>(out[0].numel()), 0.0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t k = 0; k < top_k; ++k) load[ranked_experts(in[0], t)[k]] += 1.0 / static_cast<double>(n);
    return Outputs{load};
  };
}

// Each expert's product over its slots up to the last one holding a token:
// a[e, :n] op(b[e]) with zero rows after, or a[e, :n]^T b[e, :n].
Reference moe_matmul_ref(bool ta, bool tb) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &a = in[0], &b = in[1], &route = in[2];
    const Shape &as = a.type.shape, &bs = b.type.shape, &os = out[0].shape;
    std::vector<double> y(static_cast<size_t>(out[0].numel()), 0.0);
    for (int64_t e = 0; e < os[0]; ++e) {
      int64_t used = 0;
      for (int64_t c = 0; c < as[1]; ++c)
        if (route.v[e * as[1] + c] >= 0) used = c + 1;
      for (int64_t i = 0; i < os[1]; ++i)
        for (int64_t j = 0; j < os[2]; ++j) {
          double sum = 0;
          if (ta) {
            for (int64_t c = 0; c < used; ++c) sum += a.v[ravel({e, c, i}, as)] * b.v[ravel({e, c, j}, bs)];
          } else if (i < used) {
            for (int64_t k = 0; k < as[2]; ++k)
              sum += a.v[ravel({e, i, k}, as)] * b.v[tb ? ravel({e, j, k}, bs) : ravel({e, k, j}, bs)];
          }
          y[ravel({e, i, j}, os)] = sum;
        }
    }
    return Outputs{y};
  };
}

// swiglu (grad = false) or swiglu_grad: silu(gate) up, or d gate = g up
// silu'(gate) and d up = g silu(gate); with a route (the last operand) every
// element of an expert's slots past its last one in use is 0.
Reference swiglu_ref(bool grad) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const size_t first = grad ? 1 : 0;
    const Tensor &gate = in[first], &up = in[first + 1];
    const bool routed = in.size() > first + 2;
    const int64_t n = out[0].numel();
    std::vector<double> y(static_cast<size_t>(n)), d_up(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      if (routed) {
        const Tensor& route = in[first + 2];
        const int64_t capacity = route.type.shape[1], row = n / route.type.numel();
        const int64_t e = i / (row * capacity), slot = i / row % capacity;
        int64_t used = 0;
        for (int64_t c = 0; c < capacity; ++c)
          if (route.v[e * capacity + c] >= 0) used = c + 1;
        if (slot >= used) continue;  // stays 0
      }
      const double x = gate.v[i], s = 1 / (1 + std::exp(-x));
      if (!grad) {
        y[i] = x * s * up.v[i];
      } else {
        y[i] = in[0].v[i] * up.v[i] * (s + x * s * (1 - s));
        d_up[i] = in[0].v[i] * x * s;
      }
    }
    return grad ? Outputs{y, d_up} : Outputs{y};
  };
}

Outputs moe_dispatch_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
  const Tensor &x = in[0], &route = in[1];
  const int64_t c = x.type.shape[1];
  std::vector<double> y(static_cast<size_t>(out[0].numel()), 0.0);
  for (size_t s = 0; s < route.v.size(); ++s)
    for (int64_t j = 0; route.v[s] >= 0 && j < c; ++j) y[s * c + j] = x.v[static_cast<int64_t>(route.v[s]) * c + j];
  return {y};
}

Outputs moe_combine_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
  const Tensor &y = in[0], &route = in[1];
  const int64_t c = y.type.shape[2];
  std::vector<double> x(static_cast<size_t>(out[0].numel()), 0.0);
  for (size_t s = 0; s < route.v.size(); ++s)
    for (int64_t j = 0; route.v[s] >= 0 && j < c; ++j)
      x[static_cast<int64_t>(route.v[s]) * c + j] += (in.size() > 2 ? in[2].v[s] : 1.0) * y.v[s * c + j];
  return {x};
}

}  // namespace pf::cpu::every_op
