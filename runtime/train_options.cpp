// How a model trains: defaults and the checks every way of training shares.
#include "runtime/train_options.h"

#include <fmt/format.h>

#include <cmath>

#include "ir/diagnostic.h"

namespace pf {

double default_lr(const std::string& optimizer) { return optimizer == "sgd" ? 0.01 : 3e-4; }

std::optional<PackWeights> pack_weights_named(std::string_view name) {
  if (name == "auto") return PackWeights::automatic;
  if (name == "on") return PackWeights::on;
  if (name == "off") return PackWeights::off;
  return std::nullopt;
}

double default_clip() { return 1.0; }

void check_training_options(const TrainingOptions& o, const std::string& what) {
  auto fail = [&](const std::string& why) { throw Error(fmt::format("{}: {}", what, why)); };
  if (o.optimizer != "adamw" && o.optimizer != "sgd")
    fail(fmt::format("unknown optimizer '{}'; use sgd or adamw", o.optimizer));
  if (!(o.lr >= 0) || !std::isfinite(o.lr)) fail(fmt::format("lr must be finite and not negative, not {}", o.lr));
  if (!(o.momentum >= 0)) fail(fmt::format("momentum must not be negative, not {}", o.momentum));
  if (!(o.weight_decay >= 0)) fail(fmt::format("weight_decay must not be negative, not {}", o.weight_decay));
  if (!(o.clip >= 0)) fail(fmt::format("clip must not be negative, not {}", o.clip));
  if (o.steps < 1) fail(fmt::format("steps must be positive, not {}", o.steps));
  if (o.warmup < 0 || o.warmup > o.steps)
    fail(fmt::format("warmup must be in [0, steps = {}], not {}", o.steps, o.warmup));
}

}  // namespace pf
