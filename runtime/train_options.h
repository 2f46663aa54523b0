// How a model trains: the optimizer, its learning-rate schedule and gradient clipping.
#pragma once

#include <cstdint>
#include <string>

namespace pf {

struct TrainerOptions {
  std::string optimizer = "sgd";  // sgd | adamw
  double lr = 0.01;
  double momentum = 0.9;          // sgd
  double weight_decay = 0.0;
  double clip = 0.0;              // max global gradient norm; 0 = off
  int64_t warmup = 0;             // linear warm-up steps, then cosine to lr/10 at `steps`
  bool cosine = false;
  int64_t steps = 1;
  uint64_t seed = 0;
};

}  // namespace pf
