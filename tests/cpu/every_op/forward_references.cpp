// Float64 references of the forward ops but attention's and the mixture of experts': plain loops over multi-indices.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

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
      // Positions [P] for every sequence, or [B, P] for each its own.
      const int64_t sequence = in.size() > 1 && in[1].type.rank() == 2 ? idx[0] : 0;
      const double p = in.size() > 1 ? in[1].v[static_cast<size_t>(sequence * s[at] + idx[at])]
                                     : static_cast<double>(idx[at]);
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

namespace {

// The dropout mask as the interface documents it, written out independently.
double splitmix_uniform(uint64_t seed, uint64_t i) {
  uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) / 9007199254740992.0;  // 2^53
}

}  // namespace

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

}  // namespace pf::cpu::every_op
