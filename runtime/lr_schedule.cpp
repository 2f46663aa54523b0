// Learning-rate schedules: constant, and linear warm-up followed by cosine decay.
#include "runtime/lr_schedule.h"

#include <cmath>
#include <numbers>

#include <fmt/format.h>

#include "ir/diagnostic.h"

namespace pf {

LrSchedule LrSchedule::constant(double lr) {
  if (!(lr >= 0) || !std::isfinite(lr)) throw Error(fmt::format("lr schedule: lr must be finite and >= 0, got {}", lr));
  return LrSchedule(Kind::constant, lr, lr, 0, 0);
}

LrSchedule LrSchedule::warmup_cosine(double max_lr, double min_lr, int64_t warmup_steps, int64_t total_steps) {
  if (!(min_lr >= 0 && min_lr <= max_lr) || !std::isfinite(max_lr))
    throw Error(fmt::format("lr schedule: need 0 <= min_lr <= max_lr, got min_lr={} max_lr={}", min_lr, max_lr));
  if (warmup_steps < 0 || warmup_steps > total_steps)
    throw Error(fmt::format("lr schedule: need 0 <= warmup steps <= total steps, got warmup={} total={}", warmup_steps,
                            total_steps));
  return LrSchedule(Kind::warmup_cosine, max_lr, min_lr, warmup_steps, total_steps);
}

double LrSchedule::at(int64_t step) const {
  if (step < 0) throw Error(fmt::format("lr schedule: step {} is negative", step));
  if (kind_ == Kind::constant) return max_lr_;
  if (step < warmup_) return max_lr_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
  if (step >= total_) return min_lr_;
  const double progress = static_cast<double>(step - warmup_) / static_cast<double>(total_ - warmup_);
  return min_lr_ + (max_lr_ - min_lr_) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

std::string LrSchedule::str() const {
  if (kind_ == Kind::constant) return fmt::format("constant(lr={})", max_lr_);
  return fmt::format("warmup_cosine(max_lr={}, min_lr={}, warmup={}, total={})", max_lr_, min_lr_, warmup_, total_);
}

}  // namespace pf
