// Float64 references of the backward ops but attention's and the mixture of experts', in plain loops.
#include <cmath>
#include <cstdint>
#include <functional>
#include <numbers>
#include <vector>

#include "tests/cpu/every_op/references.h"

namespace pf::cpu::every_op {

// Each is written from its op's definition, with no reuse of a kernel's structure.

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

namespace {

// The sum of f(index) along `axis` through the index `idx`.
double sum_along(const Shape& s, Index idx, int64_t axis, const std::function<double(int64_t)>& f) {
  double sum = 0;
  for (int64_t j = 0; j < s[axis]; ++j) {
    idx[axis] = j;
    sum += f(ravel(idx, s));
  }
  return sum;
}

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace pf::cpu::every_op
