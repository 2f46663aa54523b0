// What one micro-batch costs on one stage: each action's time on a device
// profile and its FLOPs, priced from the stage's own compiled program.
#pragma once

#include <string>
#include <vector>

#include <cstdint>

#include "ir/module.h"
#include "partitioner/device_profile.h"
#include "plan/plan.h"
#include "partitioner/stage_search.h"

namespace pf {

/// One stage's actions for one micro-batch, on the reference profile (a
/// device of another speed divides the times by its speed).
struct StagePrice {
  double forward_s = 0;
  double backward_s = 0;         // the whole backward (schedules that run it fused)
  double backward_input_s = 0;   // its input part B (zero-bubble schedules)
  double backward_weight_s = 0;  // its weight part W
  int64_t forward_flops = 0;
  int64_t backward_flops = 0;    // B + W when the backward is split: the same ops
  int64_t recomputed_flops = 0;  // of backward_flops: the forward ops it computes again (not model FLOPs)
  int64_t param_bytes = 0;       // the stage's parameters (a tied one on each stage holding it)
  int64_t own_param_bytes = 0;   // of param_bytes, a replica's blocks of the experts (expert parallelism)
  int64_t slot_bytes = 0;        // one micro-batch's stash slot: the stash, then the deferred values
  int64_t send_act_bytes = 0;    // activations sent to the next stage
  int64_t send_grad_bytes = 0;   // input gradients sent to the previous stage
};

/// Prices `stage` from `program` (its module, as load_plan parses it) under
/// `binding` (the plan's micro-batch):
///  - forward: each op of the graph as the compiler prices it, measured
///    (op_timing_key) where the profile has it, else the roofline;
///  - backward: the backward functions' own ops. Where the profile measured
///    every forward op of the stage (`pipeforge profile` of this model), the
///    measured backward of those ops is the backward's total, shared between
///    B and W in the proportion of their ops' rooflines: the profiler timed
///    each op's whole backward on the device, which its roofline misses by
///    the kernels' real efficiency. Otherwise each backward op is priced on
///    its own (measured under its own key, else the roofline).
/// The slot is laid out as the runtime lays it out: each value rounded up to
/// the arena's 64-byte alignment.
StagePrice price_stage(const Module& program, const PlanStage& stage, const DimBinding& binding,
                       const DeviceProfile& profile);

/// How one GPU of a stage's device holds and computes it, where that differs
/// from the program's f32 types on one device.
struct GpuShare {
  int tensor_parallel = 1;      // the plan's T: each device is T GPUs (modelled, see tensor_parallel.h)
  bool sequence_parallel = false;  // the plan's
  LinkSpec tensor_link;         // between them
  int64_t activation_bytes = 0;  // bytes a float activation takes as stored and sent (2 in bf16); 0: its type's
  int expert_parallel = 1;      // the plan's: replicas per group sharing the experts out
  LinkSpec replica_link;        // between a stage's replicas
};

/// `price` (from price_stage) as one GPU of the group sees it: the compiler's
/// tensor-parallel split of the stage's graph (its share of the work plus the
/// all-reduces, of the parameters and of the stash), a replica's share of
/// the experts under expert parallelism (apply_expert_parallel), and
/// activations in the dtype the stage stores. FLOPs stay the model's.
StagePrice share_per_gpu(StagePrice price, const Module& program, const PlanStage& stage, const DimBinding& binding,
                         const DeviceProfile& profile, const GpuShare& share);

}  // namespace pf
