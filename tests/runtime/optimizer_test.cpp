// Tests of SGD, AdamW, gradient clipping, learning-rate schedules and optimizer state I/O.
#include "runtime/optimizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numbers>
#include <optional>

#include "ir/diagnostic.h"
#include "runtime/lr_schedule.h"
#include "runtime/safetensors.h"
#include "tests/allocation_counter.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::allocations_in;
using testing_support::error_of;

// A parameter with its own storage, handed to optimizers as a Param view.
struct Tensor {
  std::string name;
  Shape shape;
  std::vector<float> value;
  std::vector<float> grad;
  bool decay = true;

  Param param() { return {name, shape, value.data(), grad.data(), decay}; }
};

std::vector<Param> views(std::vector<Tensor>& ts) {
  std::vector<Param> out;
  for (Tensor& t : ts) out.push_back(t.param());
  return out;
}

// Three parameters of different shapes (one a scalar, one without decay),
// with initial values from a fixed formula.
std::vector<Tensor> make_params() {
  std::vector<Tensor> ts = {{"w", {2, 3}, {}, {}, true}, {"b", {3}, {}, {}, false}, {"s", {}, {}, {}, true}};
  int k = 0;
  for (Tensor& t : ts) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    for (int64_t i = 0; i < n; ++i, ++k) t.value.push_back(static_cast<float>(0.3 * std::sin(1.0 + k)));
    t.grad.assign(static_cast<size_t>(n), 0.0f);
  }
  return ts;
}

// The gradient of element i of every parameter at step t: varies in sign and
// size, and its values are exact in f32 (multiples of 1/64) so that the f32
// optimizer and the f64 reference start each step from the same input.
float grad_at(int t, int i) { return static_cast<float>(((t * 7 + i * 5) % 11 - 5) / 64.0); }

void set_grads(std::vector<Tensor>& ts, int t) {
  int k = 0;
  for (Tensor& tensor : ts)
    for (float& g : tensor.grad) g = grad_at(t, k++);
}

// ---------------------------------------------------------------------------
// SGD

// One scalar, hand-computed: w = 1, g = 0.5, lr = 0.1, momentum 0.9, wd 0.1.
TEST(Sgd, MatchesHandComputedSteps) {
  for (bool nesterov : {false, true}) {
    float w = 1.0f, g = 0.5f;
    Sgd sgd({{"w", {}, &w, &g}}, {.momentum = 0.9, .weight_decay = 0.1, .nesterov = nesterov});
    sgd.step(0.1);
    // step 1: g' = 0.5 + 0.1 * 1 = 0.6; buf = 0.6
    //   plain:    w = 1 - 0.1 * 0.6 = 0.94
    //   nesterov: d = 0.6 + 0.9 * 0.6 = 1.14; w = 1 - 0.114 = 0.886
    EXPECT_NEAR(w, nesterov ? 0.886 : 0.94, 1e-7);
    sgd.step(0.1);
    // step 2, plain: g' = 0.5 + 0.1 * 0.94 = 0.594; buf = 0.9 * 0.6 + 0.594 = 1.134; w = 0.94 - 0.1134 = 0.8266
    // nesterov: g' = 0.5 + 0.0886 = 0.5886; buf = 0.54 + 0.5886 = 1.1286;
    //   d = 0.5886 + 0.9 * 1.1286 = 1.60434; w = 0.886 - 0.160434 = 0.725566
    EXPECT_NEAR(w, nesterov ? 0.725566 : 0.8266, 1e-6);
    EXPECT_EQ(sgd.step_count(), 2);
  }
}

// torch.optim.SGD's update written in double, for comparison over many steps.
struct SgdReference {
  double momentum, wd;
  bool nesterov;
  std::vector<double> buf;
  void step(std::vector<double>& w, const std::vector<double>& g, const std::vector<bool>& decay, double lr) {
    buf.resize(w.size(), 0.0);
    for (size_t i = 0; i < w.size(); ++i) {
      double d = g[i] + (decay[i] ? wd : 0.0) * w[i];
      if (momentum != 0) {
        buf[i] = momentum * buf[i] + d;  // first step: 0 * momentum + d = d, torch's clone
        d = nesterov ? d + momentum * buf[i] : buf[i];
      }
      w[i] -= lr * d;
    }
  }
};

// Flattens every parameter's values (and decay flags) for the references.
std::vector<double> flat_values(const std::vector<Tensor>& ts) {
  std::vector<double> out;
  for (const Tensor& t : ts) out.insert(out.end(), t.value.begin(), t.value.end());
  return out;
}
std::vector<double> flat_grads(const std::vector<Tensor>& ts) {
  std::vector<double> out;
  for (const Tensor& t : ts) out.insert(out.end(), t.grad.begin(), t.grad.end());
  return out;
}
std::vector<bool> flat_decay(const std::vector<Tensor>& ts) {
  std::vector<bool> out;
  for (const Tensor& t : ts) out.insert(out.end(), t.value.size(), t.decay);
  return out;
}

void expect_close(const std::vector<Tensor>& ts, const std::vector<double>& want, double tol, int step) {
  std::vector<double> have = flat_values(ts);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_NEAR(have[i], want[i], tol) << "element " << i << " after step " << step;
}

TEST(Sgd, MatchesTheReferenceOverManySteps) {
  const SgdOptions configs[] = {{0.0, 0.0, false}, {0.0, 0.05, false}, {0.9, 0.0, false}, {0.9, 0.05, true}};
  for (const SgdOptions& o : configs) {
    std::vector<Tensor> ts = make_params();
    Sgd sgd(views(ts), o);
    SgdReference ref{o.momentum, o.weight_decay, o.nesterov, {}};
    std::vector<double> w = flat_values(ts);
    for (int t = 0; t < 10; ++t) {
      set_grads(ts, t);
      const double lr = 0.05 * (1 + t % 3);
      sgd.step(lr);
      ref.step(w, flat_grads(ts), flat_decay(ts), lr);
      expect_close(ts, w, 1e-6, t);
    }
  }
}

TEST(Sgd, ExposesMomentumBuffersOnlyWithMomentum) {
  std::vector<Tensor> ts = make_params();
  EXPECT_TRUE(Sgd(views(ts), {}).state().empty());
  Sgd sgd(views(ts), {.momentum = 0.9});
  std::vector<StateBuffer> state = sgd.state();
  ASSERT_EQ(state.size(), 3u);
  EXPECT_EQ(state[0].name, "w.momentum_buffer");
  EXPECT_EQ(state[0].type.str(), "f32[2,3]");
  EXPECT_EQ(state[2].name, "s.momentum_buffer");
  EXPECT_EQ(state[2].type.str(), "f32[]");
}

TEST(Sgd, RejectsBadOptions) {
  std::vector<Tensor> ts = make_params();
  EXPECT_EQ(error_of([&] { Sgd(views(ts), {.nesterov = true}); }), "sgd: nesterov needs a momentum > 0");
  EXPECT_EQ(error_of([&] { Sgd(views(ts), {.momentum = -1}); }), "sgd: momentum must be >= 0, got -1");
  std::vector<Param> twice = {ts[0].param(), ts[0].param()};
  EXPECT_EQ(error_of([&] { Sgd(twice, {}); }), "optimizer: parameter 'w' is listed twice");
  std::vector<Param> no_grad = {{"w", {2}, ts[0].value.data(), nullptr}};
  EXPECT_EQ(error_of([&] { Sgd(no_grad, {}); }), "optimizer: parameter 'w' has no gradient array");
}

// ---------------------------------------------------------------------------
// AdamW

// One scalar, hand-computed: w = 1, g = 0.5 every step, lr = 0.1, betas
// (0.9, 0.999), eps 1e-8, wd 0.1.
TEST(AdamW, MatchesHandComputedSteps) {
  float w = 1.0f, g = 0.5f;
  AdamW adam({{"w", {}, &w, &g}}, {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1});
  adam.step(0.1);
  // step 1: w = 1 * (1 - 0.1 * 0.1) = 0.99; m = 0.1 * 0.5 = 0.05; v = 0.001 * 0.25 = 0.00025
  //   m / (1 - 0.9) = 0.5; sqrt(v / (1 - 0.999)) = 0.5
  //   w = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.890000002
  EXPECT_NEAR(w, 0.890000002, 1e-7);
  adam.step(0.1);
  // step 2: w = 0.890000002 * 0.99 = 0.88110000198; m = 0.045 + 0.05 = 0.095; v = 0.00024975 + 0.00025 = 0.00049975
  //   m / (1 - 0.81) = 0.5; sqrt(v / (1 - 0.998001)) = sqrt(0.25) = 0.5
  //   w = 0.88110000198 - 0.099999998 = 0.78110000398
  EXPECT_NEAR(w, 0.78110000398, 1e-6);
  std::vector<StateBuffer> state = adam.state();
  ASSERT_EQ(state.size(), 2u);
  EXPECT_EQ(state[0].name, "w.exp_avg");
  EXPECT_NEAR(state[0].data[0], 0.095, 1e-8);
  EXPECT_EQ(state[1].name, "w.exp_avg_sq");
  EXPECT_NEAR(state[1].data[0], 0.00049975, 1e-10);
}

// torch.optim.AdamW's update (amsgrad off) written in double.
struct AdamWReference {
  double b1, b2, eps, wd;
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& w, const std::vector<double>& g, const std::vector<bool>& decay, double lr) {
    m.resize(w.size(), 0.0);
    v.resize(w.size(), 0.0);
    ++t;
    const double bc1 = 1 - std::pow(b1, t), bc2 = 1 - std::pow(b2, t);
    for (size_t i = 0; i < w.size(); ++i) {
      w[i] *= 1 - lr * (decay[i] ? wd : 0.0);
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      w[i] -= (lr / bc1) * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

TEST(AdamW, MatchesTheReferenceOverManySteps) {
  const AdamWOptions configs[] = {{}, {0.8, 0.95, 1e-6, 0.1}, {0.9, 0.999, 1e-8, 0.0}};
  for (const AdamWOptions& o : configs) {
    std::vector<Tensor> ts = make_params();
    AdamW adam(views(ts), o);
    AdamWReference ref{o.beta1, o.beta2, o.eps, o.weight_decay, {}, {}};
    std::vector<double> w = flat_values(ts);
    for (int t = 0; t < 10; ++t) {
      set_grads(ts, t);
      const double lr = 1e-2 * (1 + t % 3);
      adam.step(lr);
      ref.step(w, flat_grads(ts), flat_decay(ts), lr);
      // Elements whose gradient is 0 at a step divide tiny moments by tiny
      // roots; f32 rounding there stays well under 1e-5 of a step of ~1e-2.
      expect_close(ts, w, 1e-5, t);
    }
  }
}

TEST(AdamW, StepAllocatesNothing) {
  std::vector<Tensor> ts = make_params();
  std::optional<AdamW> adam;
  std::optional<Sgd> sgd;
  ASSERT_GT(allocations_in([&] {
              adam.emplace(views(ts), AdamWOptions{});
              sgd.emplace(views(ts), SgdOptions{.momentum = 0.9});
            }),
            0)
      << "the allocation counter does not count";  // state is allocated here
  set_grads(ts, 1);
  EXPECT_EQ(allocations_in([&] {
              for (int i = 0; i < 5; ++i) {
                adam->step(1e-3);
                sgd->step(1e-3);
              }
            }),
            0);
}

TEST(AdamW, RejectsBadOptions) {
  std::vector<Tensor> ts = make_params();
  EXPECT_EQ(error_of([&] { AdamW(views(ts), {.beta1 = 1.0}); }), "adamw: beta1 must be in [0, 1), got 1");
  EXPECT_EQ(error_of([&] { AdamW(views(ts), {.eps = -1}); }), "adamw: eps must be >= 0, got -1");
}

// ---------------------------------------------------------------------------
// State save / load

TEST(OptimizerState, SaveLoadResumesExactly) {
  std::vector<Tensor> ts = make_params();
  AdamW adam(views(ts), {});
  for (int t = 0; t < 3; ++t) {
    set_grads(ts, t);
    adam.step(1e-2);
  }
  SafeTensors saved;
  adam.save_state(saved);
  EXPECT_EQ(saved.names(), (std::vector<std::string>{"b.exp_avg", "b.exp_avg_sq", "s.exp_avg", "s.exp_avg_sq",
                                                     "w.exp_avg", "w.exp_avg_sq"}));
  EXPECT_EQ(saved.metadata.at("optimizer"), "adamw");
  EXPECT_EQ(saved.metadata.at("optimizer.step"), "3");
  const auto file =
      std::filesystem::temp_directory_path() / ("pf_optimizer_" + std::to_string(::getpid()) + ".safetensors");
  saved.write(file.string());
  SafeTensors loaded = SafeTensors::read(file.string());
  std::filesystem::remove(file);

  // A second optimizer over a copy of the weights, resumed from the file,
  // must continue exactly as the first.
  std::vector<Tensor> copy = ts;
  AdamW resumed(views(copy), {});
  resumed.load_state(loaded);
  EXPECT_EQ(resumed.step_count(), 3);
  for (int t = 3; t < 6; ++t) {
    set_grads(ts, t);
    set_grads(copy, t);
    adam.step(1e-2);
    resumed.step(1e-2);
  }
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(ts[i].value, copy[i].value) << ts[i].name;
}

TEST(OptimizerState, LoadRejectsMismatchedState) {
  std::vector<Tensor> ts = make_params();
  AdamW adam(views(ts), {});
  SafeTensors sgd_state;
  Sgd(views(ts), {.momentum = 0.9}).save_state(sgd_state);
  EXPECT_EQ(error_of([&] { adam.load_state(sgd_state); }),
            "<memory>: the file holds sgd state but the optimizer is adamw");
  EXPECT_EQ(error_of([&] { adam.load_state(SafeTensors()); }),
            "<memory>: no 'optimizer' in the metadata; the file holds no optimizer state");

  // Another model's state: one buffer missing, one of another shape.
  std::vector<Tensor> other = make_params();
  other[0].shape = {3, 2};
  other.pop_back();
  SafeTensors wrong;
  AdamW(views(other), {}).save_state(wrong);
  const float weights[6] = {};
  wrong.add("w", {DType::f32, {2, 3}}, weights);  // the parameters themselves do not disturb loading
  EXPECT_EQ(error_of([&] { adam.load_state(wrong); }),
            "<memory>: w.exp_avg is f32[3,2] here but the model expects f32[2,3]; "
            "w.exp_avg_sq is f32[3,2] here but the model expects f32[2,3]; missing s.exp_avg; missing s.exp_avg_sq");
  EXPECT_EQ(adam.step_count(), 0);  // nothing was loaded

  SafeTensors bad_step;
  AdamW(views(ts), {}).save_state(bad_step);
  bad_step.metadata["optimizer.step"] = "3x";
  EXPECT_EQ(error_of([&] { adam.load_state(bad_step); }), "<memory>: optimizer.step is '3x', not a step count");
}

// ---------------------------------------------------------------------------
// Gradient clipping

TEST(ClipGradNorm, ScalesAboveTheLimitOnly) {
  float w[3] = {}, g1[2] = {3, 4}, g2[1] = {12};
  std::vector<Param> ps = {{"a", {2}, w, g1}, {"b", {1}, w + 2, g2}};
  // Global norm sqrt(9 + 16 + 144) = 13 > 1: every gradient is scaled by 1 / (13 + 1e-6).
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 1.0), 13.0);
  const double f = 1.0 / (13.0 + 1e-6);
  EXPECT_FLOAT_EQ(g1[0], static_cast<float>(3 * f));
  EXPECT_FLOAT_EQ(g1[1], static_cast<float>(4 * f));
  EXPECT_FLOAT_EQ(g2[0], static_cast<float>(12 * f));
  EXPECT_NEAR(grad_norm(ps), 1.0, 1e-6);

  // Below the limit: returned, untouched.
  g1[0] = 3, g1[1] = 4, g2[0] = 12;
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps, 20.0), 13.0);
  EXPECT_EQ(g1[0], 3.0f);
  EXPECT_EQ(g2[0], 12.0f);

  // Exactly at the limit, PyTorch still multiplies by 13 / (13 + 1e-6).
  EXPECT_DOUBLE_EQ(clip_factor(13.0, 13.0), 13.0 / (13.0 + 1e-6));
  EXPECT_DOUBLE_EQ(clip_factor(0.0, 1.0), 1.0);
}

TEST(ClipGradNorm, LeavesNonFiniteGradientsForTheCallerToSkip) {
  float w[2] = {}, g[2] = {INFINITY, 1};
  std::vector<Param> ps = {{"a", {2}, w, g}};
  EXPECT_TRUE(std::isinf(clip_grad_norm(ps, 1.0)));
  EXPECT_EQ(g[1], 1.0f);
  g[0] = NAN;
  EXPECT_TRUE(std::isnan(clip_grad_norm(ps, 1.0)));
  EXPECT_EQ(g[1], 1.0f);
  EXPECT_EQ(error_of([&] { clip_grad_norm(ps, 0.0); }), "clip_grad_norm: max_norm must be > 0, got 0");
}

TEST(ClipGradNorm, AccumulatesInDouble) {
  // A million equal gradients: an f32 running sum of squares would be off by
  // about 1e-3 relative. Squares are rounded to f32 (6e-8 relative each,
  // unless the compiler fuses them into the sums) and summed in f32 lanes of
  // 16 terms, the lanes in double: within 16 roundings, 1e-6.
  const int64_t n = 1'000'000;
  std::vector<float> w(n), g(n, 1e-3f);
  std::vector<Param> ps = {{"a", {n}, w.data(), g.data()}};
  const double want = std::sqrt(static_cast<double>(n)) * static_cast<double>(1e-3f);
  EXPECT_NEAR(grad_norm(ps), want, want * 1e-6);
  EXPECT_NEAR(grad_sq_norm(ps), want * want, want * want * 1e-6);
}

// ---------------------------------------------------------------------------
// Learning-rate schedules

TEST(LrSchedule, Constant) {
  LrSchedule s = LrSchedule::constant(3e-4);
  EXPECT_EQ(s.at(0), 3e-4);
  EXPECT_EQ(s.at(1'000'000), 3e-4);
  EXPECT_EQ(s.str(), "constant(lr=0.0003)");
}

TEST(LrSchedule, WarmupThenCosine) {
  // max 1, min 0.1, 10 warm-up steps, 110 in all: the cosine spans steps 10..110.
  LrSchedule s = LrSchedule::warmup_cosine(1.0, 0.1, 10, 110);
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);                                      // (0 + 1) / 10
  EXPECT_DOUBLE_EQ(s.at(4), 0.5);                                      // (4 + 1) / 10
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);                                      // last warm-up step reaches the peak
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);                                     // cosine at progress 0
  EXPECT_DOUBLE_EQ(s.at(35), 0.1 + 0.9 * 0.5 * (1 + std::sqrt(0.5)));  // progress 1/4: cos(pi/4)
  EXPECT_NEAR(s.at(60), 0.55, 1e-15);                                  // progress 1/2: halfway
  EXPECT_NEAR(s.at(109), 0.1 + 0.45 * (1 + std::cos(std::numbers::pi * 0.99)), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 0.1);   // the end
  EXPECT_DOUBLE_EQ(s.at(5000), 0.1);  // and after it
  for (int64_t t = 10; t < 110; ++t) EXPECT_GE(s.at(t), s.at(t + 1)) << "not decreasing at step " << t;
  EXPECT_EQ(s.str(), "warmup_cosine(max_lr=1, min_lr=0.1, warmup=10, total=110)");
}

TEST(LrSchedule, EdgeCasesAndErrors) {
  EXPECT_DOUBLE_EQ(LrSchedule::warmup_cosine(1.0, 0.0, 0, 10).at(0), 1.0);  // no warm-up
  LrSchedule all_warmup = LrSchedule::warmup_cosine(1.0, 0.2, 4, 4);
  EXPECT_DOUBLE_EQ(all_warmup.at(3), 1.0);
  EXPECT_DOUBLE_EQ(all_warmup.at(4), 0.2);
  EXPECT_EQ(error_of([] { LrSchedule::constant(1.0).at(-1); }), "lr schedule: step -1 is negative");
  EXPECT_EQ(error_of([] { LrSchedule::warmup_cosine(0.1, 1.0, 0, 10); }),
            "lr schedule: need 0 <= min_lr <= max_lr, got min_lr=1 max_lr=0.1");
  EXPECT_EQ(error_of([] { LrSchedule::warmup_cosine(1.0, 0.1, 20, 10); }),
            "lr schedule: need 0 <= warmup steps <= total steps, got warmup=20 total=10");
  EXPECT_EQ(error_of([] { LrSchedule::constant(-1.0); }), "lr schedule: lr must be finite and >= 0, got -1");
}

}  // namespace
}  // namespace pf
