// Learning-rate schedules: constant, and linear warm-up followed by cosine decay.
#pragma once

#include <cstdint>
#include <string>

namespace pf {

/// The learning rate as a function of the optimizer step.
///
/// Steps are numbered from 0: at(s) is the rate for the update that takes
/// the optimizer from s to s + 1 completed steps (pass Optimizer::step_count()
/// before calling step()).
///
/// Warm-up + cosine, with W warm-up steps and N total steps:
///   s <  W:      max_lr * (s + 1) / W           (never 0; max_lr at s = W - 1)
///   W <= s < N:  min_lr + (max_lr - min_lr) * (1 + cos(pi * (s - W) / (N - W))) / 2
///   s >= N:      min_lr                          (training past N keeps the floor)
/// so at(W) = max_lr and the decay reaches min_lr at s = N.
class LrSchedule {
 public:
  /// The same rate at every step.
  static LrSchedule constant(double lr);
  /// Throws Error unless 0 <= min_lr <= max_lr and 0 <= warmup_steps <= total_steps.
  static LrSchedule warmup_cosine(double max_lr, double min_lr, int64_t warmup_steps, int64_t total_steps);

  /// The rate for step `step` (>= 0; Error otherwise).
  double at(int64_t step) const;
  /// "constant(lr=0.001)" or "warmup_cosine(max_lr=..., min_lr=..., warmup=..., total=...)", for logs.
  std::string str() const;

 private:
  enum class Kind { constant, warmup_cosine };
  LrSchedule(Kind kind, double max_lr, double min_lr, int64_t warmup, int64_t total)
      : kind_(kind), max_lr_(max_lr), min_lr_(min_lr), warmup_(warmup), total_(total) {}

  Kind kind_;
  double max_lr_;
  double min_lr_;
  int64_t warmup_;
  int64_t total_;
};

}  // namespace pf
