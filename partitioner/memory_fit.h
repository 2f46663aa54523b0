// What a graph that fits nowhere would need: memory per device, or devices.
#pragma once

#include <cstdint>
#include <vector>

#include "partitioner/stage_cost.h"
#include "partitioner/stage_search.h"

namespace pf {

/// The least memory M such that, if every device had M, some split onto
/// `slots` would fit: min over splits of max over stages of v * memory (a
/// stage fits its share floor(M / v) exactly when M >= v * its memory).
/// A min-max DP like the period search, with memory in place of time.
int64_t min_device_memory(const StageCosts& costs, const std::vector<int>& bounds, const std::vector<StageSlot>& slots,
                          int virtual_stages);

/// The smallest number of devices of `memory_bytes` each (with the rule,
/// micro-batches and virtual stages of `options`) onto which some split fits;
/// 0 when no number does. Exact: the count is not monotone (with 1F1B, more
/// stages put more micro-batches in flight on the first), so every count is
/// decided, not bisected.
int smallest_device_count(const StageCosts& costs, const std::vector<int>& bounds, const PartitionOptions& options,
                          int64_t memory_bytes);

}  // namespace pf
