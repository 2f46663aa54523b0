// Simulating a plan's training step on a cost model.
#include "simulator/simulator.h"

#include <fmt/format.h>

#include <algorithm>

#include "ir/diagnostic.h"
#include "partitioner/stage_search.h"
#include "partitioner/tensor_parallel.h"
#include "runtime/plan_schedule.h"
#include "simulator/memory_peaks.h"
#include "simulator/plan_devices.h"

namespace pf {

namespace {

/// The optimizer's state in copies of the parameters (the compiler's memory
/// model), and the bytes its step moves per byte of parameters: AdamW reads
/// the weight, gradient and both moments and writes the weight and moments
/// (7); SGD with momentum reads the weight, gradient and buffer and writes
/// the weight and buffer (5). The gradient norm reads every gradient once more.
struct OptimizerModel {
  double state_copies;
  int64_t bytes_per_param_byte;
};

OptimizerModel optimizer_model(const std::string& name) {
  if (name == "adamw") return {2.0, 7 + 1};
  if (name == "sgd") return {1.0, 5 + 1};
  throw Error(fmt::format("unknown optimizer '{}'; use adamw or sgd", name));
}

/// A stage's update: measured per parameter where the profile has its
/// optimizer's rate (parameters are f32 master weights), else its bytes at
/// the profile's bandwidth.
double update_time(const DeviceProfile& profile, std::string_view name, const OptimizerModel& model,
                   int64_t param_bytes) {
  if (const std::optional<double> rate = measured_update_rate(profile, name))
    return *rate * static_cast<double>(param_bytes) / 4.0;
  return op_time(profile, 0, model.bytes_per_param_byte * param_bytes);
}

/// From a send on `from` to its receive on `to` being ready.
double hand_off_s(const Cluster& cluster, int from, int to, int64_t bytes) {
  if (from == to) return 0;  // the receiver reads the sender's buffer in place
  const LinkSpec link = link_between(cluster, from, to);
  return link.latency_s + static_cast<double>(bytes) / link.bandwidth_bytes_per_s;
}

}  // namespace

PlanSimulation simulate_plan(const Plan& plan, const std::vector<Module>& programs, const DeviceProfile& profile,
                             const Cluster& cluster, const SimulateOptions& options) {
  const OptimizerModel optimizer = optimizer_model(options.optimizer);
  if (plan.loss_stage_output.empty())
    throw Error(fmt::format("plan for @{} is an inference plan: it has no training step to simulate", plan.model_name));
  const size_t n = plan.stages.size();
  if (programs.size() < n) throw Error(fmt::format("{} stage programs for a plan of {} stages", programs.size(), n));

  PlanSimulation sim;
  sim.schedule = plan_schedule(plan);
  sim.replicas = replica_count(plan);
  // A sharded optimizer: each replica keeps and steps 1/D of a stage's state,
  // and 1/(D/X) of its own experts' (the replicas holding the same block
  // share those).
  const int state_share = plan.shard_optimizer ? sim.replicas : 1;
  const int own_state_share = plan.shard_optimizer ? sim.replicas / std::max(1, plan.expert_parallel) : 1;
  const int p = sim.schedule.devices;
  const std::vector<DeviceEntry> entries = plan_device_entries(plan, profile);
  const int64_t m = plan.microbatches;

  // One GPU's view of a device: its share of a tensor-parallel group (the
  // links between groups carry T GPUs' transfers at once), activations in
  // the dtype the stages store.
  const int tensor = std::max(1, plan.tensor_parallel);
  const Cluster links = tensor > 1 ? grouped_cluster(cluster, tensor, tensor) : cluster;
  const Cluster replica_links = tensor > 1 ? grouped_cluster(cluster, tensor, 1) : cluster;
  GpuShare share;
  share.tensor_parallel = tensor;
  share.sequence_parallel = plan.sequence_parallel;
  share.tensor_link = cluster.intra;
  share.expert_parallel = std::max(1, plan.expert_parallel);
  share.replica_link = replica_link(replica_links, p, sim.replicas);
  if (plan.dtype == DType::bf16 && profile.kind == "cuda") share.activation_bytes = dtype_size(DType::bf16);

  // Every stage priced once, on its device.
  std::vector<int> chunks(static_cast<size_t>(p), 0);  // stages per device
  ActionCosts costs;
  sim.stages.resize(n);
  for (size_t s = 0; s < n; ++s) {
    const PlanStage& ps = plan.stages[s];
    if (!ps.gradients) throw Error(fmt::format("plan stage {} has no backward to simulate", s));
    if (ps.device != sim.schedule.device_of(static_cast<int>(s)))
      throw Error(fmt::format("plan stage {} is on device {}, but schedule {} runs it on device {}; compile the plan "
                              "again",
                              s, ps.device, plan.schedule, sim.schedule.device_of(static_cast<int>(s))));
    SimulatedStage& st = sim.stages[s];
    st.device = ps.device;
    st.price = share_per_gpu(price_stage(programs[s], ps, plan.binding, profile), programs[s], ps, plan.binding,
                             profile, share);
    const double speed = entries[static_cast<size_t>(ps.device)].spec.speed;
    ActionCosts::Stage& c = costs.stages.emplace_back();
    c.forward = st.price.forward_s / speed;
    c.backward = st.price.backward_s / speed;
    c.backward_input = st.price.backward_input_s / speed;
    c.backward_weight = st.price.backward_weight_s / speed;
    if (s + 1 < n) c.send_act = hand_off_s(links, ps.device, plan.stages[s + 1].device, st.price.send_act_bytes);
    if (s > 0) c.send_grad = hand_off_s(links, ps.device, plan.stages[s - 1].device, st.price.send_grad_bytes);
    st.forward_s = c.forward;
    st.backward_s = ps.split ? c.backward_input + c.backward_weight : c.backward;
    // A measured profile prices the devices of its kind (the entries carry
    // their built-in roofline); a CPU device splits the update over its threads.
    const DeviceEntry& device = entries[static_cast<size_t>(ps.device)];
    const DeviceProfile& rates = device.profile.kind == profile.kind ? profile : device.profile;
    const int64_t own = st.price.own_param_bytes;
    st.optimizer_s = (update_time(rates, options.optimizer, optimizer, st.price.param_bytes - own) / state_share +
                      update_time(rates, options.optimizer, optimizer, own) / own_state_share) /
                     device.threads;
    chunks[static_cast<size_t>(ps.device)] += 1;
  }

  // The runtime's action lists in simulated time.
  sim.timeline = simulate(sim.schedule, costs);
  sim.costs = costs;
  sim.walk_s = sim.timeline.makespan;
  sim.bubble = sim.timeline.bubble_fraction;
  sim.theory_bubble = theoretical_bubble(sim.schedule, UnitCosts{});

  // Busy time, and where each stage's last weight gradient ends.
  sim.devices.resize(static_cast<size_t>(p));
  std::vector<double> last_grad(n, 0.0);
  for (size_t d = 0; d < sim.timeline.per_device.size(); ++d)
    for (const TimedAction& t : sim.timeline.per_device[d]) {
      if (!is_compute(t.action.kind)) continue;
      const auto s = static_cast<size_t>(t.action.stage);
      sim.stages[s].busy_s += t.end - t.start;
      sim.devices[d].busy_s += t.end - t.start;
      if (t.action.kind == ActionKind::backward || t.action.kind == ActionKind::backward_weight)
        last_grad[s] = std::max(last_grad[s], t.end);
    }

  // The replicas' gradient sums overlap what is left of the step; the
  // optimizer steps once the last of them and every device are done.
  // A replica's blocks of the experts are summed over the replicas holding
  // each, one per group of replicas sharing them out.
  const RingAllReduce ring(sim.replicas, share.replica_link);
  const RingAllReduce blocks(sim.replicas / share.expert_parallel, share.replica_link);
  double done = sim.walk_s;
  for (size_t s = 0; s < n; ++s) {
    SimulatedStage& st = sim.stages[s];
    st.all_reduce_start_s = last_grad[s];
    st.all_reduce_s = ring.seconds(static_cast<double>(st.price.param_bytes - st.price.own_param_bytes)) +
                      blocks.seconds(static_cast<double>(st.price.own_param_bytes));
    done = std::max(done, st.all_reduce_start_s + st.all_reduce_s);
    // Sharded, the replicas then gather each other's updated shares: half
    // a ring all-reduce's traffic.
    if (state_share > 1) st.optimizer_s += st.all_reduce_s / 2;
    sim.devices[static_cast<size_t>(st.device)].optimizer_s += st.optimizer_s;
  }
  sim.update_start_s = done;
  double slowest = 0;
  for (const SimulatedDevice& d : sim.devices) slowest = std::max(slowest, d.optimizer_s);
  sim.step_s = done + slowest;

  // Memory: what each stage holds all step, and a slot per micro-batch in flight.
  std::vector<StageMemory> memory;
  for (const SimulatedStage& st : sim.stages) {
    const auto own = static_cast<double>(st.price.own_param_bytes);
    const double state = optimizer.state_copies * ((static_cast<double>(st.price.param_bytes) - own) / state_share +
                                                   own / own_state_share);
    memory.push_back({2 * st.price.param_bytes + static_cast<int64_t>(state), st.price.slot_bytes});
  }
  const MemoryPeaks peaks = memory_peaks(sim.schedule, sim.timeline, memory);
  for (size_t s = 0; s < n; ++s) {
    SimulatedStage& st = sim.stages[s];
    st.peak_memory_bytes = peaks.per_stage[s];
    const auto d = static_cast<size_t>(st.device);
    st.memory_limit_bytes = plan.devices[d].memory_bytes / std::max(1, chunks[d]);
  }
  for (size_t d = 0; d < sim.devices.size(); ++d) {
    sim.devices[d].peak_memory_bytes = peaks.per_device[d];
    sim.devices[d].memory_limit_bytes = plan.devices[d].memory_bytes;
  }

  // Throughput and model FLOPs utilisation, over every replica.
  int64_t per_microbatch = 1;
  for (const PlanTensor& t : plan.stages.front().inputs)
    if (!t.whole && !t.type.shape.empty()) {
      per_microbatch = t.type.shape[0];
      break;
    }
  sim.samples = per_microbatch * m * sim.replicas;
  double flops = 0, peak = 0;
  for (const SimulatedStage& st : sim.stages)
    flops += static_cast<double>(st.price.forward_flops + st.price.backward_flops - st.price.recomputed_flops);
  for (int d = 0; d < p; ++d) peak += entries[static_cast<size_t>(d)].spec.speed * profile.flops;
  sim.flops = flops * static_cast<double>(m) * sim.replicas;
  sim.peak_flops = peak * sim.replicas * tensor;
  return sim;
}

}  // namespace pf
