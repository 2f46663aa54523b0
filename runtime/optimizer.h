// Optimizers over plain float arrays (SGD with momentum, AdamW) and gradient clipping.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/types.h"

namespace pf {

class SafeTensors;

/// One parameter as an optimizer sees it: non-owning views of its weights
/// and of its accumulated gradient, both f32 of `shape`. The arrays belong to
/// the caller and must outlive the optimizer.
struct Param {
  std::string name;  // stable checkpoint key, e.g. "h.0.attn.w"
  Shape shape;
  float* value = nullptr;  // (numel)
  float* grad = nullptr;   // (numel); read by step(), scaled by clipping
  /// Whether weight decay applies; biases and norm gains usually opt out.
  bool decay = true;
  /// A view of part of a parameter, for an optimizer that steps only its
  /// share of each (state sharded over data-parallel replicas): elements
  /// [offset, offset + numel()) of the parameter laid out flat, whose own
  /// shape is `whole`. Empty `whole`: the view is the whole parameter.
  int64_t offset = 0;
  Shape whole = {};

  int64_t numel() const;
  bool is_piece() const { return !whole.empty(); }
  /// The parameter's own shape, whether this views all of it or a piece.
  const Shape& whole_shape() const { return is_piece() ? whole : shape; }
};

/// A named view of one optimizer state buffer, for checkpoints: named
/// "<param>.<slot>" (e.g. "h.0.attn.w.exp_avg"), f32 of the parameter's shape
/// (`whole`); where the optimizer steps a piece of the parameter (Param::
/// whole), the buffer holds that piece: `type` is f32[numel], elements
/// [offset, offset + numel) of the whole buffer.
struct StateBuffer {
  std::string name;
  TensorType type;
  float* data = nullptr;
  TensorType whole;
  int64_t offset = 0;
};

/// The common part of every optimizer: the parameters, the step count and
/// per-parameter state buffers ("slots"), all allocated once at construction
/// so that step() never allocates.
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  /// "sgd" or "adamw": recorded in saved state and checked on load.
  virtual std::string_view kind() const = 0;
  /// Applies one update with learning rate `lr` to every parameter, using its
  /// current gradient, and counts the step.
  virtual void step(double lr) = 0;

  /// Updates taken so far (AdamW's bias correction depends on it).
  int64_t step_count() const { return steps_; }
  const std::vector<Param>& params() const { return params_; }

  /// Every state buffer, parameter by parameter in construction order, slot by
  /// slot within a parameter. The views are writable so that a loader can
  /// fill them; the storage never moves.
  std::vector<StateBuffer> state();
  /// The names of a parameter's state buffers ("exp_avg", "exp_avg_sq").
  const std::vector<std::string>& slot_names() const { return slots_; }

  /// Adds every state buffer to `out`, and records the kind and step count in
  /// its metadata ("optimizer", "optimizer.step"). Throws Error for an
  /// optimizer of pieces: its buffers are parts of tensors.
  void save_state(SafeTensors& out) const;
  /// Restores what save_state() wrote (an optimizer of pieces takes its
  /// elements of each whole buffer). Throws Error listing every missing or
  /// mismatched buffer, or when the kind or step count disagree or are absent;
  /// other tensors in `in` (the parameters themselves) are ignored.
  void load_state(const SafeTensors& in);

 protected:
  /// Validates `params` (non-null arrays, unique non-empty names, non-negative
  /// shapes) and allocates `slots.size()` zeroed buffers per parameter.
  Optimizer(std::vector<Param> params, std::vector<std::string> slots);

  /// Slot `k` of parameter `p`: numel floats.
  float* slot(size_t p, size_t k) { return state_[p * slots_.size() + k].data(); }

  std::vector<Param> params_;
  int64_t steps_ = 0;

 private:
  std::vector<std::string> slots_;
  std::vector<std::vector<float>> state_;  // [param][slot], each (numel)
};

/// Hyperparameters of Sgd, named and defaulted as in torch.optim.SGD.
struct SgdOptions {
  double momentum = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// Stochastic gradient descent with optional momentum, Nesterov momentum and
/// (coupled, L2) weight decay, with torch.optim.SGD's semantics (dampening 0):
///   g = grad + wd * w
///   buf = momentum * buf + g          (buf starts at 0, so step 1 gives buf = g)
///   d = nesterov ? g + momentum * buf : buf     (d = g without momentum)
///   w -= lr * d
/// State: "<param>.momentum_buffer" when momentum > 0, nothing otherwise.
class Sgd final : public Optimizer {
 public:
  Sgd(std::vector<Param> params, SgdOptions options);
  std::string_view kind() const override { return "sgd"; }
  void step(double lr) override;

 private:
  SgdOptions options_;
};

/// Hyperparameters of AdamW, named and defaulted as in torch.optim.AdamW.
struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

/// Adam with decoupled weight decay, with torch.optim.AdamW's semantics
/// (amsgrad off). At step t (1-based):
///   w *= 1 - lr * wd
///   m = b1 * m + (1 - b1) * g
///   v = b2 * v + (1 - b2) * g^2
///   w -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
/// Moments are stored in f32; the per-step scalars are computed in double.
/// State: "<param>.exp_avg" (m) and "<param>.exp_avg_sq" (v).
class AdamW final : public Optimizer {
 public:
  AdamW(std::vector<Param> params, AdamWOptions options);
  std::string_view kind() const override { return "adamw"; }
  void step(double lr) override;

 private:
  AdamWOptions options_;
};

/// The optimizer `kind` names: "sgd" (Sgd with `momentum`) or "adamw" (AdamW
/// with its default betas and eps), both with `weight_decay`. Throws Error
/// for another kind.
std::unique_ptr<Optimizer> make_optimizer(std::string_view kind, std::vector<Param> params, double momentum,
                                          double weight_decay);

/// The global L2 norm of every gradient: squares summed in short f32 runs,
/// the runs in double, in a fixed order (the same on any thread count). Split from
/// clipping so that a pipeline can add the squares of all its stages before
/// taking the root (see grad_sq_norm).
double grad_norm(std::span<const Param> params);
/// The sum of squares of every gradient element, as grad_norm sums it.
double grad_sq_norm(std::span<const Param> params);

/// Multiplies every gradient by `factor`.
void scale_grads(std::span<const Param> params, double factor);

/// The factor torch.nn.utils.clip_grad_norm_ applies for a global norm
/// `norm`: max_norm / (norm + 1e-6) when that is below 1, else 1. A
/// non-finite norm gives 1 (gradients left as they are) so that the caller,
/// which sees the norm, can skip the step instead of training on NaNs.
double clip_factor(double norm, double max_norm);

/// Clips the gradients to global norm `max_norm` as
/// torch.nn.utils.clip_grad_norm_ does and returns the norm before clipping.
/// Throws Error when max_norm is not positive.
double clip_grad_norm(std::span<const Param> params, double max_norm);

}  // namespace pf
