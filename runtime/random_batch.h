// Random inputs for every argument of a graph: the batches of tests and benchmarks that need numbers, not data.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ir/module.h"

namespace pf {

/// One batch: each argument's bytes, and views of them by name and in order.
struct RandomBatch {
  std::vector<std::vector<std::byte>> data;                  // per argument
  std::vector<std::pair<std::string, const void*>> named;    // (argument name, its bytes)
  std::vector<const void*> pointers;                         // in argument order
};

/// Fills every argument of `g` from one std::mt19937 seeded with `seed`, in
/// argument order: f32 uniform in [-1, 1), integers uniform in
/// [0, int_range) (token ids or labels, stored as i32). The same seed gives
/// the same batch on every platform the engine's numbers are compared on.
RandomBatch random_batch(const Function& g, uint32_t seed, int32_t int_range);

}  // namespace pf
