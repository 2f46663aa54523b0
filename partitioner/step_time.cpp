// A step's predicted time from the schedule simulator and the stage costs.
#include "partitioner/step_time.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/tensor_parallel.h"
#include "passes/cost_summary.h"

namespace pf {

std::vector<double> weight_shares(const Plan& plan, const DeviceProfile& profile) {
  std::vector<double> out;
  for (const PlanStage& stage : plan.stages) {
    double share = 0.5;
    if (stage.split) {
      Module program = parse_module_text(fmt::format("stage {}", stage.index), stage.program);
      verify_module(program, plan.binding);
      auto seconds = [&](const std::string& name) {
        double total = 0;
        if (const Function* f = program.find_function(name))
          for (const Op& op : f->ops) {
            const OpCost cost = op_cost(*f, op, plan.binding, &program);
            total += op_time(profile, op.kind, cost.flops, cost.bytes);
          }
        return total;
      };
      const double input = seconds(stage.split->input), weight = seconds(stage.split->weight);
      if (input + weight > 0) share = weight / (input + weight);
    }
    out.push_back(share);
  }
  return out;
}

std::vector<StageTime> stage_times(const CostGraph& graph, const PartitionResult& result) {
  std::vector<StageTime> out;
  for (const StagePlan& s : result.stages) {
    double forward = 0, backward = 0;
    for (int i = s.begin; i < s.end; ++i) {
      forward += graph.nodes[i].forward_s;
      backward += graph.nodes[i].backward_s;
    }
    // compute_s is the nodes' time on the stage's device: keep the forward share.
    const double unscaled = forward + backward;
    const double scale = unscaled > 0 ? s.compute_s / unscaled : 0.0;
    out.push_back({forward * scale, backward * scale, s.comm_s});
  }
  return out;
}

StepPrediction predict_step(const CostGraph& graph, const PartitionResult& result, const StepOptions& options) {
  const int devices = static_cast<int>(result.devices.size());
  // The order of a cost-driven schedule (zbi) is chosen on these costs, as
  // the runtime chooses it on the plan's (plan_action_costs).
  std::vector<StageTime> times = stage_times(graph, result);
  if (options.weight_shares.size() == times.size())
    for (size_t s = 0; s < times.size(); ++s) times[s].weight_share = options.weight_shares[s];
  const ActionCosts costs = stage_action_costs(times);
  const Schedule schedule =
      planned_schedule(options.schedule, options.schedule_actions, devices, options.microbatches,
                       options.virtual_stages, costs);
  const Simulation sim = simulate(schedule, costs);

  std::vector<int64_t> param_bytes(devices, 0), own_bytes(devices, 0);
  for (const StagePlan& s : result.stages) {
    param_bytes[s.device] += s.param_bytes;
    own_bytes[s.device] += s.own_param_bytes;
  }
  // A block of the experts is summed over the replicas holding it, one per group.
  const int holders = options.data_parallel / std::max(1, options.expert_parallel);
  StepPrediction p;
  p.pipeline_s = sim.makespan;
  p.bubble_fraction = sim.bubble_fraction;
  double synced = sim.makespan;
  for (int d = 0; d < devices; ++d) {
    double last = 0;  // the end of the device's last computation
    for (const TimedAction& a : sim.per_device[d])
      if (is_compute(a.action.kind)) last = std::max(last, a.end);
    const double bytes = static_cast<double>(param_bytes[d]);
    const double sync =
        ring_all_reduce_s(bytes - static_cast<double>(own_bytes[d]), options.data_parallel, options.replica_link) +
        ring_all_reduce_s(static_cast<double>(own_bytes[d]), holders, options.replica_link);
    // What this replica steps: all of its parameters, or a 1/D share (of
    // its own experts 1/(D/X)), whose updates it then sends to the others
    // and receives theirs (an all-gather: half a ring all-reduce).
    const bool shared = options.shard_optimizer && options.data_parallel > 1;
    const double own = static_cast<double>(own_bytes[d]);
    const double stepped = shared ? (bytes - own) / options.data_parallel + own / holders : bytes;
    const double gather = shared ? (ring_all_reduce_s(bytes - own, options.data_parallel, options.replica_link) +
                                    ring_all_reduce_s(own, holders, options.replica_link)) /
                                       2
                                 : 0.0;
    // Read weights, gradients and state; write weights and state (the
    // state factors are already a share's).
    const double traffic = 3.0 * stepped + 2.0 * (options.optimizer_state_factor * (bytes - own) +
                                                  options.own_optimizer_state_factor * own);
    const double optimizer = options.update_s_per_param > 0 ? options.update_s_per_param * stepped / 4.0
                             : options.memory_bandwidth > 0 ? traffic / options.memory_bandwidth
                                                             : 0.0;
    synced = std::max(synced, last + sync);
    p.step_s = std::max(p.step_s, last + sync + optimizer + gather);
  }
  p.step_s = std::max(p.step_s, sim.makespan);
  p.sync_s = synced - sim.makespan;
  p.optimizer_s = p.step_s - synced;
  return p;
}

double graph_flops(const CostGraph& graph) {
  double flops = 0;
  for (const CostNode& n : graph.nodes) flops += n.flops;
  return flops;
}

double flop_utilisation(double flops, double step_s, int64_t gpus, double peak_flops) {
  if (step_s <= 0 || gpus <= 0 || peak_flops <= 0) return 0.0;
  return flops / (step_s * static_cast<double>(gpus) * peak_flops);
}

}  // namespace pf
