// Every CPU forward kernel against a naive float64 reference: one test per op of ir/ops.def.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/kernels.h"
#include "ir/op_table.h"
#include "tests/op_attr_entries.h"

namespace pf::cpu {
namespace {

// Each case is checked twice: the f64 kernel against the
// reference written here (plain loops over multi-indices), then the f32
// kernel against the f64 kernel. Inputs are rounded to f32 so both runs read
// the same numbers. Results are poisoned (all bytes 0xFF) before each run so
// an element a kernel forgets to write shows up as NaN or as a wrong integer.
// An op with no kernel or no case fails its test.

// ---------------------------------------------------------------------------
// Tensors of the test: values held as doubles whatever the dtype (bools are
// 0/1, the integers used here are exact in a double).

struct Tensor {
  TensorType type;
  std::vector<double> v;  // row-major
};

using Index = std::vector<int64_t>;

Index unravel(int64_t flat, const Shape& shape) {
  Index idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

int64_t ravel(const Index& idx, const Shape& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

// The element of `t` that broadcasting sends to result index `idx` (aligned
// on the right, size-1 dimensions stretched).
double broadcast_at(const Tensor& t, const Index& idx) {
  const Shape& s = t.type.shape;
  Index own(s.size());
  for (size_t d = 0; d < s.size(); ++d) own[d] = s[d] == 1 ? 0 : idx[idx.size() - s.size() + d];
  return t.v[ravel(own, s)];
}

// Values drawn from a fixed seed and rounded to f32.
class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  Tensor uniform(Shape shape, double lo = -2, double hi = 2) {
    Tensor t{{DType::f64, std::move(shape)}, {}};
    std::uniform_real_distribution<double> u(lo, hi);
    for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<float>(u(rng_)));
    return t;
  }
  Tensor ints(DType dt, Shape shape, int64_t lo, int64_t hi) {
    Tensor t{{dt, std::move(shape)}, {}};
    std::uniform_int_distribution<int64_t> u(lo, hi);
    for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<double>(u(rng_)));
    return t;
  }
  Tensor bools(Shape shape) { return ints(DType::boolean, std::move(shape), 0, 1); }

 private:
  std::mt19937_64 rng_;
};

Tensor values(DType dt, Shape shape, std::vector<double> v) { return {{dt, std::move(shape)}, std::move(v)}; }

// ---------------------------------------------------------------------------
// Attributes (names must outlive the OpAttrs: string literals here).

using testing_support::bool_attr;
using testing_support::dim_attr;
using testing_support::dims_attr;
using testing_support::dtype_attr;
using testing_support::real_attr;
using testing_support::string_attr;

// ---------------------------------------------------------------------------
// A case: operands, attributes, declared result types (source ops) and the
// reference, which maps the f64 operands and the result types to the values.

using Outputs = std::vector<std::vector<double>>;
using Reference = std::function<Outputs(const std::vector<Tensor>& in, const std::vector<TensorType>& out)>;

struct Case {
  std::string name;
  std::vector<Tensor> in;
  std::vector<OpAttrs::Entry> attrs;
  std::vector<TensorType> declared;
  Reference ref;
};

// ---------------------------------------------------------------------------
// Running a kernel on byte buffers.

std::vector<std::byte> encode(const Tensor& t) {
  const int64_t n = t.type.numel();
  std::vector<std::byte> bytes(static_cast<size_t>(std::max<int64_t>(t.type.bytes(), 1)));
  auto put = [&](auto tag) {
    using E = decltype(tag);
    for (int64_t i = 0; i < n; ++i) {
      E e = static_cast<E>(t.v[i]);
      std::memcpy(bytes.data() + i * sizeof(E), &e, sizeof(E));
    }
  };
  switch (t.type.dtype) {
    case DType::f32:
      put(float{});
      break;
    case DType::f64:
      put(double{});
      break;
    case DType::i32:
      put(int32_t{});
      break;
    case DType::i64:
      put(int64_t{});
      break;
    case DType::boolean:
      put(uint8_t{});
      break;
    default:
      ADD_FAILURE() << "the test stores no " << dtype_name(t.type.dtype);
  }
  return bytes;
}

std::vector<double> decode(const TensorType& type, const std::vector<std::byte>& bytes) {
  std::vector<double> v(static_cast<size_t>(type.numel()));
  auto get = [&](auto tag) {
    using E = decltype(tag);
    for (size_t i = 0; i < v.size(); ++i) {
      E e;
      std::memcpy(&e, bytes.data() + i * sizeof(E), sizeof(E));
      v[i] = static_cast<double>(e);
    }
  };
  switch (type.dtype) {
    case DType::f32:
      get(float{});
      break;
    case DType::f64:
      get(double{});
      break;
    case DType::i32:
      get(int32_t{});
      break;
    case DType::i64:
      get(int64_t{});
      break;
    case DType::boolean:
      get(uint8_t{});
      break;
    default:
      ADD_FAILURE() << "the test stores no " << dtype_name(type.dtype);
  }
  return v;
}

// In the f32 run every f64 of a case becomes f32.
DType retype(DType t, DType run) { return t == DType::f64 ? run : t; }

struct Result {
  std::vector<TensorType> types;
  Outputs values;
};

Result run_kernel(OpKind op, DType run, const Case& c) {
  std::vector<TensorType> in_types, declared;
  std::vector<std::vector<std::byte>> in_bytes;
  for (const Tensor& t : c.in) {
    Tensor r{{retype(t.type.dtype, run), t.type.shape}, t.v};
    in_types.push_back(r.type);
    in_bytes.push_back(encode(r));
  }
  for (const TensorType& t : c.declared) declared.push_back({retype(t.dtype, run), t.shape});
  OpAttrs attrs;
  for (OpAttrs::Entry e : c.attrs) {
    e.dtype = retype(e.dtype, run);
    attrs.add(e);
  }
  // The result types come from the IR's own shape rule, which also checks the case.
  Result result;
  result.types = op_info(op).shape(ShapeContext{op_name(op), in_types, attrs, declared});
  std::vector<std::vector<std::byte>> out_bytes;
  for (const TensorType& t : result.types)
    out_bytes.emplace_back(static_cast<size_t>(std::max<int64_t>(t.bytes(), 1)), std::byte{0xFF});
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (auto& b : in_bytes) in_ptrs.push_back(b.data());
  for (auto& b : out_bytes) out_ptrs.push_back(b.data());
  static backend::SingleRankGroup alone;  // tp_reduce over a group of one rank
  KernelArgs args{in_types, in_ptrs, result.types, out_ptrs, attrs};
  args.group = &alone;
  args.expert_group = &alone;
  forward_kernel(op, run)(args);
  for (size_t i = 0; i < result.types.size(); ++i) result.values.push_back(decode(result.types[i], out_bytes[i]));
  return result;
}

// Floats: |got - want| <= rtol * max(|want|, the largest |want| of the
// tensor), i.e. relative to the element or, for elements much smaller than
// the rest, to the tensor's scale. Integers and bools: exact.
void expect_close(const TensorType& type, const std::vector<double>& got, const std::vector<double>& want, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]);
    const bool exact = !is_float(type.dtype);
    const bool ok =
        exact ? got[i] == want[i]
              : (err <= rtol * std::max(std::abs(want[i]), scale) || (std::isinf(want[i]) && got[i] == want[i]));
    if (!ok) {
      ADD_FAILURE() << what << " " << type.str() << ": element " << i << " is " << got[i] << ", expected " << want[i];
      return;
    }
  }
}

void check_case(OpKind op, const Case& c) {
  SCOPED_TRACE("case " + c.name);
  const Result r64 = run_kernel(op, DType::f64, c);
  const Outputs want = c.ref(c.in, r64.types);
  ASSERT_EQ(want.size(), r64.values.size());
  for (size_t i = 0; i < want.size(); ++i)
    expect_close(r64.types[i], r64.values[i], want[i], 1e-10, "f64 kernel vs reference, result " + std::to_string(i));
  const Result r32 = run_kernel(op, DType::f32, c);
  ASSERT_EQ(r32.values.size(), r64.values.size());
  for (size_t i = 0; i < r32.values.size(); ++i)
    expect_close(r32.types[i], r32.values[i], r64.values[i], 1e-5,
                 "f32 kernel vs f64 kernel, result " + std::to_string(i));
}

// ---------------------------------------------------------------------------
// References: plain loops, written for the reader, not for speed.

// out[i] = f(broadcast operands at i) for every result index i.
Outputs map_ref(const std::vector<Tensor>& in, const TensorType& out,
                const std::function<double(const std::vector<double>&)>& f) {
  std::vector<double> y(static_cast<size_t>(out.numel()));
  std::vector<double> args(in.size());
  for (int64_t i = 0; i < out.numel(); ++i) {
    const Index idx = unravel(i, out.shape);
    for (size_t k = 0; k < in.size(); ++k) args[k] = broadcast_at(in[k], idx);
    y[i] = f(args);
  }
  return {y};
}

Reference unary_ref(std::function<double(double)> f) {
  return [f](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    return map_ref(in, out[0], [&](const std::vector<double>& a) { return f(a[0]); });
  };
}

Reference binary_ref(std::function<double(double, double)> f) {
  return [f](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    return map_ref(in, out[0], [&](const std::vector<double>& a) { return f(a[0], a[1]); });
  };
}

Reference matmul_ref(bool ta, bool tb) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &a = in[0], &b = in[1];
    const Shape& s = out[0].shape;
    const size_t r = s.size();
    const int64_t k_size = a.type.shape[a.type.rank() - (ta ? 2 : 1)];
    std::vector<double> y(static_cast<size_t>(out[0].numel()));
    for (int64_t f = 0; f < out[0].numel(); ++f) {
      Index idx = unravel(f, s);
      const int64_t i = idx[r - 2], j = idx[r - 1];
      double sum = 0;
      for (int64_t k = 0; k < k_size; ++k) {
        Index ia = idx, ib = idx;
        ia[r - 2] = ta ? k : i;
        ia[r - 1] = ta ? i : k;
        ib[r - 2] = tb ? j : k;
        ib[r - 1] = tb ? k : j;
        sum += broadcast_at(a, ia) * broadcast_at(b, ib);
      }
      y[f] = sum;
    }
    return Outputs{y};
  };
}

// softmax (or log_softmax) along `axis` at every result index.
Reference softmax_ref(int64_t axis, bool log) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor& x = in[0];
    const Shape& s = x.type.shape;
    const int64_t ax = axis < 0 ? axis + x.type.rank() : axis;
    std::vector<double> y(x.v.size());
    for (int64_t f = 0; f < x.type.numel(); ++f) {
      Index idx = unravel(f, s);
      double sum = 0;
      for (int64_t j = 0; j < s[ax]; ++j) {
        Index o = idx;
        o[ax] = j;
        sum += std::exp(x.v[ravel(o, s)]);
      }
      y[f] = log ? x.v[f] - std::log(sum) : std::exp(x.v[f]) / sum;
    }
    return Outputs{y};
  };
}

Reference layernorm_ref(double eps) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &x = in[0], &w = in[1], &b = in[2];
    const int64_t c = x.type.shape.back();
    std::vector<double> y(x.v.size());
    for (int64_t r = 0; r < x.type.numel() / c; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < c; ++i) mean += x.v[r * c + i] / c;
      for (int64_t i = 0; i < c; ++i) var += (x.v[r * c + i] - mean) * (x.v[r * c + i] - mean) / c;
      for (int64_t i = 0; i < c; ++i) y[r * c + i] = (x.v[r * c + i] - mean) / std::sqrt(var + eps) * w.v[i] + b.v[i];
    }
    return Outputs{y};
  };
}

Reference rmsnorm_ref(double eps) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &x = in[0], &w = in[1];
    const int64_t c = x.type.shape.back();
    std::vector<double> y(x.v.size());
    for (int64_t r = 0; r < x.type.numel() / c; ++r) {
      double ms = 0;
      for (int64_t i = 0; i < c; ++i) ms += x.v[r * c + i] * x.v[r * c + i] / c;
      for (int64_t i = 0; i < c; ++i) y[r * c + i] = x.v[r * c + i] / std::sqrt(ms + eps) * w.v[i];
    }
    return Outputs{y};
  };
}

// rope: feature d of D at position p (its index along the positions' axis,
// or the positions operand there) pairs with d +- D/2 and turns by
// p * theta^(-2 (d mod D/2) / D), backwards under `inverse`.
Reference rope_ref(int64_t axis, double theta, bool inverse) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor& x = in[0];
    const Shape& s = x.type.shape;
    const auto rank = static_cast<int64_t>(s.size());
    const auto at = static_cast<size_t>(axis < 0 ? axis + rank : axis);
    const int64_t d = s.back(), half = d / 2;
    std::vector<double> y(x.v.size());
    for (int64_t f = 0; f < x.type.numel(); ++f) {
      const Index idx = unravel(f, s);
      const double p = in.size() > 1 ? in[1].v[static_cast<size_t>(idx[at])] : static_cast<double>(idx[at]);
      const int64_t i = idx.back() % half;
      const double angle = (inverse ? -1 : 1) * p * std::pow(theta, -2.0 * static_cast<double>(i) / d);
      const bool first = idx.back() < half;
      const double partner = x.v[static_cast<size_t>(first ? f + half : f - half)];
      y[static_cast<size_t>(f)] = x.v[static_cast<size_t>(f)] * std::cos(angle) +
                                  (first ? -partner : partner) * std::sin(angle);
    }
    return Outputs{y};
  };
}

Outputs embedding_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
  const Tensor &table = in[0], &ids = in[1];
  const int64_t c = table.type.shape[1];
  std::vector<double> y(static_cast<size_t>(out[0].numel()));
  for (size_t i = 0; i < ids.v.size(); ++i)
    for (int64_t j = 0; j < c; ++j) y[i * c + j] = table.v[static_cast<int64_t>(ids.v[i]) * c + j];
  return {y};
}

// Mixture of experts. A token's experts ranked by logit, the larger first
// and the lower index first among equal logits (a stable sort).
std::vector<int64_t> ranked_experts(const Tensor& logits, int64_t n) {
  const int64_t e = logits.type.shape[1];
  std::vector<int64_t> order(static_cast<size_t>(e));
  for (int64_t j = 0; j < e; ++j) order[j] = j;
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return logits.v[n * e + a] > logits.v[n * e + b]; });
  return order;
}

// The route for `capacity` slots: choice 0 of every token in token order,
// then choice 1, ..., each into its expert's next free slot while there is
// one. By probability: each expert keeps the tokens choosing it with the
// highest softmax of their logits at it (the earlier first among equals),
// in token order.
Tensor moe_route_of(const Tensor& logits, int64_t top_k, int64_t capacity, bool by_probability = false) {
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

Reference moe_route_ref(int64_t top_k, bool by_probability = false) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    return Outputs{moe_route_of(in[0], top_k, out[0].shape[1], by_probability).v};
  };
}

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

// A table holding rows offset.. of the vocabulary: the ids it holds gather
// their row, the others zeros.
Reference embedding_share_ref(int64_t offset) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &table = in[0], &ids = in[1];
    const int64_t rows = table.type.shape[0], c = table.type.shape[1];
    std::vector<double> y(static_cast<size_t>(out[0].numel()), 0.0);
    for (size_t i = 0; i < ids.v.size(); ++i) {
      const int64_t row = static_cast<int64_t>(ids.v[i]) - offset;
      if (row >= 0 && row < rows)
        for (int64_t j = 0; j < c; ++j) y[i * c + j] = table.v[row * c + j];
    }
    return Outputs{y};
  };
}

Reference transpose_ref(std::vector<int64_t> perm) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& x = in[0];
    std::vector<double> y(x.v.size());
    for (int64_t f = 0; f < out[0].numel(); ++f) {
      const Index o = unravel(f, out[0].shape);
      Index i(o.size());
      for (size_t d = 0; d < perm.size(); ++d) i[perm[d] < 0 ? perm[d] + x.type.rank() : perm[d]] = o[d];
      y[f] = x.v[ravel(i, x.type.shape)];
    }
    return Outputs{y};
  };
}

// Index `idx` along `axis` shifted by `offset`.
Index shifted(Index idx, int64_t axis, int64_t offset) {
  idx[axis] += offset;
  return idx;
}

Reference slice_ref(int64_t axis, int64_t start) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& x = in[0];
    const int64_t ax = axis < 0 ? axis + x.type.rank() : axis;
    std::vector<double> y(static_cast<size_t>(out[0].numel()));
    for (int64_t f = 0; f < out[0].numel(); ++f)
      y[f] = x.v[ravel(shifted(unravel(f, out[0].shape), ax, start), x.type.shape)];
    return Outputs{y};
  };
}

Reference concat_ref(int64_t axis) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Shape& s = out[0].shape;
    const int64_t ax = axis < 0 ? axis + static_cast<int64_t>(s.size()) : axis;
    std::vector<double> y(static_cast<size_t>(out[0].numel()));
    for (int64_t f = 0; f < out[0].numel(); ++f) {
      Index idx = unravel(f, s);
      size_t k = 0;
      while (idx[ax] >= in[k].type.shape[ax]) idx[ax] -= in[k++].type.shape[ax];
      y[f] = in[k].v[ravel(idx, in[k].type.shape)];
    }
    return Outputs{y};
  };
}

Reference split_ref(int64_t axis) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& x = in[0];
    const int64_t ax = axis < 0 ? axis + x.type.rank() : axis;
    Outputs ys;
    int64_t start = 0;
    for (const TensorType& t : out) {
      std::vector<double> y(static_cast<size_t>(t.numel()));
      for (int64_t f = 0; f < t.numel(); ++f) y[f] = x.v[ravel(shifted(unravel(f, t.shape), ax, start), x.type.shape)];
      ys.push_back(y);
      start += t.shape[ax];
    }
    return ys;
  };
}

enum class Red { sum, mean, max };

Reference reduce_ref(std::vector<int64_t> axes, Red kind) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& x = in[0];
    Shape kept = x.type.shape;
    int64_t count = 1;
    for (int64_t a : axes) {
      const int64_t ax = a < 0 ? a + x.type.rank() : a;
      count *= kept[ax];
      kept[ax] = 1;
    }
    std::vector<double> y(static_cast<size_t>(out[0].numel()),
                          kind == Red::max ? -std::numeric_limits<double>::infinity() : 0.0);
    for (int64_t f = 0; f < x.type.numel(); ++f) {
      Index idx = unravel(f, x.type.shape);
      for (size_t d = 0; d < kept.size(); ++d)
        if (kept[d] == 1) idx[d] = 0;
      double& acc = y[ravel(idx, kept)];
      acc = kind == Red::max ? std::max(acc, x.v[f]) : acc + x.v[f];
    }
    if (kind == Red::mean)
      for (double& v : y) v /= static_cast<double>(count);
    return Outputs{y};
  };
}

Reference conv2d_ref(std::vector<int64_t> stride, std::vector<int64_t> pad, int64_t groups) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &x = in[0], &w = in[1];
    const Shape &xs = x.type.shape, &ws = w.type.shape, &ys = out[0].shape;
    const int64_t cg = ws[1], og = ws[0] / groups;
    std::vector<double> y(static_cast<size_t>(out[0].numel()));
    for (int64_t f = 0; f < out[0].numel(); ++f) {
      const Index o = unravel(f, ys);  // n, oc, oy, ox
      double sum = in.size() == 3 ? in[2].v[o[1]] : 0.0;
      const int64_t g = o[1] / og;
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t ky = 0; ky < ws[2]; ++ky)
          for (int64_t kx = 0; kx < ws[3]; ++kx) {
            const int64_t iy = o[2] * stride[0] - pad[0] + ky, ix = o[3] * stride[1] - pad[1] + kx;
            if (iy < 0 || iy >= xs[2] || ix < 0 || ix >= xs[3]) continue;
            sum += x.v[ravel({o[0], g * cg + c, iy, ix}, xs)] * w.v[ravel({o[1], c, ky, kx}, ws)];
          }
      y[f] = sum;
    }
    return Outputs{y};
  };
}

Reference pool_ref(std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> pad, bool max) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& x = in[0];
    const Shape& xs = x.type.shape;
    std::vector<double> y(static_cast<size_t>(out[0].numel()));
    for (int64_t f = 0; f < out[0].numel(); ++f) {
      const Index o = unravel(f, out[0].shape);
      double acc = max ? -std::numeric_limits<double>::infinity() : 0.0;
      for (int64_t ky = 0; ky < kernel[0]; ++ky)
        for (int64_t kx = 0; kx < kernel[1]; ++kx) {
          const int64_t iy = o[2] * stride[0] - pad[0] + ky, ix = o[3] * stride[1] - pad[1] + kx;
          if (iy < 0 || iy >= xs[2] || ix < 0 || ix >= xs[3]) continue;  // padding: never the max, adds 0
          const double v = x.v[ravel({o[0], o[1], iy, ix}, xs)];
          acc = max ? std::max(acc, v) : acc + v;
        }
      y[f] = max ? acc : acc / static_cast<double>(kernel[0] * kernel[1]);
    }
    return Outputs{y};
  };
}

// The classes offset.. of each row: the sum of exp(logit - max) and the
// target's logit - max where the row's target is one of them.
Reference cross_entropy_parts_ref(int64_t offset) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &logits = in[0], &max = in[1], &targets = in[2];
    const int64_t v = logits.type.shape.back();
    std::vector<double> parts(2 * targets.v.size(), 0.0);
    for (size_t r = 0; r < targets.v.size(); ++r) {
      for (int64_t j = 0; j < v; ++j) parts[2 * r] += std::exp(logits.v[r * v + j] - max.v[r]);
      const int64_t k = static_cast<int64_t>(targets.v[r]) - offset;
      if (k >= 0 && k < v) parts[2 * r + 1] = logits.v[r * v + k] - max.v[r];
    }
    return Outputs{parts};
  };
}

Reference cross_entropy_parts_grad_ref(int64_t offset) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &g = in[0], &logits = in[1], &max = in[2], &targets = in[3];
    const int64_t v = logits.type.shape.back();
    std::vector<double> dx(logits.v.size());
    for (size_t r = 0; r < targets.v.size(); ++r) {
      for (int64_t j = 0; j < v; ++j) dx[r * v + j] = g.v[2 * r] * std::exp(logits.v[r * v + j] - max.v[r]);
      const int64_t k = static_cast<int64_t>(targets.v[r]) - offset;
      if (k >= 0 && k < v) dx[r * v + k] += g.v[2 * r + 1];
    }
    return Outputs{dx};
  };
}

Reference cross_entropy_total_ref(int64_t ignore) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &parts = in[0], &targets = in[1];
    double total = 0;
    int64_t counted = 0;
    for (size_t r = 0; r < targets.v.size(); ++r) {
      if (static_cast<int64_t>(targets.v[r]) == ignore) continue;
      total += std::log(parts.v[2 * r]) - parts.v[2 * r + 1];
      ++counted;
    }
    return Outputs{{counted ? total / static_cast<double>(counted) : 0.0}};
  };
}

Reference cross_entropy_total_grad_ref(int64_t ignore) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &g = in[0], &parts = in[1], &targets = in[2];
    int64_t counted = 0;
    for (double t : targets.v) counted += static_cast<int64_t>(t) != ignore;
    std::vector<double> d(parts.v.size(), 0.0);
    for (size_t r = 0; r < targets.v.size(); ++r) {
      if (static_cast<int64_t>(targets.v[r]) == ignore) continue;
      d[2 * r] = g.v[0] / static_cast<double>(counted) / parts.v[2 * r];
      d[2 * r + 1] = -g.v[0] / static_cast<double>(counted);
    }
    return Outputs{d};
  };
}

Reference cross_entropy_ref(int64_t ignore) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &logits = in[0], &targets = in[1];
    const int64_t v = logits.type.shape.back();
    double total = 0;
    int64_t counted = 0;
    for (size_t r = 0; r < targets.v.size(); ++r) {
      const auto t = static_cast<int64_t>(targets.v[r]);
      if (t == ignore) continue;
      double sum = 0;
      for (int64_t j = 0; j < v; ++j) sum += std::exp(logits.v[r * v + j]);
      total += std::log(sum) - logits.v[r * v + t];
      ++counted;
    }
    return Outputs{{counted ? total / static_cast<double>(counted) : 0.0}};
  };
}

// The dropout mask as the interface documents it, written out independently.
double splitmix_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) / 9007199254740992.0;  // 2^53
}

Reference dropout_ref(double p, uint64_t seed) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    std::vector<double> y(in[0].v.size());
    for (size_t i = 0; i < y.size(); ++i) y[i] = splitmix_uniform(seed, i) >= p ? in[0].v[i] / (1 - p) : 0.0;
    return Outputs{y};
  };
}

// cast as documented: to bool is "nonzero", float to integer truncates and
// saturates (NaN gives 0).
Reference cast_ref(DType to) {
  return unary_ref([=](double v) {
    if (to == DType::boolean) return v != 0 ? 1.0 : 0.0;
    if (to == DType::i32 || to == DType::i64) {
      const double lo = to == DType::i32 ? -2147483648.0 : -9223372036854775808.0;
      const double hi = to == DType::i32 ? 2147483647.0 : 9223372036854775807.0;
      return std::isnan(v) ? 0.0 : std::clamp(std::trunc(v), lo, hi);
    }
    return v;
  });
}

Reference fill_ref(double value) {
  return [=](const std::vector<Tensor>&, const std::vector<TensorType>& out) {
    return Outputs{std::vector<double>(static_cast<size_t>(out[0].numel()), value)};
  };
}

Outputs causal_mask_ref(const std::vector<Tensor>&, const std::vector<TensorType>& out) {
  const Shape& s = out[0].shape;
  std::vector<double> y(static_cast<size_t>(out[0].numel()));
  for (int64_t f = 0; f < out[0].numel(); ++f) {
    const Index idx = unravel(f, s);
    y[f] = idx[s.size() - 1] <= idx[s.size() - 2] ? 1.0 : 0.0;
  }
  return {y};
}

// ---------------------------------------------------------------------------
// References of the backward ops, written from their definitions: the same
// plain loops, with no reuse of a kernel's structure.

// sum_to: every element of x is added into the element of `out` that
// broadcasting would have read it from.
Outputs sum_to_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
  const Tensor& x = in[0];
  const Shape& s = out[0].shape;
  std::vector<double> y(static_cast<size_t>(out[0].numel()), 0.0);
  for (int64_t f = 0; f < x.type.numel(); ++f) {
    const Index idx = unravel(f, x.type.shape);
    Index own(s.size());
    for (size_t d = 0; d < s.size(); ++d) own[d] = s[d] == 1 ? 0 : idx[idx.size() - s.size() + d];
    y[ravel(own, s)] += x.v[f];
  }
  return {y};
}

// d/dx of 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
double gelu_derivative(double x) {
  const double k = std::sqrt(2 / std::numbers::pi);
  const double t = std::tanh(k * (x + 0.044715 * x * x * x));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
}

// The sum of f(index) along `axis` through the index `idx`.
double sum_along(const Shape& s, Index idx, int64_t axis, const std::function<double(int64_t)>& f) {
  double sum = 0;
  for (int64_t j = 0; j < s[axis]; ++j) {
    idx[axis] = j;
    sum += f(ravel(idx, s));
  }
  return sum;
}

// in = {g, y}: softmax: y (g - sum(g y)); log_softmax: g - exp(y) sum(g).
Reference softmax_grad_ref(int64_t axis, bool log) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &g = in[0], &y = in[1];
    const Shape& s = y.type.shape;
    const int64_t ax = axis < 0 ? axis + y.type.rank() : axis;
    std::vector<double> dx(y.v.size());
    for (int64_t f = 0; f < y.type.numel(); ++f) {
      const Index idx = unravel(f, s);
      if (log)
        dx[f] = g.v[f] - std::exp(y.v[f]) * sum_along(s, idx, ax, [&](int64_t i) { return g.v[i]; });
      else
        dx[f] = y.v[f] * (g.v[f] - sum_along(s, idx, ax, [&](int64_t i) { return g.v[i] * y.v[i]; }));
    }
    return Outputs{dx};
  };
}

// in = {g, x, w}: layernorm's three gradients, per row of the last axis,
// from the textbook formulas; rms: rmsnorm's two, which are layernorm's with
// the mean fixed at 0 (and no bias).
Reference norm_grad_ref(double eps, bool rms) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &g = in[0], &x = in[1], &w = in[2];
    const int64_t c = x.type.shape.back();
    std::vector<double> dx(x.v.size()), dw(static_cast<size_t>(c), 0.0), db(static_cast<size_t>(c), 0.0);
    for (int64_t r = 0; r < x.type.numel() / c; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < c; ++i) mean += rms ? 0.0 : x.v[r * c + i] / c;
      for (int64_t i = 0; i < c; ++i) var += (x.v[r * c + i] - mean) * (x.v[r * c + i] - mean) / c;
      const double rstd = 1 / std::sqrt(var + eps);
      std::vector<double> xhat(static_cast<size_t>(c)), gw(static_cast<size_t>(c));
      double mean_gw = 0, mean_gw_xhat = 0;
      for (int64_t i = 0; i < c; ++i) {
        xhat[i] = (x.v[r * c + i] - mean) * rstd;
        gw[i] = g.v[r * c + i] * w.v[i];
        mean_gw += gw[i] / c;
        mean_gw_xhat += gw[i] * xhat[i] / c;
        dw[i] += g.v[r * c + i] * xhat[i];
        db[i] += g.v[r * c + i];
      }
      for (int64_t i = 0; i < c; ++i) dx[r * c + i] = rstd * (gw[i] - (rms ? 0.0 : mean_gw) - xhat[i] * mean_gw_xhat);
    }
    return rms ? Outputs{dx, dw} : Outputs{dx, dw, db};
  };
}

Outputs embedding_grad_ref(const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
  const Tensor &g = in[0], &ids = in[1];
  const int64_t c = out[0].shape[1];
  std::vector<double> table(static_cast<size_t>(out[0].numel()), 0.0);
  for (size_t i = 0; i < ids.v.size(); ++i)
    for (int64_t j = 0; j < c; ++j) table[static_cast<int64_t>(ids.v[i]) * c + j] += g.v[i * c + j];
  return {table};
}

Reference embedding_share_grad_ref(int64_t offset) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor &g = in[0], &ids = in[1];
    const int64_t rows = out[0].shape[0], c = out[0].shape[1];
    std::vector<double> table(static_cast<size_t>(out[0].numel()), 0.0);
    for (size_t i = 0; i < ids.v.size(); ++i) {
      const int64_t row = static_cast<int64_t>(ids.v[i]) - offset;
      if (row >= 0 && row < rows)
        for (int64_t j = 0; j < c; ++j) table[row * c + j] += g.v[i * c + j];
    }
    return Outputs{table};
  };
}

Reference slice_grad_ref(int64_t axis, int64_t start) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& g = in[0];
    const int64_t ax = axis < 0 ? axis + g.type.rank() : axis;
    std::vector<double> y(static_cast<size_t>(out[0].numel()), 0.0);
    for (int64_t f = 0; f < g.type.numel(); ++f)
      y[ravel(shifted(unravel(f, g.type.shape), ax, start), out[0].shape)] = g.v[f];
    return Outputs{y};
  };
}

// The group of x's element at `idx` (its index in the reduction's result,
// kept layout): the reduced axes set to 0.
int64_t group_of(Index idx, const Shape& shape, const std::vector<int64_t>& axes) {
  Shape kept = shape;
  for (int64_t a : axes) {
    const int64_t ax = a < 0 ? a + static_cast<int64_t>(shape.size()) : a;
    kept[ax] = 1;
    idx[ax] = 0;
  }
  return ravel(idx, kept);
}

// in = {g, x, y}: the maxima of each group share its gradient equally.
Reference reduce_max_grad_ref(std::vector<int64_t> axes) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &g = in[0], &x = in[1], &y = in[2];
    std::vector<double> ties(y.v.size(), 0.0), dx(x.v.size(), 0.0);
    for (int64_t f = 0; f < x.type.numel(); ++f) {
      const int64_t grp = group_of(unravel(f, x.type.shape), x.type.shape, axes);
      if (x.v[f] == y.v[grp]) ties[grp] += 1;
    }
    for (int64_t f = 0; f < x.type.numel(); ++f) {
      const int64_t grp = group_of(unravel(f, x.type.shape), x.type.shape, axes);
      if (x.v[f] == y.v[grp]) dx[f] = g.v[grp] / ties[grp];
    }
    return Outputs{dx};
  };
}

// reduce_max of x over `axes`: the operand y of reduce_max_grad.
Tensor reduce_max_of(const Tensor& x, const std::vector<int64_t>& axes, bool keep) {
  std::vector<bool> reduced(x.type.shape.size(), false);
  for (int64_t a : axes) reduced[a < 0 ? a + x.type.rank() : a] = true;
  Shape s;
  for (size_t d = 0; d < reduced.size(); ++d)
    if (!reduced[d] || keep) s.push_back(reduced[d] ? 1 : x.type.shape[d]);
  const TensorType t{DType::f64, s};
  return {t, reduce_ref(axes, Red::max)({x}, {t})[0]};
}

// softmax or log_softmax of x along `axis`, rounded to f32: the operand y of
// their gradients.
Tensor softmax_of(const Tensor& x, int64_t axis, bool log) {
  Tensor y{x.type, softmax_ref(axis, log)({x}, {x.type})[0]};
  for (double& v : y.v) v = static_cast<float>(v);
  return y;
}

// Both conv2d gradients, from the forward's sum written as a scatter: every
// product x * w of the forward adds g * w into dx and g * x into dw.
// in = {g, w} (input) or {g, x} (weight).
Reference conv2d_grad_ref(std::vector<int64_t> stride, std::vector<int64_t> pad, int64_t groups, bool input) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& g = in[0];
    const Shape xs = input ? out[0].shape : in[1].type.shape;
    const Shape ws = input ? in[1].type.shape : out[0].shape;
    const int64_t cg = ws[1], og = ws[0] / groups;
    std::vector<double> d(static_cast<size_t>(out[0].numel()), 0.0);
    for (int64_t f = 0; f < g.type.numel(); ++f) {
      const Index o = unravel(f, g.type.shape);  // n, oc, oy, ox
      const int64_t grp = o[1] / og;
      for (int64_t c = 0; c < cg; ++c)
        for (int64_t ky = 0; ky < ws[2]; ++ky)
          for (int64_t kx = 0; kx < ws[3]; ++kx) {
            const int64_t iy = o[2] * stride[0] - pad[0] + ky, ix = o[3] * stride[1] - pad[1] + kx;
            if (iy < 0 || iy >= xs[2] || ix < 0 || ix >= xs[3]) continue;
            const int64_t xi = ravel({o[0], grp * cg + c, iy, ix}, xs), wi = ravel({o[1], c, ky, kx}, ws);
            if (input)
              d[xi] += g.v[f] * in[1].v[wi];
            else
              d[wi] += g.v[f] * in[1].v[xi];
          }
    }
    return Outputs{d};
  };
}

// in = {g, x} (max: to the first maximum of each window, padding never
// wins) or {g} (avg: g / (kh * kw) to every element inside the window).
Reference pool_grad_ref(std::vector<int64_t> kernel, std::vector<int64_t> stride, std::vector<int64_t> pad, bool max) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    const Tensor& g = in[0];
    const Shape& xs = out[0].shape;
    std::vector<double> dx(static_cast<size_t>(out[0].numel()), 0.0);
    for (int64_t f = 0; f < g.type.numel(); ++f) {
      const Index o = unravel(f, g.type.shape);
      int64_t best = -1;
      for (int64_t ky = 0; ky < kernel[0]; ++ky)
        for (int64_t kx = 0; kx < kernel[1]; ++kx) {
          const int64_t iy = o[2] * stride[0] - pad[0] + ky, ix = o[3] * stride[1] - pad[1] + kx;
          if (iy < 0 || iy >= xs[2] || ix < 0 || ix >= xs[3]) continue;
          const int64_t i = ravel({o[0], o[1], iy, ix}, xs);
          if (!max)
            dx[i] += g.v[f] / static_cast<double>(kernel[0] * kernel[1]);
          else if (best < 0 || in[1].v[i] > in[1].v[best])
            best = i;
        }
      if (max) dx[best] += g.v[f];
    }
    return Outputs{dx};
  };
}

// in = {g, logits, targets}: g (softmax - onehot) / counted per counted row.
Reference cross_entropy_grad_ref(int64_t ignore) {
  return [=](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const Tensor &g = in[0], &logits = in[1], &targets = in[2];
    const int64_t v = logits.type.shape.back();
    int64_t counted = 0;
    for (double t : targets.v) counted += static_cast<int64_t>(t) != ignore;
    std::vector<double> dx(logits.v.size(), 0.0);
    for (size_t r = 0; r < targets.v.size(); ++r) {
      const auto t = static_cast<int64_t>(targets.v[r]);
      if (t == ignore) continue;
      double sum = 0;
      for (int64_t j = 0; j < v; ++j) sum += std::exp(logits.v[r * v + j]);
      for (int64_t j = 0; j < v; ++j)
        dx[r * v + j] = g.v[0] * (std::exp(logits.v[r * v + j]) / sum - (j == t ? 1.0 : 0.0)) / counted;
    }
    return Outputs{dx};
  };
}

// ---------------------------------------------------------------------------
// attention: the whole T x T score matrix of each head, in plain loops.
// Element (n, i, x) of head n's [T, D] is at(n, i, x): q [..., H, T, D], or
// [..., T, H, D] under layout "bthd"; lse is [..., H, T] either way.

struct AttentionRef {
  int64_t heads, t, d;
  int64_t inner;  // H under "bthd", else 1
  double scale;
  bool causal;
  bool visible(int64_t i, int64_t j) const { return !causal || j <= i; }
  int64_t at(int64_t n, int64_t i, int64_t x) const { return ((n / inner * t + i) * inner + n % inner) * d + x; }
};

AttentionRef attention_geometry(const TensorType& q, const std::vector<OpAttrs::Entry>& attrs) {
  bool bthd = false;
  for (const OpAttrs::Entry& e : attrs) bthd = bthd || (e.name == "layout" && e.string == "bthd");
  const int64_t r = q.rank();
  AttentionRef a{0, q.shape[r - (bthd ? 3 : 2)], q.shape.back(), bthd ? q.shape[r - 2] : 1,
                 1 / std::sqrt(static_cast<double>(q.shape.back())), false};
  a.heads = q.numel() / (a.t * a.d);
  for (const OpAttrs::Entry& e : attrs) {
    if (e.name == "scale") a.scale = e.real;
    if (e.name == "causal") a.causal = e.boolean;
  }
  return a;
}

// o and lse of softmax(q k^T * scale, masked) v.
std::pair<std::vector<double>, std::vector<double>> attention_of(const AttentionRef& a, const std::vector<double>& q,
                                                                 const std::vector<double>& k,
                                                                 const std::vector<double>& v) {
  const int64_t t = a.t, d = a.d;
  std::vector<double> o(q.size()), lse(static_cast<size_t>(a.heads * t)), s(static_cast<size_t>(t));
  for (int64_t n = 0; n < a.heads; ++n) {
    for (int64_t i = 0; i < t; ++i) {
      double mx = -INFINITY;
      for (int64_t j = 0; j < t; ++j) {
        double dot = 0;
        for (int64_t x = 0; x < d; ++x) dot += q[a.at(n, i, x)] * k[a.at(n, j, x)];
        s[j] = a.visible(i, j) ? dot * a.scale : -INFINITY;
        mx = std::max(mx, s[j]);
      }
      double sum = 0;
      for (int64_t j = 0; j < t; ++j) sum += std::exp(s[j] - mx);
      for (int64_t x = 0; x < d; ++x) {
        double acc = 0;
        for (int64_t j = 0; j < t; ++j) acc += std::exp(s[j] - mx) / sum * v[a.at(n, j, x)];
        o[a.at(n, i, x)] = acc;
      }
      lse[n * t + i] = mx + std::log(sum);
    }
  }
  return {o, lse};
}

// Grouped-query attention's k or v (size 1 on axes where q has several
// heads) copied to every head that shares it, as Hugging Face's repeat_kv
// does: `to` is q's type with k's positions. Without groups, a copy.
std::vector<double> repeat_keys(const Tensor& k, Shape to) {
  to[to.size() - 2] = k.type.shape[k.type.rank() - 2];
  std::vector<double> out(static_cast<size_t>(TensorType{DType::f64, to}.numel()));
  for (size_t f = 0; f < out.size(); ++f) out[f] = broadcast_at(k, unravel(static_cast<int64_t>(f), to));
  return out;
}

// The gradient of repeat_keys: every copy's rows summed into the head they
// came from.
std::vector<double> sum_repeats(const std::vector<double>& grad, const Shape& from, const TensorType& k) {
  std::vector<double> out(static_cast<size_t>(k.numel()), 0.0);
  for (size_t f = 0; f < grad.size(); ++f) {
    Index idx = unravel(static_cast<int64_t>(f), from);
    for (size_t a = 0; a < idx.size(); ++a)
      if (k.shape[a] == 1) idx[a] = 0;
    out[static_cast<size_t>(ravel(idx, k.shape))] += grad[f];
  }
  return out;
}

Reference attention_ref(std::vector<OpAttrs::Entry> attrs) {
  return [attrs](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const AttentionRef a = attention_geometry(in[0].type, attrs);
    const Shape& to = in[0].type.shape;
    auto [o, lse] = attention_of(a, in[0].v, repeat_keys(in[1], to), repeat_keys(in[2], to));
    return Outputs{o, lse};
  };
}

// cached_attention: N new queries at positions P .. P + N - 1 over the first
// P cached keys and values and the new ones are rows P .. P + N - 1 of a
// causal attention over the whole sequence of P + N positions (whose first P
// queries are never read: zeros here).
Reference cached_attention_ref(std::vector<OpAttrs::Entry> attrs) {
  return [attrs](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const AttentionRef fresh = attention_geometry(in[0].type, attrs);
    const Shape& to = in[0].type.shape;
    Shape cache_shape = to;  // the caches repeated to every query head, as k and v
    cache_shape[cache_shape.size() - (fresh.inner > 1 ? 3 : 2)] = in[3].type.shape[in[3].type.rank() - (fresh.inner > 1 ? 3 : 2)];
    const AttentionRef cache = attention_geometry(TensorType{DType::f64, cache_shape}, attrs);
    const std::vector<double> k_new = repeat_keys(in[1], to), v_new = repeat_keys(in[2], to);
    const std::vector<double> k_cache = fresh.inner > 1 ? in[3].v : repeat_keys(in[3], to);
    const std::vector<double> v_cache = fresh.inner > 1 ? in[4].v : repeat_keys(in[4], to);
    const auto filled = static_cast<int64_t>(in[5].v[0]);
    const int64_t n = fresh.t, whole_t = filled + n;
    AttentionRef whole = fresh;
    whole.t = whole_t;
    whole.causal = true;
    const size_t whole_size = static_cast<size_t>(fresh.heads * whole_t * fresh.d);
    std::vector<double> q(whole_size, 0.0), k(whole_size), v(whole_size);
    for (int64_t h = 0; h < fresh.heads; ++h)
      for (int64_t i = 0; i < whole_t; ++i)
        for (int64_t x = 0; x < fresh.d; ++x) {
          const bool cached = i < filled;
          const int64_t from = cached ? cache.at(h, i, x) : fresh.at(h, i - filled, x);
          k[whole.at(h, i, x)] = (cached ? k_cache : k_new)[static_cast<size_t>(from)];
          v[whole.at(h, i, x)] = (cached ? v_cache : v_new)[static_cast<size_t>(from)];
          if (!cached) q[whole.at(h, i, x)] = in[0].v[from];
        }
    const std::vector<double> o_whole = attention_of(whole, q, k, v).first;
    std::vector<double> o(in[0].v.size());
    for (int64_t h = 0; h < fresh.heads; ++h)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t x = 0; x < fresh.d; ++x) o[fresh.at(h, i, x)] = o_whole[whole.at(h, filled + i, x)];
    return Outputs{o};
  };
}

// dq, dk, dv from g, q, k, v and the forward's o and lse (p = exp(s - lse),
// delta_i = g_i . o_i): dv = p^T g, ds = p (g v^T - delta), dq = scale ds k,
// dk = scale ds^T q.
Reference attention_grad_ref(std::vector<OpAttrs::Entry> attrs) {
  return [attrs](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const AttentionRef a = attention_geometry(in[1].type, attrs);
    const Shape& to = in[1].type.shape;
    const std::vector<double> k = repeat_keys(in[2], to), v = repeat_keys(in[3], to);
    const std::vector<double>&g = in[0].v, &q = in[1].v, &o = in[4].v, &lse = in[5].v;
    const int64_t t = a.t, d = a.d;
    std::vector<double> dq(q.size(), 0.0), dk(q.size(), 0.0), dv(q.size(), 0.0);
    for (int64_t n = 0; n < a.heads; ++n) {
      for (int64_t i = 0; i < t; ++i) {
        double delta = 0;
        for (int64_t x = 0; x < d; ++x) delta += g[a.at(n, i, x)] * o[a.at(n, i, x)];
        for (int64_t j = 0; j < t; ++j) {
          if (!a.visible(i, j)) continue;
          double s = 0, dp = 0;
          for (int64_t x = 0; x < d; ++x) {
            s += q[a.at(n, i, x)] * k[a.at(n, j, x)];
            dp += g[a.at(n, i, x)] * v[a.at(n, j, x)];
          }
          const double p = std::exp(s * a.scale - lse[n * t + i]);
          const double ds = p * (dp - delta) * a.scale;
          for (int64_t x = 0; x < d; ++x) {
            dv[a.at(n, j, x)] += p * g[a.at(n, i, x)];
            dq[a.at(n, i, x)] += ds * k[a.at(n, j, x)];
            dk[a.at(n, j, x)] += ds * q[a.at(n, i, x)];
          }
        }
      }
    }
    return Outputs{dq, sum_repeats(dk, to, in[2].type), sum_repeats(dv, to, in[3].type)};
  };
}

// ---------------------------------------------------------------------------
// The cases, per op. Shapes are small but chosen to reach every path of the
// kernels: broadcasting of each kind, transposes, batch dims, keepdims, groups,
// padding, ignore_index, tails longer than a vector register.

struct OpCase {
  OpKind op;
  Case c;
};

std::vector<OpCase> all_cases() {
  std::vector<OpCase> cs;
  Gen g(20240607);
  const DType f64 = DType::f64;
  auto add = [&](OpKind op, Case c) { cs.push_back({op, std::move(c)}); };

  // Sources.
  add(OpKind::constant, {"f64 fill", {}, {real_attr("value", 1.5)}, {{f64, {2, 3}}}, fill_ref(1.5)});
  add(OpKind::constant, {"i32 fill", {}, {real_attr("value", -7)}, {{DType::i32, {5}}}, fill_ref(-7)});
  add(OpKind::constant, {"bool fill", {}, {real_attr("value", 1)}, {{DType::boolean, {3}}}, fill_ref(1)});
  add(OpKind::dim_value, {"scalar", {}, {dim_attr("value", 384)}, {{f64, {}}}, fill_ref(384)});
  add(OpKind::causal_mask, {"batched", {}, {}, {{DType::boolean, {2, 5, 5}}}, causal_mask_ref});
  add(OpKind::causal_mask, {"one matrix", {}, {}, {{DType::boolean, {3, 3}}}, causal_mask_ref});

  // matmul: plain, each transpose, the collapsed [B*T, K] x [K, N] path,
  // batch broadcasting both ways, a broadcast left operand, K = 0.
  struct Mm {
    const char* name;
    Shape a, b;
    bool ta, tb;
  };
  for (const Mm& m : std::vector<Mm>{{"plain", {3, 4}, {4, 5}, false, false},
                                     {"transpose_a", {4, 3}, {4, 5}, true, false},
                                     {"transpose_b", {3, 4}, {5, 4}, false, true},
                                     {"both transposed", {4, 3}, {5, 4}, true, true},
                                     {"batched left, rank-2 right (one GEMM)", {2, 3, 4, 5}, {5, 6}, false, false},
                                     {"batched left, rank-2 right transposed", {2, 3, 5}, {4, 5}, false, true},
                                     {"batched transposed left, rank-2 right", {2, 4, 3}, {4, 5}, true, false},
                                     {"same batch", {2, 3, 4}, {2, 4, 5}, false, false},
                                     {"batch broadcast", {2, 1, 3, 4}, {3, 4, 5}, false, false},
                                     {"batch broadcast, transposed", {2, 1, 4, 3}, {3, 5, 4}, true, true},
                                     {"rank-2 left, batched right", {3, 4}, {2, 4, 5}, false, false},
                                     {"empty contraction", {2, 0}, {0, 3}, false, false}}) {
    std::vector<OpAttrs::Entry> attrs;
    if (m.ta) attrs.push_back(bool_attr("transpose_a", true));
    if (m.tb) attrs.push_back(bool_attr("transpose_b", true));
    add(OpKind::matmul, {m.name, {g.uniform(m.a), g.uniform(m.b)}, attrs, {}, matmul_ref(m.ta, m.tb)});
  }

  // Binary ops: same shape (with a tail), a bias on the last axis, a column
  // [.., 1], both sides broadcast, a scalar on either side, an outer product.
  struct Bin {
    OpKind op;
    std::function<double(double, double)> f;
  };
  for (const Bin& b : std::vector<Bin>{{OpKind::add, std::plus<double>()},
                                       {OpKind::sub, std::minus<double>()},
                                       {OpKind::mul, std::multiplies<double>()},
                                       {OpKind::div, std::divides<double>()}}) {
    // Divisors stay away from 0.
    const double lo = b.op == OpKind::div ? 0.5 : -2;
    const std::vector<std::pair<Shape, Shape>> shapes = {
        {{2, 3, 7}, {2, 3, 7}}, {{2, 3, 8}, {8}}, {{2, 3, 5}, {2, 3, 1}}, {{2, 1, 4}, {3, 1}},
        {{}, {2, 3}},           {{4, 5}, {}},     {{3, 1}, {1, 4}},       {{1, 3, 1, 2}, {2, 1, 4, 1}}};
    for (const auto& [sa, sb] : shapes)
      add(b.op, {TensorType{f64, sa}.str() + " with " + TensorType{f64, sb}.str(),
                 {g.uniform(sa), g.uniform(sb, lo, 2)},
                 {},
                 {},
                 binary_ref(b.f)});
  }
  const Reference where_ref = [](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    return map_ref(in, out[0], [](const std::vector<double>& a) { return a[0] != 0 ? a[1] : a[2]; });
  };
  add(OpKind::where, {"same shape", {g.bools({3, 9}), g.uniform({3, 9}), g.uniform({3, 9})}, {}, {}, where_ref});
  add(OpKind::where, {"mask against scalars", {g.bools({2, 4, 4}), g.uniform({}), g.uniform({})}, {}, {}, where_ref});
  add(OpKind::where, {"mask, tensor, scalar", {g.bools({4, 6}), g.uniform({4, 6}), g.uniform({})}, {}, {}, where_ref});
  add(OpKind::where, {"all broadcast", {g.bools({2, 1, 4}), g.uniform({3, 1}), g.uniform({})}, {}, {}, where_ref});

  // Unary ops, on 3 x 7 (a tail after whole vectors); log, sqrt, rsqrt on positives.
  struct Un {
    OpKind op;
    std::function<double(double)> f;
    bool positive;
  };
  for (const Un& u : std::vector<Un>{
           {OpKind::neg, [](double x) { return -x; }, false},
           {OpKind::exp, [](double x) { return std::exp(x); }, false},
           {OpKind::log, [](double x) { return std::log(x); }, true},
           {OpKind::sqrt, [](double x) { return std::sqrt(x); }, true},
           {OpKind::rsqrt, [](double x) { return 1 / std::sqrt(x); }, true},
           {OpKind::tanh, [](double x) { return std::tanh(x); }, false},
           {OpKind::sigmoid, [](double x) { return 1 / (1 + std::exp(-x)); }, false},
           {OpKind::relu, [](double x) { return x > 0 ? x : 0; }, false},
           {OpKind::gelu,
            [](double x) {
              return 0.5 * x * (1 + std::tanh(std::sqrt(2 / std::numbers::pi) * (x + 0.044715 * x * x * x)));
            },
            false},
           {OpKind::gelu_erf, [](double x) { return 0.5 * x * (1 + std::erf(x / std::numbers::sqrt2)); }, false},
           {OpKind::silu, [](double x) { return x / (1 + std::exp(-x)); }, false}}) {
    add(u.op, {"3x7", {u.positive ? g.uniform({3, 7}, 0.1, 3) : g.uniform({3, 7}, -4, 4)}, {}, {}, unary_ref(u.f)});
  }
  for (double e : {2.0, 3.0, 0.5, -1.0, 1.0, -1.5, 2.5})
    add(OpKind::pow, {"exponent " + std::to_string(e),
                      {g.uniform({3, 7}, 0.1, 3)},
                      {real_attr("exponent", e)},
                      {},
                      unary_ref([e](double x) { return std::pow(x, e); })});
  add(OpKind::pow,
      {"square of negatives", {g.uniform({9}, -3, 3)}, {real_attr("exponent", 2)}, {}, unary_ref([](double x) {
         return x * x;
       })});

  add(OpKind::dropout,
      {"p=0.3", {g.uniform({4, 50})}, {real_attr("p", 0.3), dim_attr("seed", 42)}, {}, dropout_ref(0.3, 42)});
  add(OpKind::dropout,
      {"p=0 keeps all", {g.uniform({3, 5})}, {real_attr("p", 0), dim_attr("seed", 7)}, {}, dropout_ref(0, 7)});

  // cast: float to each integer (truncation and saturation), to bool, and back.
  const Tensor to_cast = values(f64, {8}, {1.75, -2.5, 3, 0, -0.25, 1e10, -1e10, 2.5e9});
  add(OpKind::cast, {"float to i32", {to_cast}, {dtype_attr("to", DType::i32)}, {}, cast_ref(DType::i32)});
  add(OpKind::cast, {"float to i64", {to_cast}, {dtype_attr("to", DType::i64)}, {}, cast_ref(DType::i64)});
  add(OpKind::cast, {"float to bool", {to_cast}, {dtype_attr("to", DType::boolean)}, {}, cast_ref(DType::boolean)});
  add(OpKind::cast,
      {"i32 to float", {g.ints(DType::i32, {2, 5}, -1000, 1000)}, {dtype_attr("to", f64)}, {}, cast_ref(f64)});
  add(OpKind::cast,
      {"i64 to i32", {g.ints(DType::i64, {6}, -1000, 1000)}, {dtype_attr("to", DType::i32)}, {}, cast_ref(DType::i32)});
  add(OpKind::cast, {"bool to float", {g.bools({7})}, {dtype_attr("to", f64)}, {}, cast_ref(f64)});
  add(OpKind::cast, {"float to float", {g.uniform({5})}, {dtype_attr("to", f64)}, {}, cast_ref(f64)});

  // softmax and log_softmax over the last axis, a middle one and the first.
  for (OpKind op : {OpKind::softmax, OpKind::log_softmax}) {
    const bool log = op == OpKind::log_softmax;
    add(op, {"last axis (default)", {g.uniform({3, 11}, -5, 5)}, {}, {}, softmax_ref(-1, log)});
    add(op, {"middle axis", {g.uniform({2, 5, 6}, -5, 5)}, {dim_attr("axis", 1)}, {}, softmax_ref(1, log)});
    add(op, {"first axis", {g.uniform({4, 3, 2}, -5, 5)}, {dim_attr("axis", -3)}, {}, softmax_ref(0, log)});
  }

  add(OpKind::layernorm,
      {"default eps", {g.uniform({2, 3, 10}), g.uniform({10}), g.uniform({10})}, {}, {}, layernorm_ref(1e-5)});
  add(OpKind::layernorm, {"eps and a large mean",
                          {g.uniform({4, 9}, 99, 101), g.uniform({9}), g.uniform({9})},
                          {real_attr("eps", 1e-3)},
                          {},
                          layernorm_ref(1e-3)});
  add(OpKind::rmsnorm, {"default eps", {g.uniform({3, 12}), g.uniform({12})}, {}, {}, rmsnorm_ref(1e-6)});
  add(OpKind::rmsnorm, {"eps", {g.uniform({2, 2, 5}), g.uniform({5})}, {real_attr("eps", 0.1)}, {}, rmsnorm_ref(0.1)});

  // rope: heads before positions (the default axis), positions before
  // heads (axis 1), and given positions far along, in i32 and i64.
  Gen rope_inputs(31);  // its own stream: the cases after these keep their inputs
  add(OpKind::rope, {"[B, H, T, D]", {rope_inputs.uniform({2, 3, 5, 8})}, {}, {}, rope_ref(-2, 10000, false)});
  add(OpKind::rope, {"[B, T, H, D], axis 1, theta 500",
                     {rope_inputs.uniform({2, 6, 3, 4})},
                     {dim_attr("axis", 1), real_attr("theta", 500)},
                     {},
                     rope_ref(1, 500, false)});
  add(OpKind::rope, {"inverse", {rope_inputs.uniform({3, 4, 6})}, {bool_attr("inverse", true)}, {},
                     rope_ref(-2, 10000, true)});
  add(OpKind::rope, {"i32 positions after a cache",
                     {rope_inputs.uniform({2, 4, 6}), values(DType::i32, {4}, {7, 8, 9, 10})},
                     {},
                     {},
                     rope_ref(-2, 10000, false)});
  add(OpKind::rope, {"i64 positions, far along",
                     {rope_inputs.uniform({1, 2, 4, 10}), values(DType::i64, {4}, {4000, 1, 0, 250})},
                     {},
                     {},
                     rope_ref(-2, 10000, false)});

  struct Att {
    const char* name;
    Shape shape;
    std::vector<OpAttrs::Entry> attrs;
  };
  // T = 70 crosses the kernels' 64-row tiles; T = 1 has one key. Under
  // layout "bthd" q is [B, T, H, D]: rows of a head lie H * D apart.
  for (const Att& a : std::vector<Att>{
           {"causal, two batch axes, rows past a tile", {2, 2, 70, 5}, {bool_attr("causal", true), real_attr("scale", 0.3)}},
           {"not causal, default scale", {3, 9, 4}, {}},
           {"causal, one row", {2, 1, 3}, {bool_attr("causal", true)}},
           {"bthd, causal, rows past a tile", {2, 70, 3, 5}, {bool_attr("causal", true), string_attr("layout", "bthd")}},
           {"bthd, not causal, no batch axis", {9, 2, 4}, {real_attr("scale", 0.6), string_attr("layout", "bthd")}},
           {"bhtd written", {2, 5, 3}, {string_attr("layout", "bhtd")}}}) {
    add(OpKind::attention, {a.name, {g.uniform(a.shape), g.uniform(a.shape), g.uniform(a.shape)}, a.attrs, {},
                            attention_ref(a.attrs)});
    Tensor q = g.uniform(a.shape), k = g.uniform(a.shape), v = g.uniform(a.shape);
    const auto forward = attention_of(attention_geometry(q.type, a.attrs), q.v, k.v, v.v);
    Shape rows(a.shape.begin(), a.shape.end() - 1);  // lse: [..., H, T]
    if (attention_geometry(q.type, a.attrs).inner > 1) std::swap(rows[rows.size() - 1], rows[rows.size() - 2]);
    add(OpKind::attention_grad, {a.name,
                                 {g.uniform(a.shape), q, k, v, values(f64, a.shape, forward.first),
                                  values(f64, rows, forward.second)},
                                 a.attrs,
                                 {},
                                 attention_grad_ref(a.attrs)});
  }

  // Grouped-query attention: k and v with size 1 on a heads axis of q (two
  // groups of three heads; one key head for all, as multi-query attention),
  // rows past a tile.
  struct Grouped {
    const char* name;
    Shape q, k;
    std::vector<OpAttrs::Entry> attrs;
  };
  Gen grouped_inputs(37);  // its own stream: the cases after these keep their inputs
  for (const Grouped& c : std::vector<Grouped>{
           {"grouped, causal", {2, 2, 3, 6, 4}, {2, 2, 1, 6, 4}, {bool_attr("causal", true)}},
           {"multi-query, not causal", {1, 4, 5, 3}, {1, 1, 5, 3}, {real_attr("scale", 0.7)}},
           {"grouped, causal, rows past a tile", {1, 2, 2, 70, 3}, {1, 2, 1, 70, 3}, {bool_attr("causal", true)}}}) {
    Gen& r = grouped_inputs;
    add(OpKind::attention, {c.name, {r.uniform(c.q), r.uniform(c.k), r.uniform(c.k)}, c.attrs, {}, attention_ref(c.attrs)});
    const Tensor q = r.uniform(c.q), k = r.uniform(c.k), v = r.uniform(c.k);
    const auto forward = attention_of(attention_geometry(q.type, c.attrs), q.v, repeat_keys(k, c.q), repeat_keys(v, c.q));
    add(OpKind::attention_grad, {c.name,
                                 {r.uniform(c.q), q, k, v, values(f64, c.q, forward.first),
                                  values(f64, Shape(c.q.begin(), c.q.end() - 1), forward.second)},
                                 c.attrs,
                                 {},
                                 attention_grad_ref(c.attrs)});
  }

  // cached_attention: one token after 69 cached, a prompt read into an empty
  // cache, and several tokens after some (forty: the cache read in several
  // tiles), in both layouts; the cache's rows past the filled ones are never
  // read.
  struct Cached {
    const char* name;
    Shape fresh, cache;
    int64_t filled;
    std::vector<OpAttrs::Entry> attrs;
    Shape keys = {};  // k and v where they are fewer heads than q's (grouped)
  };
  Gen cached_inputs(29);  // its own stream: the cases after these keep their inputs
  for (const Cached& c : std::vector<Cached>{
           {"one token after a tile and more", {2, 2, 1, 5}, {2, 2, 80, 5}, 69, {real_attr("scale", 0.3)}},
           {"a prompt into an empty cache", {2, 70, 4}, {2, 72, 4}, 0, {}},
           {"bthd, three tokens after five", {1, 3, 2, 4}, {1, 16, 2, 4}, 5, {string_attr("layout", "bthd")}},
           {"bthd, the last positions", {2, 4, 3, 2}, {2, 9, 3, 2}, 5, {string_attr("layout", "bthd")}},
           {"bthd, forty tokens after a hundred: the cache in tiles", {1, 40, 2, 3}, {1, 150, 2, 3}, 100,
            {string_attr("layout", "bthd")}},
           {"grouped, two tokens after nine", {1, 2, 3, 2, 4}, {1, 2, 1, 20, 4}, 9, {}, {1, 2, 1, 2, 4}}}) {
    const int64_t n = attention_geometry({f64, c.fresh}, c.attrs).t;
    const Shape keys = c.keys.empty() ? c.fresh : c.keys;
    std::vector<double> positions(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) positions[static_cast<size_t>(i)] = static_cast<double>(c.filled + i);
    Gen& r = cached_inputs;
    add(OpKind::cached_attention, {c.name,
                                   {r.uniform(c.fresh), r.uniform(keys), r.uniform(keys), r.uniform(c.cache),
                                    r.uniform(c.cache), values(DType::i32, {n}, positions)},
                                   c.attrs,
                                   {},
                                   cached_attention_ref(c.attrs)});
  }

  add(OpKind::embedding,
      {"i32 ids", {g.uniform({10, 4}), values(DType::i32, {2, 3}, {0, 9, 3, 3, 1, 9})}, {}, {}, embedding_ref});
  add(OpKind::embedding, {"i64 ids", {g.uniform({6, 3}), g.ints(DType::i64, {5}, 0, 5)}, {}, {}, embedding_ref});
  add(OpKind::embedding, {"rows 4..8 of 12: ids below, inside, above",
                          {g.uniform({4, 3}), values(DType::i32, {2, 3}, {0, 4, 7, 8, 11, 5})},
                          {dim_attr("offset", 4), dim_attr("vocab", 12)},
                          {},
                          embedding_share_ref(4)});

  // Mixture of experts: 7 tokens over 4 experts. Every slot for every token
  // (no drops), 3 slots (the second choices of the last tokens dropped),
  // equal logits (ties to the lower expert), all experts per token, and the
  // Switch gate (a softmax over every expert).
  const Tensor router = g.uniform({7, 4}, -3, 3);
  const Tensor tied = values(f64, {3, 4}, {1, 2, 2, 0, 0.5, 0.5, 0.5, 0.5, -1, 3, -1, 3});
  add(OpKind::moe_route, {"top 2, dropless", {router}, {dim_attr("top_k", 2)}, {}, moe_route_ref(2)});
  add(OpKind::moe_route, {"top 2, capacity factor 0.6: 3 slots",
                          {router},
                          {dim_attr("top_k", 2), real_attr("capacity_factor", 0.6)},
                          {},
                          moe_route_ref(2)});
  add(OpKind::moe_route, {"top 2, 3 slots, the likeliest kept",
                          {router},
                          {dim_attr("top_k", 2), real_attr("capacity_factor", 0.6), string_attr("drop", "probs")},
                          {},
                          moe_route_ref(2, true)});
  add(OpKind::moe_route, {"equal logits", {tied}, {dim_attr("top_k", 3)}, {}, moe_route_ref(3)});
  add(OpKind::moe_route, {"top 1 of 4, 1 slot", {router}, {dim_attr("top_k", 1), real_attr("capacity_factor", 0.1)},
                          {}, moe_route_ref(1)});
  add(OpKind::moe_load, {"top 2", {router}, {dim_attr("top_k", 2)}, {}, moe_load_ref(2)});
  add(OpKind::moe_load, {"equal logits, top 3", {tied}, {dim_attr("top_k", 3)}, {}, moe_load_ref(3)});
  const Tensor dropless = moe_route_of(router, 2, 7), dropping = moe_route_of(router, 2, 3);
  const Tensor switched = moe_route_of(router, 1, 3), every = moe_route_of(router, 4, 7);
  add(OpKind::moe_gates, {"top 2, dropless", {router, dropless}, {dim_attr("top_k", 2)}, {}, moe_gates_ref(2, true)});
  add(OpKind::moe_gates,
      {"top 2, dropped choices", {router, dropping}, {dim_attr("top_k", 2)}, {}, moe_gates_ref(2, true)});
  add(OpKind::moe_gates, {"top 4 of 4", {router, every}, {dim_attr("top_k", 4)}, {}, moe_gates_ref(4, true)});
  add(OpKind::moe_gates, {"switch: top 1, softmax over all",
                          {router, switched},
                          {dim_attr("top_k", 1), bool_attr("renormalize", false)},
                          {},
                          moe_gates_ref(1, false)});
  add(OpKind::moe_dispatch, {"dropless", {g.uniform({7, 5}), dropless}, {}, {}, moe_dispatch_ref});
  add(OpKind::moe_dispatch, {"empty slots", {g.uniform({7, 3}), dropping}, {}, {}, moe_dispatch_ref});
  add(OpKind::moe_combine,
      {"weighed", {g.uniform({4, 7, 5}), dropless, g.uniform({4, 7})}, {dim_attr("tokens", 7)}, {}, moe_combine_ref});
  // Expert 0 fills 3 of its 3 slots when dropping and some experts fewer.
  // Dropless: 14 choices in 28 slots, so every expert has slots past its last in use.
  const Tensor slots_a = g.uniform({4, 7, 5}, -6, 6), slots_b = g.uniform({4, 7, 5});
  add(OpKind::swiglu, {"3x7", {g.uniform({3, 7}, -8, 8), g.uniform({3, 7})}, {}, {}, swiglu_ref(false)});
  add(OpKind::swiglu, {"slots in use", {slots_a, slots_b, dropless}, {}, {}, swiglu_ref(false)});
  add(OpKind::swiglu_grad,
      {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -8, 8), g.uniform({3, 7})}, {}, {}, swiglu_ref(true)});
  add(OpKind::swiglu_grad,
      {"slots in use", {g.uniform({4, 7, 5}), slots_a, slots_b, dropless}, {}, {}, swiglu_ref(true)});
  add(OpKind::moe_matmul,
      {"slots in use", {g.uniform({4, 3, 5}), g.uniform({4, 5, 6}), dropping}, {}, {}, moe_matmul_ref(false, false)});
  add(OpKind::moe_matmul, {"transpose_b",
                           {g.uniform({4, 7, 5}), g.uniform({4, 6, 5}), dropless},
                           {bool_attr("transpose_b", true)},
                           {},
                           moe_matmul_ref(false, true)});
  add(OpKind::moe_matmul, {"transpose_a: summed over the slots in use",
                           {g.uniform({4, 3, 5}), g.uniform({4, 3, 2}), dropping},
                           {bool_attr("transpose_a", true)},
                           {},
                           moe_matmul_ref(true, false)});
  add(OpKind::moe_combine, {"unweighed, empty slots, a token in none",
                            {g.uniform({4, 3, 2}), dropping},
                            {dim_attr("tokens", 7)},
                            {},
                            moe_combine_ref});

  // Movement.
  // A reshape keeps the row-major order of the values.
  const Reference same_values = [](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    return Outputs{in[0].v};
  };
  add(OpKind::reshape, {"f64", {g.uniform({2, 3, 4})}, {dims_attr("shape", {4, -1})}, {}, same_values});
  add(OpKind::reshape, {"i32", {g.ints(DType::i32, {2, 6}, -9, 9)}, {dims_attr("shape", {12})}, {}, same_values});
  // Over a group of one rank, both meeting points of tensor parallelism hand
  // their operand on.
  add(OpKind::tp_copy, {"one rank", {g.uniform({3, 5})}, {}, {}, same_values});
  add(OpKind::tp_reduce, {"one rank", {g.uniform({2, 3, 4})}, {}, {}, same_values});
  add(OpKind::tp_max, {"one rank", {g.uniform({4, 3})}, {}, {}, same_values});
  // A group of one rank holds all the tokens: every sequence-parallel op hands them on.
  for (OpKind op : {OpKind::tp_reduce_scatter, OpKind::tp_all_gather, OpKind::tp_scatter, OpKind::tp_gather,
                    OpKind::ep_all_gather, OpKind::ep_reduce_scatter})
    add(op, {"one rank",
             {g.uniform({2, 3, 4})},
             {dim_attr("axis", 1), dim_attr("size", 3), dim_attr("rank", 0), dim_attr("ranks", 1)},
             {},
             same_values});
  struct Tr {
    const char* name;
    Shape s;
    std::vector<int64_t> perm;
  };
  for (const Tr& t : std::vector<Tr>{{"rows stay contiguous", {2, 3, 4, 5}, {0, 2, 1, 3}},
                                     {"2-D tiles, ragged", {3, 40, 33}, {0, 2, 1}},
                                     {"rotation", {2, 3, 4}, {2, 0, 1}},
                                     {"negative entries", {2, 3, 4}, {-1, 0, -2}},
                                     {"identity", {3, 4}, {0, 1}},
                                     {"size-1 dims", {1, 3, 1, 4}, {3, 2, 0, 1}}})
    add(OpKind::transpose, {t.name, {g.uniform(t.s)}, {dims_attr("perm", t.perm)}, {}, transpose_ref(t.perm)});
  add(OpKind::transpose, {"bool", {g.bools({3, 5})}, {dims_attr("perm", {1, 0})}, {}, transpose_ref({1, 0})});
  add(OpKind::slice, {"middle axis",
                      {g.uniform({3, 5, 4})},
                      {dim_attr("axis", 1), dim_attr("start", 1), dim_attr("end", 4)},
                      {},
                      slice_ref(1, 1)});
  add(OpKind::slice, {"last axis",
                      {g.uniform({3, 5})},
                      {dim_attr("axis", -1), dim_attr("start", 2), dim_attr("end", 5)},
                      {},
                      slice_ref(-1, 2)});
  add(OpKind::slice, {"first axis, i64",
                      {g.ints(DType::i64, {4, 3}, -5, 5)},
                      {dim_attr("axis", 0), dim_attr("start", 1), dim_attr("end", 3)},
                      {},
                      slice_ref(0, 1)});
  add(OpKind::concat, {"middle axis, three operands",
                       {g.uniform({2, 1, 3}), g.uniform({2, 2, 3}), g.uniform({2, 3, 3})},
                       {dim_attr("axis", 1)},
                       {},
                       concat_ref(1)});
  add(OpKind::concat, {"first axis", {g.uniform({1, 4}), g.uniform({2, 4})}, {dim_attr("axis", 0)}, {}, concat_ref(0)});
  add(OpKind::concat,
      {"last axis", {g.uniform({3, 2}), g.uniform({3, 1})}, {dim_attr("axis", -1)}, {}, concat_ref(-1)});
  add(OpKind::split,
      {"middle axis", {g.uniform({2, 6, 3})}, {dim_attr("axis", 1), dims_attr("sizes", {1, 2, 3})}, {}, split_ref(1)});
  add(OpKind::split, {"last axis with an empty part",
                      {g.uniform({4, 3})},
                      {dim_attr("axis", -1), dims_attr("sizes", {2, 0, 1})},
                      {},
                      split_ref(-1)});

  // Reductions: rows, columns, alternating axes, everything, keepdims.
  struct Rd {
    const char* name;
    Shape s;
    std::vector<int64_t> axes;
    bool keep;
  };
  for (const Rd& r : std::vector<Rd>{{"last axis", {2, 3, 9}, {-1}, false},
                                     {"first axis, keepdims", {6, 5}, {0}, true},
                                     {"outer and inner", {2, 3, 4}, {0, 2}, false},
                                     {"middle, keepdims", {2, 3, 4}, {1}, true},
                                     {"alternating", {3, 4, 5, 6}, {0, 2}, false},
                                     {"everything", {2, 3, 4}, {0, 1, 2}, false},
                                     {"size-1 axis", {4, 1, 3}, {1}, false}}) {
    std::vector<OpAttrs::Entry> attrs = {dims_attr("axes", r.axes)};
    if (r.keep) attrs.push_back(bool_attr("keepdims", true));
    add(OpKind::reduce_sum, {r.name, {g.uniform(r.s)}, attrs, {}, reduce_ref(r.axes, Red::sum)});
    add(OpKind::reduce_mean, {r.name, {g.uniform(r.s)}, attrs, {}, reduce_ref(r.axes, Red::mean)});
    add(OpKind::reduce_max, {r.name, {g.uniform(r.s)}, attrs, {}, reduce_ref(r.axes, Red::max)});
  }

  // conv2d: groups with stride, padding and bias; 1x1 without bias (read
  // directly); depthwise; a rectangular kernel.
  struct Cv {
    const char* name;
    Shape x, w;
    std::vector<int64_t> stride, pad;
    int64_t groups;
    bool bias;
  };
  for (const Cv& c :
       std::vector<Cv>{{"groups, stride, padding, bias", {2, 4, 5, 6}, {6, 2, 3, 3}, {2, 1}, {1, 1}, 2, true},
                       {"1x1 without bias", {2, 3, 4, 4}, {5, 3, 1, 1}, {1, 1}, {0, 0}, 1, false},
                       {"depthwise", {1, 3, 5, 5}, {3, 1, 3, 3}, {1, 1}, {1, 1}, 3, true},
                       {"rectangular kernel", {1, 3, 6, 7}, {4, 3, 2, 3}, {1, 2}, {0, 1}, 1, false},
                       {"1x1 strided", {1, 2, 5, 5}, {2, 2, 1, 1}, {2, 2}, {0, 0}, 1, true}}) {
    std::vector<Tensor> in = {g.uniform(c.x), g.uniform(c.w)};
    if (c.bias) in.push_back(g.uniform({c.w[0]}));
    add(OpKind::conv2d, {c.name,
                         in,
                         {dims_attr("stride", c.stride), dims_attr("padding", c.pad), dim_attr("groups", c.groups)},
                         {},
                         conv2d_ref(c.stride, c.pad, c.groups)});
  }
  for (bool max : {true, false}) {
    const OpKind op = max ? OpKind::max_pool2d : OpKind::avg_pool2d;
    add(op, {"2x2, stride defaults to kernel",
             {g.uniform({2, 3, 6, 7})},
             {dims_attr("kernel", {2, 2})},
             {},
             pool_ref({2, 2}, {2, 2}, {0, 0}, max)});
    add(op, {"3x3 stride 2 padding 1",
             {g.uniform({1, 2, 7, 6})},
             {dims_attr("kernel", {3, 3}), dims_attr("stride", {2, 2}), dims_attr("padding", {1, 1})},
             {},
             pool_ref({3, 3}, {2, 2}, {1, 1}, max)});
    add(op, {"rectangular, overlapping",
             {g.uniform({1, 1, 5, 6})},
             {dims_attr("kernel", {2, 3}), dims_attr("stride", {1, 1}), dims_attr("padding", {1, 0})},
             {},
             pool_ref({2, 3}, {1, 1}, {1, 0}, max)});
  }

  // Losses.
  add(OpKind::cross_entropy, {"default ignore_index -100, i64",
                              {g.uniform({2, 3, 5}, -4, 4), values(DType::i64, {2, 3}, {0, 4, -100, 2, 2, 1})},
                              {},
                              {},
                              cross_entropy_ref(-100)});
  add(OpKind::cross_entropy, {"ignore_index 2, i32",
                              {g.uniform({4, 7}, -4, 4), values(DType::i32, {4}, {2, 6, 0, 2})},
                              {dim_attr("ignore_index", 2)},
                              {},
                              cross_entropy_ref(2)});
  add(OpKind::cross_entropy, {"every target ignored",
                              {g.uniform({2, 3}), values(DType::i32, {2}, {-100, -100})},
                              {},
                              {},
                              cross_entropy_ref(-100)});
  add(OpKind::cross_entropy,
      {"one row", {g.uniform({6}), values(DType::i64, {}, {5})}, {}, {}, cross_entropy_ref(-100)});
  const Reference mse_ref = [](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    double s = 0;
    for (size_t i = 0; i < in[0].v.size(); ++i) s += (in[0].v[i] - in[1].v[i]) * (in[0].v[i] - in[1].v[i]);
    return Outputs{{s / static_cast<double>(in[0].v.size())}};
  };
  add(OpKind::cross_entropy_parts,
      {"classes 5..10 of 15, targets inside, outside and ignored",
       {g.uniform({2, 3, 5}, -4, 4), g.uniform({2, 3}, -1, 1), values(DType::i64, {2, 3}, {5, 9, 0, 14, -100, 7})},
       {dim_attr("offset", 5), dim_attr("vocab", 15)},
       {},
       cross_entropy_parts_ref(5)});
  add(OpKind::cross_entropy_parts, {"the whole vocabulary, i32",
                                    {g.uniform({4, 7}, -4, 4), g.uniform({4}), values(DType::i32, {4}, {2, 6, 0, 2})},
                                    {},
                                    {},
                                    cross_entropy_parts_ref(0)});
  add(OpKind::cross_entropy_total, {"ignore_index 2",
                                    {g.uniform({4, 2}, 0.5, 3), values(DType::i32, {4}, {2, 6, 0, 2})},
                                    {dim_attr("ignore_index", 2)},
                                    {},
                                    cross_entropy_total_ref(2)});
  add(OpKind::cross_entropy_total, {"every target ignored",
                                    {g.uniform({2, 2}, 0.5, 3), values(DType::i64, {2}, {-100, -100})},
                                    {},
                                    {},
                                    cross_entropy_total_ref(-100)});
  add(OpKind::mse_loss, {"3x5", {g.uniform({3, 5}), g.uniform({3, 5})}, {}, {}, mse_ref});
  add(OpKind::mse_loss, {"scalar", {g.uniform({}), g.uniform({})}, {}, {}, mse_ref});

  // Backward ops.
  const Reference same_as_broadcast = unary_ref([](double v) { return v; });  // map_ref broadcasts
  struct Bc {
    const char* name;
    Tensor x;
    Shape shape;
  };
  for (const Bc& b : std::vector<Bc>{{"column to 3-D", g.uniform({3, 1}), {2, 3, 4}},
                                     {"scalar", g.uniform({}), {2, 3}},
                                     {"row, leading axis added", g.uniform({9}), {3, 9}},
                                     {"same shape", g.uniform({2, 5}), {2, 5}},
                                     {"middle axis stretched", g.uniform({2, 1, 3}), {2, 4, 3}},
                                     {"i32", g.ints(DType::i32, {1, 3}, -9, 9), {2, 3}},
                                     {"bool", g.bools({4, 1}), {4, 2}}})
    add(OpKind::broadcast_to, {b.name, {b.x}, {dims_attr("shape", b.shape)}, {}, same_as_broadcast});
  struct St {
    const char* name;
    Shape x, shape;
  };
  for (const St& s : std::vector<St>{{"to a column", {2, 3, 4}, {3, 1}},
                                     {"to the last axis (a bias gradient)", {2, 3, 9}, {9}},
                                     {"to a scalar", {2, 3}, {}},
                                     {"outer and inner kept as 1", {4, 3, 5}, {1, 3, 1}},
                                     {"unchanged", {2, 5}, {2, 5}},
                                     {"size-1 axes of x", {2, 1, 5}, {1, 1, 5}},
                                     {"empty x", {3, 0}, {1}}})
    add(OpKind::sum_to, {s.name, {g.uniform(s.x)}, {dims_attr("shape", s.shape)}, {}, sum_to_ref});

  add(OpKind::relu_grad,
      {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -4, 4)}, {}, {}, binary_ref([](double gv, double x) {
         return x > 0 ? gv : 0.0;
       })});
  const Reference gelu_grad_ref = binary_ref([](double gv, double x) { return gv * gelu_derivative(x); });
  add(OpKind::gelu_grad, {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -4, 4)}, {}, {}, gelu_grad_ref});
  add(OpKind::gelu_erf_grad,
      {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -4, 4)}, {}, {}, binary_ref([](double gv, double x) {
         return gv * (0.5 * (1 + std::erf(x / std::numbers::sqrt2)) + x * std::exp(-0.5 * x * x) / std::sqrt(2 * std::numbers::pi));
       })});
  const Reference silu_grad_ref = binary_ref([](double gv, double x) {
    const double s = 1 / (1 + std::exp(-x));
    return gv * (s + x * s * (1 - s));
  });
  add(OpKind::silu_grad, {"3x7", {g.uniform({3, 7}), g.uniform({3, 7}, -8, 8)}, {}, {}, silu_grad_ref});
  add(OpKind::gelu_grad, {"far tails (x^3 overflows f32 at 1e20)",
                          {g.uniform({10}), values(f64, {10}, {-1e20, -40, -12, -9, -6, 6, 9, 12, 40, 1e20})},
                          {},
                          {},
                          gelu_grad_ref});

  for (OpKind op : {OpKind::softmax_grad, OpKind::log_softmax_grad}) {
    const bool log = op == OpKind::log_softmax_grad;
    const Tensor x1 = g.uniform({3, 11}, -5, 5), x2 = g.uniform({2, 5, 6}, -5, 5), x3 = g.uniform({4, 3, 2}, -5, 5);
    add(op, {"last axis (default)", {g.uniform({3, 11}), softmax_of(x1, -1, log)}, {}, {}, softmax_grad_ref(-1, log)});
    add(op, {"middle axis",
             {g.uniform({2, 5, 6}), softmax_of(x2, 1, log)},
             {dim_attr("axis", 1)},
             {},
             softmax_grad_ref(1, log)});
    add(op, {"first axis",
             {g.uniform({4, 3, 2}), softmax_of(x3, 0, log)},
             {dim_attr("axis", -3)},
             {},
             softmax_grad_ref(0, log)});
  }

  add(OpKind::layernorm_grad, {"default eps",
                               {g.uniform({2, 3, 10}), g.uniform({2, 3, 10}), g.uniform({10})},
                               {},
                               {},
                               norm_grad_ref(1e-5, false)});
  add(OpKind::layernorm_grad, {"eps and a large mean",
                               {g.uniform({4, 9}), g.uniform({4, 9}, 99, 101), g.uniform({9})},
                               {real_attr("eps", 1e-3)},
                               {},
                               norm_grad_ref(1e-3, false)});
  add(OpKind::rmsnorm_grad,
      {"default eps", {g.uniform({3, 12}), g.uniform({3, 12}), g.uniform({12})}, {}, {}, norm_grad_ref(1e-6, true)});
  add(OpKind::rmsnorm_grad, {"eps",
                             {g.uniform({2, 2, 5}), g.uniform({2, 2, 5}), g.uniform({5})},
                             {real_attr("eps", 0.1)},
                             {},
                             norm_grad_ref(0.1, true)});

  add(OpKind::embedding_grad, {"i32 ids, repeated",
                               {g.uniform({2, 3, 4}), values(DType::i32, {2, 3}, {0, 9, 3, 3, 1, 9})},
                               {dim_attr("rows", 10)},
                               {},
                               embedding_grad_ref});
  add(OpKind::embedding_grad,
      {"i64 ids", {g.uniform({5, 3}), g.ints(DType::i64, {5}, 0, 5)}, {dim_attr("rows", 6)}, {}, embedding_grad_ref});
  add(OpKind::embedding_grad, {"rows 3..6 of 9, repeated ids inside",
                               {g.uniform({2, 3, 4}), values(DType::i64, {2, 3}, {3, 0, 5, 5, 8, 6})},
                               {dim_attr("rows", 3), dim_attr("offset", 3), dim_attr("vocab", 9)},
                               {},
                               embedding_share_grad_ref(3)});

  add(OpKind::moe_gates_grad, {"top 2, dropless",
                               {g.uniform({4, 7}), router, dropless},
                               {dim_attr("top_k", 2)},
                               {},
                               moe_gates_grad_ref(2, true)});
  add(OpKind::moe_gates_grad, {"top 2, dropped choices",
                               {g.uniform({4, 3}), router, dropping},
                               {dim_attr("top_k", 2)},
                               {},
                               moe_gates_grad_ref(2, true)});
  add(OpKind::moe_gates_grad, {"switch",
                               {g.uniform({4, 3}), router, switched},
                               {dim_attr("top_k", 1), bool_attr("renormalize", false)},
                               {},
                               moe_gates_grad_ref(1, false)});

  add(OpKind::slice_grad, {"middle axis",
                           {g.uniform({3, 3, 4})},
                           {dim_attr("axis", 1), dim_attr("start", 1), dim_attr("size", 5)},
                           {},
                           slice_grad_ref(1, 1)});
  add(OpKind::slice_grad, {"last axis, at the end",
                           {g.uniform({3, 3})},
                           {dim_attr("axis", -1), dim_attr("start", 2), dim_attr("size", 5)},
                           {},
                           slice_grad_ref(-1, 2)});
  add(OpKind::slice_grad, {"first axis, i64",
                           {g.ints(DType::i64, {2, 3}, -5, 5)},
                           {dim_attr("axis", 0), dim_attr("start", 1), dim_attr("size", 4)},
                           {},
                           slice_grad_ref(0, 1)});

  struct Rmg {
    const char* name;
    Tensor x;
    std::vector<int64_t> axes;
    bool keep;
  };
  for (const Rmg& r : std::vector<Rmg>{{"last axis", g.uniform({2, 3, 9}), {-1}, false},
                                       {"outer and inner, keepdims", g.uniform({2, 3, 4}), {0, 2}, true},
                                       {"first axis (columns)", g.uniform({6, 5}), {0}, false},
                                       {"ties", values(f64, {2, 4}, {1, 3, 3, -1, 2, 2, 2, 2}), {1}, false},
                                       {"ties across columns", values(f64, {3, 2}, {5, 1, 5, 1, 4, 0.5}), {0}, true}}) {
    std::vector<OpAttrs::Entry> attrs = {dims_attr("axes", r.axes)};
    if (r.keep) attrs.push_back(bool_attr("keepdims", true));
    const Tensor y = reduce_max_of(r.x, r.axes, r.keep);
    add(OpKind::reduce_max_grad, {r.name, {g.uniform(y.type.shape), r.x, y}, attrs, {}, reduce_max_grad_ref(r.axes)});
  }

  struct Cg {
    const char* name;
    Shape x, w;
    std::vector<int64_t> stride, pad;
    int64_t groups;
  };
  for (const Cg& c : std::vector<Cg>{{"groups, stride, padding", {2, 4, 5, 6}, {6, 2, 3, 3}, {2, 1}, {1, 1}, 2},
                                     {"1x1 (direct)", {2, 3, 4, 4}, {5, 3, 1, 1}, {1, 1}, {0, 0}, 1},
                                     {"depthwise", {1, 3, 5, 5}, {3, 1, 3, 3}, {1, 1}, {1, 1}, 3},
                                     {"rectangular kernel", {1, 3, 6, 7}, {4, 3, 2, 3}, {1, 2}, {0, 1}, 1},
                                     {"1x1 strided", {1, 2, 5, 5}, {2, 2, 1, 1}, {2, 2}, {0, 0}, 1},
                                     {"last rows unread", {1, 2, 6, 6}, {3, 2, 3, 3}, {2, 2}, {0, 0}, 1}}) {
    const std::vector<OpAttrs::Entry> conv_attrs = {dims_attr("stride", c.stride), dims_attr("padding", c.pad),
                                                    dim_attr("groups", c.groups)};
    // The gradient has the forward's output shape.
    const Shape gs = {c.x[0], c.w[0], (c.x[2] + 2 * c.pad[0] - c.w[2]) / c.stride[0] + 1,
                      (c.x[3] + 2 * c.pad[1] - c.w[3]) / c.stride[1] + 1};
    std::vector<OpAttrs::Entry> in_attrs = conv_attrs, w_attrs = conv_attrs;
    in_attrs.push_back(dims_attr("input_shape", c.x));
    w_attrs.push_back(dims_attr("weight_shape", c.w));
    add(OpKind::conv2d_grad_input,
        {c.name, {g.uniform(gs), g.uniform(c.w)}, in_attrs, {}, conv2d_grad_ref(c.stride, c.pad, c.groups, true)});
    add(OpKind::conv2d_grad_weight,
        {c.name, {g.uniform(gs), g.uniform(c.x)}, w_attrs, {}, conv2d_grad_ref(c.stride, c.pad, c.groups, false)});
  }

  struct Pg {
    const char* name;
    Shape x;
    std::vector<int64_t> kernel, stride, pad;
    bool defaults;  // stride and padding left to their defaults
  };
  for (const Pg& p : std::vector<Pg>{{"2x2, stride defaults to kernel", {2, 3, 6, 7}, {2, 2}, {2, 2}, {0, 0}, true},
                                     {"3x3 stride 2 padding 1", {1, 2, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false},
                                     {"rectangular, overlapping", {1, 1, 5, 6}, {2, 3}, {1, 1}, {1, 0}, false}}) {
    std::vector<OpAttrs::Entry> attrs = {dims_attr("kernel", p.kernel)};
    if (!p.defaults) {
      attrs.push_back(dims_attr("stride", p.stride));
      attrs.push_back(dims_attr("padding", p.pad));
    }
    const Shape gs = {p.x[0], p.x[1], (p.x[2] + 2 * p.pad[0] - p.kernel[0]) / p.stride[0] + 1,
                      (p.x[3] + 2 * p.pad[1] - p.kernel[1]) / p.stride[1] + 1};
    add(OpKind::max_pool2d_grad,
        {p.name, {g.uniform(gs), g.uniform(p.x)}, attrs, {}, pool_grad_ref(p.kernel, p.stride, p.pad, true)});
    attrs.push_back(dims_attr("input_shape", p.x));
    add(OpKind::avg_pool2d_grad, {p.name, {g.uniform(gs)}, attrs, {}, pool_grad_ref(p.kernel, p.stride, p.pad, false)});
  }
  // Ties and a plateau of equal values: each window's first maximum wins.
  add(OpKind::max_pool2d_grad,
      {"ties, overlapping windows",
       {g.uniform({1, 1, 2, 3}), values(f64, {1, 1, 3, 4}, {1, 4, 4, 0, 4, 2, 4, 4, 3, 3, 3, 3})},
       {dims_attr("kernel", {2, 2}), dims_attr("stride", {1, 1})},
       {},
       pool_grad_ref({2, 2}, {1, 1}, {0, 0}, true)});

  add(OpKind::cross_entropy_grad,
      {"default ignore_index -100, i64",
       {g.uniform({}), g.uniform({2, 3, 5}, -4, 4), values(DType::i64, {2, 3}, {0, 4, -100, 2, 2, 1})},
       {},
       {},
       cross_entropy_grad_ref(-100)});
  add(OpKind::cross_entropy_grad, {"ignore_index 2, i32",
                                   {g.uniform({}), g.uniform({4, 7}, -4, 4), values(DType::i32, {4}, {2, 6, 0, 2})},
                                   {dim_attr("ignore_index", 2)},
                                   {},
                                   cross_entropy_grad_ref(2)});
  add(OpKind::cross_entropy_grad, {"every target ignored",
                                   {g.uniform({}), g.uniform({2, 3}), values(DType::i32, {2}, {-100, -100})},
                                   {},
                                   {},
                                   cross_entropy_grad_ref(-100)});
  add(OpKind::cross_entropy_grad,
      {"one row", {g.uniform({}), g.uniform({6}), values(DType::i64, {}, {5})}, {}, {}, cross_entropy_grad_ref(-100)});
  add(OpKind::cross_entropy_parts_grad,
      {"classes 5..10 of 15",
       {g.uniform({2, 3, 2}), g.uniform({2, 3, 5}, -4, 4), g.uniform({2, 3}, -1, 1),
        values(DType::i32, {2, 3}, {5, 9, 0, 14, -100, 7})},
       {dim_attr("offset", 5), dim_attr("vocab", 15)},
       {},
       cross_entropy_parts_grad_ref(5)});
  add(OpKind::cross_entropy_total_grad,
      {"ignore_index 2",
       {g.uniform({}), g.uniform({4, 2}, 0.5, 3), values(DType::i64, {4}, {2, 6, 0, 2})},
       {dim_attr("ignore_index", 2)},
       {},
       cross_entropy_total_grad_ref(2)});
  add(OpKind::cross_entropy_total_grad,
      {"every target ignored", {g.uniform({}), g.uniform({2, 2}, 0.5, 3), values(DType::i32, {2}, {-100, -100})}, {},
       {}, cross_entropy_total_grad_ref(-100)});
  return cs;
}

const std::vector<OpCase>& cases() {
  static const std::vector<OpCase> all = all_cases();
  return all;
}

// ---------------------------------------------------------------------------
// The walk over ops.def: one test per op.

class EveryOp : public testing::TestWithParam<int> {};

TEST_P(EveryOp, MatchesTheFloat64Reference) {
  const auto op = static_cast<OpKind>(GetParam());
  if (op == OpKind::param || op == OpKind::call) {
    // The executor supplies parameters and calls are inlined: no kernels.
    EXPECT_FALSE(has_forward_kernel(op, DType::f32));
    EXPECT_FALSE(has_forward_kernel(op, DType::f64));
    return;
  }
  ASSERT_TRUE(has_forward_kernel(op, DType::f64)) << "no f64 cpu kernel for " << op_name(op);
  ASSERT_TRUE(has_forward_kernel(op, DType::f32)) << "no f32 cpu kernel for " << op_name(op);
  int n = 0;
  for (const OpCase& c : cases()) {
    if (c.op != op) continue;
    ++n;
    check_case(op, c.c);
  }
  EXPECT_GT(n, 0) << "no test case for " << op_name(op) << "; add one to all_cases()";
}

// ---------------------------------------------------------------------------
// attention's layouts: under "bthd" the kernels read q, k, v [B, T, H, D]
// where "bhtd" reads them transposed to [B, H, T, D]. A head's rows meet the
// same products in the same order (gemm's sums do not depend on the rows'
// stride), so o, lse, dq, dk and dv are the same bits, transposed back.

// [a, b, c, d] -> [a, c, b, d].
Tensor swap_middle_axes(const Tensor& t) {
  const Shape& s = t.type.shape;
  Tensor out = values(t.type.dtype, {s[0], s[2], s[1], s[3]}, std::vector<double>(t.v.size()));
  for (int64_t i = 0; i < t.type.numel(); ++i) {
    const Index idx = unravel(i, s);
    out.v[ravel({idx[0], idx[2], idx[1], idx[3]}, out.type.shape)] = t.v[i];
  }
  return out;
}

TEST(AttentionLayout, BthdGivesTheBitsOfBhtdOnTransposedOperands) {
  Gen g(11);
  for (const bool causal : {true, false}) {
    for (const Shape& shape : {Shape{2, 70, 3, 8}, Shape{1, 65, 2, 4}}) {
      const std::vector<OpAttrs::Entry> bhtd = {bool_attr("causal", causal)};
      const std::vector<OpAttrs::Entry> bthd = {bool_attr("causal", causal), string_attr("layout", "bthd")};
      const Tensor q = g.uniform(shape), k = g.uniform(shape), v = g.uniform(shape), grad = g.uniform(shape);
      const Shape rows = {shape[0], shape[2], shape[1]};  // lse [B, H, T]
      for (DType dtype : {DType::f64, DType::f32}) {
        SCOPED_TRACE((std::string(dtype_name(dtype)) + (causal ? ", causal " : ", ") + TensorType{dtype, shape}.str()));
        const auto t = [](const Tensor& x) { return swap_middle_axes(x); };
        const Result want = run_kernel(OpKind::attention, dtype, Case{"bhtd", {t(q), t(k), t(v)}, bhtd, {}, {}});
        const Result got = run_kernel(OpKind::attention, dtype, Case{"bthd", {q, k, v}, bthd, {}, {}});
        const Tensor o = values(DType::f64, want.types[0].shape, want.values[0]);
        EXPECT_EQ(got.values[0], t(o).v) << "o";
        EXPECT_EQ(got.values[1], want.values[1]) << "lse";
        const Tensor lse = values(DType::f64, rows, want.values[1]);
        const Result dwant =
            run_kernel(OpKind::attention_grad, dtype, Case{"bhtd", {t(grad), t(q), t(k), t(v), o, lse}, bhtd, {}, {}});
        const Result dgot =
            run_kernel(OpKind::attention_grad, dtype, Case{"bthd", {grad, q, k, v, t(o), lse}, bthd, {}, {}});
        for (int r = 0; r < 3; ++r)
          EXPECT_EQ(dgot.values[r], t(values(DType::f64, dwant.types[r].shape, dwant.values[r])).v)
              << "gradient " << r;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ForwardKernels, EveryOp, testing::Range(0, kNumOps), [](const testing::TestParamInfo<int>& p) {
  return std::string(op_name(static_cast<OpKind>(p.param)));
});

}  // namespace
}  // namespace pf::cpu
