// Stage slots from the options, and the per-boundary transfer times.
#include "partitioner/stage_cost.h"

#include <fmt/format.h>

#include <cmath>

#include "ir/diagnostic.h"

namespace pf {

namespace {

/// Every stage needs at least one piece between two cut positions.
void check_stage_count(const CostGraph& graph, int stages) {
  const int pieces = static_cast<int>(stage_boundaries(graph).size()) - 1;
  if (stages > pieces)
    throw Error(fmt::format("cannot cut {} {} into {} stages", pieces,
                            graph.cut_candidates.empty() ? "nodes" : "layers", stages));
}

/// Each of `stages` stages' peak of stashed micro-batches: the rule's, or
/// the written schedule's own (which runs one number of stages only).
std::vector<int> stage_inflight(const PartitionOptions& options, int stages) {
  if (options.rule != MemoryRule::written)
    return inflight_per_stage(options.rule, stages, options.microbatches, options.virtual_stages);
  if (options.written_stashed.size() != static_cast<size_t>(stages))
    throw Error(fmt::format("the schedule file runs {} stages, not {}", options.written_stashed.size(), stages));
  return options.written_stashed;
}

bool splits_backward(const PartitionOptions& options) {
  return options.rule == MemoryRule::written ? options.written_split : splits_backward(options.rule);
}

void mark_local_hand_offs(std::vector<StageSlot>& slots) {
  for (size_t s = 1; s < slots.size(); ++s)
    slots[s - 1].local_out = slots[s].local_in = slots[s - 1].device == slots[s].device;
}

}  // namespace

std::vector<StageSlot> stage_slots(const CostGraph& graph, const PartitionOptions& options) {
  const int stages = options.stages;
  const int v = options.virtual_stages;
  if (stages < 1) throw Error(fmt::format("a pipeline needs at least 1 stage, got {}", stages));
  if (options.microbatches < 1)
    throw Error(fmt::format("micro-batches must be at least 1, got {}", options.microbatches));
  if (v < 1) throw Error(fmt::format("virtual stages must be at least 1, got {}", v));
  if (stages % v != 0) throw Error(fmt::format("{} stages are not a multiple of {} virtual stages", stages, v));
  const int p = stages / v;
  if (static_cast<int>(options.devices.size()) != p) {
    if (v == 1) throw Error(fmt::format("{} stages need {} devices, got {}", stages, p, options.devices.size()));
    throw Error(fmt::format("{} stages of {} virtual stages each need {} devices, got {}", stages, v, p,
                            options.devices.size()));
  }
  for (const DeviceSpec& d : options.devices) {
    if (!std::isfinite(d.speed) || d.speed <= 0)
      throw Error(fmt::format("device '{}' has speed {}, expected a finite value > 0", d.name, d.speed));
    if (d.memory_bytes <= 0)
      throw Error(fmt::format("device '{}' has memory_bytes {}, expected > 0", d.name, d.memory_bytes));
  }
  // A single stage transfers nothing, so its link may be left unset.
  if (stages > 1 && (!std::isfinite(options.link.bandwidth_bytes_per_s) || options.link.bandwidth_bytes_per_s <= 0))
    throw Error(fmt::format("the link has bandwidth {} bytes/s, expected a finite value > 0",
                            options.link.bandwidth_bytes_per_s));
  if (!std::isfinite(options.link.latency_s) || options.link.latency_s < 0)
    throw Error(fmt::format("the link has latency {} s, expected a finite value >= 0", options.link.latency_s));
  if (options.data_parallel < 1)
    throw Error(fmt::format("data-parallel replicas must be at least 1, got {}", options.data_parallel));
  if (options.data_parallel > 1 && (!std::isfinite(options.replica_link.bandwidth_bytes_per_s) ||
                                    options.replica_link.bandwidth_bytes_per_s <= 0 ||
                                    !std::isfinite(options.replica_link.latency_s) ||
                                    options.replica_link.latency_s < 0))
    throw Error(fmt::format("the link between replicas has bandwidth {} bytes/s and latency {} s, expected finite "
                            "values > 0 and >= 0",
                            options.replica_link.bandwidth_bytes_per_s, options.replica_link.latency_s));
  for (const double factor : {options.optimizer_state_factor, options.own_optimizer_state_factor})
    if (!std::isfinite(factor) || factor < 0)
      throw Error(fmt::format("optimizer_state_factor is {}, expected a finite value >= 0", factor));
  check_stage_count(graph, stages);

  std::vector<StageSlot> slots(stages);
  const std::vector<int> inflight = stage_inflight(options, stages);
  for (int s = 0; s < stages; ++s) {
    const int device = options.placement.device(s, p);
    const DeviceSpec& d = options.devices[static_cast<size_t>(device)];
    slots[s] = {device, options.placement.chunk(s, p), 1.0 / d.speed, inflight[static_cast<size_t>(s)],
                d.memory_bytes / v, s > 0 && splits_backward(options)};
  }
  mark_local_hand_offs(slots);
  return slots;
}

std::vector<StageSlot> uniform_slots(const PartitionOptions& options, int devices, int64_t memory_bytes) {
  const int v = options.virtual_stages;
  const int stages = devices * v;
  std::vector<StageSlot> slots(stages);
  const std::vector<int> inflight = stage_inflight(options, stages);
  for (int s = 0; s < stages; ++s)
    slots[s] = {options.placement.device(s, devices), options.placement.chunk(s, devices), 1.0,
                inflight[static_cast<size_t>(s)], memory_bytes / v, s > 0 && splits_backward(options)};
  mark_local_hand_offs(slots);
  return slots;
}

StageCosts::StageCosts(const CostGraph& graph, const PartitionOptions& options)
    : ranges_(graph),
      optimizer_state_factor_(options.optimizer_state_factor),
      own_optimizer_state_factor_(options.own_optimizer_state_factor) {
  const LinkSpec& link = options.link;
  const int n = ranges_.nodes();
  comm_.assign(n + 1, 0.0);
  for (int b = 0; b <= n; ++b) {
    const int64_t bytes = ranges_.crossing_bytes(b);
    // Twice: the activations go forward, their gradients come back.
    const double transfer = bytes > 0 ? 2.0 * static_cast<double>(bytes) / link.bandwidth_bytes_per_s : 0.0;
    comm_[b] = transfer + 2.0 * link.latency_s * ranges_.crossing_tensors(b);
  }
  // The gradient all-reduce runs once per step, so each micro-batch carries
  // 1/m of it.
  if (options.data_parallel > 1) {
    const RingAllReduce ring(options.data_parallel, options.replica_link);
    const double m = options.microbatches;
    sync_per_byte_s_ = ring.per_byte_s / m;
    sync_fixed_s_ = ring.fixed_s / m;
    const int holders = options.data_parallel / std::max(1, options.expert_parallel);
    if (holders > 1) {
      const RingAllReduce blocks(holders, options.replica_link);
      own_sync_per_byte_s_ = blocks.per_byte_s / m;
      own_sync_fixed_s_ = blocks.fixed_s / m;
    }
  }
}

}  // namespace pf
