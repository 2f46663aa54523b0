// Optimizers over plain float arrays (SGD with momentum, AdamW) and gradient clipping.
#include "runtime/optimizer.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <fmt/format.h>

#include "backends/cpu/parallel.h"
#include "ir/diagnostic.h"
#include "runtime/safetensors.h"

namespace pf {

namespace {

// sum(x^2), accumulated in double across runs of kRun elements that are
// summed in float lanes (each lane adds kRun / kLanes squares, so a run loses
// no more than a float sum of 16 terms would). Converting every element to
// double costs more than reading it; per run, only the lanes are converted.
// The lanes are combined in a fixed order: the result does not depend on the
// machine or the number of threads.
constexpr int64_t kLanes = 64, kRun = 1024;

// Lanes [first, first + 32) of one run: lane j adds x[j], x[j + 64], ... in
// order. A half at a time, so that its 8 vectors of lanes stay in the 16 SSE
// registers (all 64 lanes at once spilled to the stack every element, and
// the norm ran at half the stream rate); each lane's sum is the same.
void add_squares_half(const float* run, int64_t first, float* lanes) {
#if defined(__SSE2__)
  __m128 acc[8];
  for (int k = 0; k < 8; ++k) acc[k] = _mm_loadu_ps(lanes + first + 4 * k);
  for (int64_t r = 0; r < kRun; r += kLanes)
    for (int k = 0; k < 8; ++k) {
      const __m128 v = _mm_loadu_ps(run + r + first + 4 * k);
      acc[k] = _mm_add_ps(acc[k], _mm_mul_ps(v, v));
    }
  for (int k = 0; k < 8; ++k) _mm_storeu_ps(lanes + first + 4 * k, acc[k]);
#else
  for (int64_t r = 0; r < kRun; r += kLanes)
    for (int64_t j = first; j < first + 32; ++j) lanes[j] += run[r + j] * run[r + j];
#endif
}

double sum_of_squares(const float* x, int64_t n) {
  double wide[kLanes] = {};
  int64_t i = 0;
  for (; i + kRun <= n; i += kRun) {
    float lanes[kLanes] = {};
    add_squares_half(x + i, 0, lanes);
    add_squares_half(x + i, 32, lanes);
    for (int64_t j = 0; j < kLanes; ++j) wide[j] += lanes[j];
  }
  double sum = 0;
  for (double v : wide) sum += v;
  for (; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

// Elements per block of the norm and per chunk of an update: blocks are
// fixed, not per thread, so a norm is the same on any number of threads.
constexpr int64_t kBlock = 1 << 16;

// AdamW's update over [begin, end) of one parameter, in a function of its
// own with the coefficients by value and the arrays restrict: in a lambda
// that captures them by reference the compiler must assume that a store to w
// may change a coefficient, and the loop stayed scalar (4x slower, its
// square root and divisions unvectorised).
struct AdamWCoefficients {
  float shrink, b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps, step_size;
};

void adamw_elements(float* __restrict w, const float* __restrict g, float* __restrict m, float* __restrict v,
                    int64_t begin, int64_t end, AdamWCoefficients c) {
  for (int64_t i = begin; i < end; ++i) {
    w[i] *= c.shrink;
    m[i] = c.b1 * m[i] + c.one_minus_b1 * g[i];
    v[i] = c.b2 * v[i] + c.one_minus_b2 * g[i] * g[i];
    // The same operation order as PyTorch's addcdiv_, so results round alike.
    const float denom = std::sqrt(v[i]) / c.sqrt_bc2 + c.eps;
    w[i] -= c.step_size * (m[i] / denom);
  }
}

}  // namespace

int64_t Param::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Optimizer::Optimizer(std::vector<Param> params, std::vector<std::string> slots)
    : params_(std::move(params)), slots_(std::move(slots)) {
  std::set<std::string> seen;
  for (const Param& p : params_) {
    if (p.name.empty()) throw Error("optimizer: a parameter has an empty name");
    if (!seen.insert(p.name).second) throw Error(fmt::format("optimizer: parameter '{}' is listed twice", p.name));
    for (int64_t d : p.shape)
      if (d < 0)
        throw Error(fmt::format("optimizer: parameter '{}' has negative shape {}", p.name, shape_str(p.shape)));
    const int64_t whole = TensorType{DType::f32, p.whole_shape()}.numel();
    if (p.is_piece() && (p.shape.size() != 1 || p.offset < 0 || p.offset + p.numel() > whole))
      throw Error(fmt::format("optimizer: the piece of '{}' ({} at {}) is not a run of its {} elements", p.name,
                              shape_str(p.shape), p.offset, whole));
    if (p.numel() > 0 && (p.value == nullptr || p.grad == nullptr))
      throw Error(fmt::format("optimizer: parameter '{}' has no {} array", p.name, p.value ? "gradient" : "value"));
  }
  state_.reserve(params_.size() * slots_.size());
  for (const Param& p : params_)
    for (size_t k = 0; k < slots_.size(); ++k) state_.emplace_back(static_cast<size_t>(p.numel()), 0.0f);
}

std::vector<StateBuffer> Optimizer::state() {
  std::vector<StateBuffer> out;
  out.reserve(state_.size());
  for (size_t p = 0; p < params_.size(); ++p)
    for (size_t k = 0; k < slots_.size(); ++k) {
      const Param& param = params_[p];
      out.push_back({param.name + "." + slots_[k], TensorType{DType::f32, param.shape}, slot(p, k),
                     TensorType{DType::f32, param.whole_shape()}, param.offset});
    }
  return out;
}

void Optimizer::save_state(SafeTensors& out) const {
  for (const Param& p : params_)
    if (p.is_piece())
      throw Error(fmt::format("optimizer: it steps a piece of '{}', so its state is part of a checkpoint's", p.name));
  for (size_t p = 0; p < params_.size(); ++p)
    for (size_t k = 0; k < slots_.size(); ++k)
      out.add(params_[p].name + "." + slots_[k], TensorType{DType::f32, params_[p].shape},
              state_[p * slots_.size() + k].data());
  out.metadata["optimizer"] = std::string(kind());
  out.metadata["optimizer.step"] = std::to_string(steps_);
}

void Optimizer::load_state(const SafeTensors& in) {
  auto meta = [&](const std::string& key) {
    auto it = in.metadata.find(key);
    if (it == in.metadata.end())
      throw Error(fmt::format("{}: no '{}' in the metadata; the file holds no optimizer state", in.source(), key));
    return it->second;
  };
  std::string saved_kind = meta("optimizer");
  if (saved_kind != kind())
    throw Error(fmt::format("{}: the file holds {} state but the optimizer is {}", in.source(), saved_kind, kind()));
  std::string step_text = meta("optimizer.step");
  size_t used = 0;
  int64_t steps = -1;
  try {
    steps = std::stoll(step_text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != step_text.size() || steps < 0)
    throw Error(fmt::format("{}: optimizer.step is '{}', not a step count", in.source(), step_text));

  std::vector<StateBuffer> buffers = state();
  std::vector<std::pair<std::string, TensorType>> expected;
  for (const StateBuffer& b : buffers) expected.emplace_back(b.name, b.whole);
  // Check everything before copying anything, so that a bad file leaves the
  // optimizer as it was.
  check_tensors(in, expected, in.source(), /*allow_unexpected=*/true);
  for (const StateBuffer& b : buffers) {
    const std::span<const float> src = in.at(b.name).view<float>().subspan(static_cast<size_t>(b.offset),
                                                                             static_cast<size_t>(b.type.numel()));
    std::copy(src.begin(), src.end(), b.data);
  }
  steps_ = steps;
}

Sgd::Sgd(std::vector<Param> params, SgdOptions options)
    : Optimizer(std::move(params),
                options.momentum > 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
      options_(options) {
  if (!(options.momentum >= 0)) throw Error(fmt::format("sgd: momentum must be >= 0, got {}", options.momentum));
  if (!(options.weight_decay >= 0))
    throw Error(fmt::format("sgd: weight_decay must be >= 0, got {}", options.weight_decay));
  if (options.nesterov && options.momentum == 0) throw Error("sgd: nesterov needs a momentum > 0");
}

void Sgd::step(double lr) {
  const auto mu = static_cast<float>(options_.momentum);
  const auto lr_f = static_cast<float>(lr);
  for (size_t p = 0; p < params_.size(); ++p) {
    const Param& param = params_[p];
    const auto wd = static_cast<float>(param.decay ? options_.weight_decay : 0.0);
    float* w = param.value;
    const float* grad = param.grad;
    const int64_t n = param.numel();
    // Every element is updated alone: split over the device's threads.
    if (options_.momentum == 0) {
      cpu::parallel_for(n, kBlock, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) w[i] -= lr_f * (grad[i] + wd * w[i]);
      });
      continue;
    }
    float* buf = slot(p, 0);
    const bool nesterov = options_.nesterov;
    cpu::parallel_for(n, kBlock, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float g = grad[i] + wd * w[i];
        buf[i] = mu * buf[i] + g;
        const float d = nesterov ? g + mu * buf[i] : buf[i];
        w[i] -= lr_f * d;
      }
    });
  }
  ++steps_;
}

AdamW::AdamW(std::vector<Param> params, AdamWOptions options)
    : Optimizer(std::move(params), {"exp_avg", "exp_avg_sq"}), options_(options) {
  if (!(options.beta1 >= 0 && options.beta1 < 1))
    throw Error(fmt::format("adamw: beta1 must be in [0, 1), got {}", options.beta1));
  if (!(options.beta2 >= 0 && options.beta2 < 1))
    throw Error(fmt::format("adamw: beta2 must be in [0, 1), got {}", options.beta2));
  if (!(options.eps >= 0)) throw Error(fmt::format("adamw: eps must be >= 0, got {}", options.eps));
  if (!(options.weight_decay >= 0))
    throw Error(fmt::format("adamw: weight_decay must be >= 0, got {}", options.weight_decay));
}

void AdamW::step(double lr) {
  const int64_t t = steps_ + 1;
  const double b1 = options_.beta1, b2 = options_.beta2;
  // Per-step scalars in double, as PyTorch computes them in Python floats.
  AdamWCoefficients c{};
  c.step_size = static_cast<float>(lr / (1.0 - std::pow(b1, static_cast<double>(t))));
  c.sqrt_bc2 = static_cast<float>(std::sqrt(1.0 - std::pow(b2, static_cast<double>(t))));
  c.eps = static_cast<float>(options_.eps);
  c.b1 = static_cast<float>(b1);
  c.b2 = static_cast<float>(b2);
  c.one_minus_b1 = static_cast<float>(1.0 - b1);
  c.one_minus_b2 = static_cast<float>(1.0 - b2);
  for (size_t p = 0; p < params_.size(); ++p) {
    const Param& param = params_[p];
    c.shrink = static_cast<float>(1.0 - lr * (param.decay ? options_.weight_decay : 0.0));
    float* w = param.value;
    const float* g = param.grad;
    float* m = slot(p, 0);
    float* v = slot(p, 1);
    // Every element is updated alone: split over the device's threads.
    cpu::parallel_for(param.numel(), kBlock,
                      [&](int64_t begin, int64_t end) { adamw_elements(w, g, m, v, begin, end, c); });
  }
  ++steps_;
}

std::unique_ptr<Optimizer> make_optimizer(std::string_view kind, std::vector<Param> params, double momentum,
                                          double weight_decay) {
  if (kind == "sgd") return std::make_unique<Sgd>(std::move(params), SgdOptions{momentum, weight_decay});
  if (kind == "adamw") {
    AdamWOptions adam;
    adam.weight_decay = weight_decay;
    return std::make_unique<AdamW>(std::move(params), adam);
  }
  throw Error(fmt::format("unknown optimizer '{}'; use sgd or adamw", kind));
}

double grad_sq_norm(std::span<const Param> params) {
  // Per parameter, the sums of its blocks (split over the device's threads),
  // added in block order.
  thread_local std::vector<double> partial;
  double sum = 0;
  for (const Param& p : params) {
    const int64_t n = p.numel(), blocks = (n + kBlock - 1) / kBlock;
    partial.resize(static_cast<size_t>(blocks));
    double* out = partial.data();  // the caller's buffer: a worker's own thread_local would be another one
    cpu::parallel_for(blocks, 1, [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b)
        out[b] = sum_of_squares(p.grad + b * kBlock, std::min(kBlock, n - b * kBlock));
    });
    for (double v : partial) sum += v;
  }
  return sum;
}

double grad_norm(std::span<const Param> params) { return std::sqrt(grad_sq_norm(params)); }

void scale_grads(std::span<const Param> params, double factor) {
  const auto f = static_cast<float>(factor);
  for (const Param& p : params) {
    const int64_t n = p.numel();
    for (int64_t i = 0; i < n; ++i) p.grad[i] *= f;
  }
}

double clip_factor(double norm, double max_norm) {
  if (!(max_norm > 0)) throw Error(fmt::format("clip_grad_norm: max_norm must be > 0, got {}", max_norm));
  if (!std::isfinite(norm)) return 1.0;
  // The 1e-6 is PyTorch's: it keeps the factor finite for a zero norm and
  // makes a norm exactly at max_norm scale by slightly less than 1.
  const double factor = max_norm / (norm + 1e-6);
  return factor < 1.0 ? factor : 1.0;
}

double clip_grad_norm(std::span<const Param> params, double max_norm) {
  const double norm = grad_norm(params);
  const double factor = clip_factor(norm, max_norm);
  if (factor < 1.0) scale_grads(params, factor);
  return norm;
}

}  // namespace pf
