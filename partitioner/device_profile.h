// Device profiles (rooflines, or op times measured on the device), clusters of devices, and --devices lists.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ir/module.h"
#include "ir/op_table.h"
#include "partitioner/stage_search.h"

namespace pf {

/// The time one op takes, for one micro-batch.
struct OpTiming {
  double forward_s = 0;
  double backward_s = 0;  // input and weight gradients together
  bool operator==(const OpTiming&) const = default;
};

/// What the cost model knows about one kind of device: a roofline (peak
/// matmul rate and memory bandwidth) and, optionally, times measured on the
/// device by `pipeforge profile`, which override the roofline op by op.
struct DeviceProfile {
  std::string name;       // "cpu", "a100", "h100", or the name a measured profile gives itself
  std::string kind;       // "cpu" or "cuda"
  std::string precision;  // "fp32", "tf32" or "bf16": the matmul precision `flops` is for
  double flops = 0;       // dense matmul FLOP/s at that precision
  double bandwidth = 0;   // memory bytes/s
  int64_t memory_bytes = 0;
  double launch_s = 0;                       // fixed cost of every op that does any work: a kernel launch, a dispatch
  /// How many cores computed at once while `measured` was timed (`pipeforge
  /// profile --concurrent`): above 1, the times include what stages side by
  /// side on one machine cost each other.
  int concurrent = 1;
  /// Whether every timed run of `measured` found the op's inputs, weights
  /// and packed weights dropped from the caches (`pipeforge profile
  /// --cold-caches`), as a step cycling through more than they hold does.
  bool cold_caches = false;
  /// Per op name: the fraction of `flops` its arithmetic reaches where its
  /// kernel runs below the matmul rate (fused attention's tiles of a few
  /// dozen columns, its exps); 1 for any op not listed.
  std::map<std::string, double, std::less<>> efficiency;
  std::map<std::string, OpTiming> measured;  // keyed by op_timing_key()
  /// Per optimizer ("adamw", "sgd"): seconds per parameter of its step, the
  /// gradient norm included, measured by `pipeforge profile` with
  /// `concurrent` cores updating at once. Where the plan's optimizer is
  /// listed, a stage's update is priced by it instead of its bytes at
  /// `bandwidth` (which AdamW's square roots and divisions do not reach).
  std::map<std::string, double, std::less<>> update_s_per_param;
  std::string path;                          // the file it was loaded from; "" for a built-in profile
};

/// The built-in device names, in the order error messages list them:
/// "cpu", "a100", "h100".
std::vector<std::string_view> builtin_profile_names();

/// Throws unless a measured CPU profile (read from `path`) timed the
/// products as stages of `dtype` ("f32" or "bf16") run them (profile
/// --dtype); `command` ("compile", "simulate") is what to run again with the
/// profile's dtype. Other profiles price any dtype.
void check_profile_dtype(const DeviceProfile& profile, const std::string& path, std::string_view dtype,
                         std::string_view command);

/// A built-in roofline at `precision` ("fp32", "tf32" or "bf16"). Throws
/// pf::Error for an unknown name ("unknown device kind 'tpu'; known: cpu,
/// a100, h100"), an unknown precision, or one the device has no rate for
/// (the CPU has fp32 only).
DeviceProfile builtin_profile(std::string_view name, std::string_view precision = "fp32");

/// Roofline time of one op: the longer of its arithmetic at the profile's
/// matmul rate and its memory traffic at the profile's bandwidth, plus the
/// launch overhead. An op that does neither (a parameter read, a view) costs
/// nothing: no kernel runs.
double op_time(const DeviceProfile& profile, int64_t flops, int64_t bytes);
/// The same for an op of `kind`: its arithmetic at the profile's efficiency
/// for that kind.
double op_time(const DeviceProfile& profile, OpKind kind, int64_t flops, int64_t bytes);

/// The key measured times are stored under: the op's name, its operand
/// types and its attributes as canonical text, e.g.
/// "matmul f32[8,64,768], f32[768,2304] transpose_b=true".
std::string op_timing_key(OpKind kind, std::span<const TensorType> operands, std::string_view attrs);
/// The key of `op` of a verified function: its own attributes (not `layer`
/// or the cost annotations, which do not change its time), in the op
/// table's order, with dimensions evaluated under `binding`.
std::string op_timing_key(const Function& f, const Op& op, const DimBinding& binding);

/// The measured timing stored under `key`, or nullopt.
std::optional<OpTiming> find_timing(const DeviceProfile& profile, const std::string& key);
/// The measured timing under `key`; throws pf::Error("profile P.json has no
/// timing for KEY; run 'pipeforge profile' for this model") when there is none.
OpTiming require_timing(const DeviceProfile& profile, const std::string& key);
/// The measured timing under `key` when the profile has one, else the
/// roofline of the forward and backward costs.
OpTiming estimate_timing(const DeviceProfile& profile, const std::string& key, OpCost forward, OpCost backward);
/// The timing of `op` of `f` (forward cost `forward` under `binding`): as
/// measured (a product by a row block of a split weight as its share of the
/// whole product's measurement), or else its roofline with the backward
/// estimated from the forward: twice its work (an input and a weight
/// gradient), except for attention, whose gradient recomputes the scores
/// (five products against the forward's two) at attention_grad's efficiency.
OpTiming estimate_op_timing(const DeviceProfile& profile, const Function& f, const Op& op, const DimBinding& binding,
                            const OpCost& forward);

/// The seconds per parameter a step of `optimizer` ("adamw", "sgd") took
/// when the profile was measured (update_s_per_param), or nullopt.
std::optional<double> measured_update_rate(const DeviceProfile& profile, std::string_view optimizer);

/// Whether the profile prices `op` from measurements: its own key, its share
/// of a split product's, or the split and sum a product split adds around
/// its two halves (small next to them: priced by the roofline). A stage all
/// of whose ops are priced so can take its backward from the profile too.
bool timed_by_profile(const DeviceProfile& profile, const Function& f, const Op& op, const DimBinding& binding);

/// A profile as JSON:
///   {"format": "pipeforge-profile", "version": 1,
///    "device": {"name", "kind", "precision", "flops", "bandwidth", "memory_bytes", "launch_s",
///               "concurrent" (optional, 1 when absent), "cold_caches" (optional, false when absent),
///               "efficiency" (optional, {op: fraction}),
///               "update_s_per_param" (optional, {"adamw" or "sgd": seconds})},
///    "ops": [{"key": "...", "forward_s": ..., "backward_s": ...}, ...]}
std::string profile_to_json(const DeviceProfile& profile);
/// Reads and checks a profile (format, version, every field, no key twice);
/// throws pf::Error naming `path` and the field.
DeviceProfile profile_from_json(const std::string& text, const std::string& path);
DeviceProfile load_profile(const std::string& path);
/// Written to a temporary name and renamed, like plans.
void save_profile(const DeviceProfile& profile, const std::string& path);

/// How devices are connected: `devices_per_node` devices share a node and
/// talk over `intra`; devices of different nodes over `inter`. Device i is on
/// node i / devices_per_node. `nodes` bounds the devices a plan may use
/// (nodes * devices_per_node); 0 leaves them unbounded.
struct Cluster {
  int devices_per_node = 1;
  LinkSpec intra;
  LinkSpec inter;
  int nodes = 0;
};

/// Throws pf::Error when a plan of `devices` devices does not fit in the
/// cluster: "the cluster has 2 nodes of 8 devices (16); the plan needs 32".
void check_cluster_size(const Cluster& cluster, int64_t devices);

/// The default cluster for a device kind. "cpu": CPU devices are threads of
/// one process handing tensors over through memory (10 GB/s, 1 us), up to
/// 1024 of them on a node. "cuda": 8 GPUs a node on NVLink-class links
/// (300 GB/s, 5 us). Between nodes, for both: 25 GB/s, 10 us (a 200 Gb/s
/// InfiniBand port). Throws pf::Error for another kind.
Cluster default_cluster(std::string_view kind);

/// The link between devices `a` and `b`.
LinkSpec link_between(const Cluster& cluster, int a, int b);
/// The slowest link between neighbours when `devices` devices form a
/// pipeline in index order: what the partitioner's one LinkSpec should be.
LinkSpec pipeline_link(const Cluster& cluster, int devices);
/// The slowest link of the rings that join the copies of each device of a
/// `devices`-long pipeline replicated `replicas` times (replica k on devices
/// k * devices ..): what the gradient all-reduce of a stage crosses.
LinkSpec replica_link(const Cluster& cluster, int devices, int replicas);

/// A cluster as JSON; bandwidths in bytes/s per device (one direction),
/// latencies in seconds; "nodes" is optional (absent: unbounded):
///   {"format": "pipeforge-cluster", "version": 1, "nodes": 128, "devices_per_node": 8,
///    "intra": {"bandwidth": 3e11, "latency": 5e-06}, "inter": {...}}
std::string cluster_to_json(const Cluster& cluster);
Cluster cluster_from_json(const std::string& text, const std::string& path);
Cluster load_cluster(const std::string& path);

/// One device of a --devices list and the profile that prices it.
struct DeviceEntry {
  DeviceSpec spec;
  DeviceProfile profile;
  int threads = 1;  // the compute threads of a CPU device
};

/// Parses a --devices list: "cpu:4", "h100:8", "a100:2,h100:2" (a kind
/// without a count is one device); "cpu:2x4" is two CPU devices of 4
/// threads each, whose speed is 4 times one thread's (the profile times one
/// core: the partitioner then counts the cores it will be given). Devices
/// are named "<kind>:<index in the list>". A device of `reference`'s name
/// or kind (cpu devices under a measured CPU profile) is priced by
/// `reference` itself (measured times included); any other kind by its
/// built-in roofline at
/// `reference`'s precision. The cost graph is priced on `reference`, so a
/// device's speed is its matmul rate over `reference`'s: exact for
/// compute-bound stages, an approximation for memory-bound ones. Throws
/// pf::Error on bad syntax or an unknown kind ("unknown device kind 'tpu';
/// known: cpu, a100, h100").
std::vector<DeviceEntry> parse_device_entries(std::string_view spec, const DeviceProfile& reference);
/// The partitioner's view of parse_device_entries.
std::vector<DeviceSpec> parse_devices(std::string_view spec, const DeviceProfile& reference);

}  // namespace pf
