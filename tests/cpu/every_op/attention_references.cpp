// Float64 references of attention, cached_attention and attention_grad: each head's whole score matrix in plain loops.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

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

namespace {

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

}  // namespace

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
  const Reference one_filled = [attrs](const std::vector<Tensor>& in, const std::vector<TensorType>&) {
    const AttentionRef fresh = attention_geometry(in[0].type, attrs);
    const Shape& to = in[0].type.shape;
    Shape cache_shape = to;  // the caches repeated to every query head, as k and v
    cache_shape[cache_shape.size() - (fresh.inner > 1 ? 3 : 2)] =
        in[3].type.shape[in[3].type.rank() - (fresh.inner > 1 ? 3 : 2)];
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
  // Positions [B, N]: each sequence alone, over its own filled rows.
  return [one_filled](const std::vector<Tensor>& in, const std::vector<TensorType>& out) {
    if (in[5].type.rank() == 1) return one_filled(in, out);
    const int64_t sequences = in[5].type.shape[0];
    std::vector<double> o;
    for (int64_t b = 0; b < sequences; ++b) {
      std::vector<Tensor> alone;
      for (const Tensor& t : in) {
        Tensor row = t;
        row.type.shape[0] = 1;
        if (&t == &in[5]) row.type.shape = {t.type.shape[1]};
        const auto size = static_cast<std::ptrdiff_t>(t.v.size()) / sequences;
        row.v.assign(t.v.begin() + b * size, t.v.begin() + (b + 1) * size);
        alone.push_back(std::move(row));
      }
      const std::vector<double> part = one_filled(alone, out).at(0);
      o.insert(o.end(), part.begin(), part.end());
    }
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

}  // namespace pf::cpu::every_op
