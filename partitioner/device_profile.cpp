// Built-in rooflines, profile and cluster files, and --devices lists.
#include "partitioner/device_profile.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>

#include "ir/diagnostic.h"
#include "ir/param_piece.h"
#include "support/atomic_file.h"
#include "support/json.h"

namespace pf {

namespace {

using Json = nlohmann::ordered_json;

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

/// A built-in roofline: its matmul rate per precision (0: none).
struct Builtin {
  std::string_view name;
  std::string_view kind;
  double fp32, tf32, bf16;  // FLOP/s, dense
  double bandwidth;         // bytes/s
  double memory_gib;
  double launch_s;
  // Fused attention's arithmetic, forward and backward, as a fraction of the
  // fp32 matmul rate.
  double attention_fp32, attention_grad_fp32;
};

constexpr Builtin kBuiltins[] = {
    // One core of the development machine. OpenBLAS as packaged here runs its
    // Haswell (AVX2 + FMA) sgemm kernel by default: about 100 GFLOP/s on one
    // core. Its AVX-512 kernel reaches about 200, but only when forced with
    // OPENBLAS_CORETYPE, so the default run is what we price. The bf16
    // products of a --dtype bf16 plan run on AVX-512 BF16's dot products at
    // twice the f32 rate where the CPU has them (Zen 4 and 5, Sapphire
    // Rapids; elsewhere at the f32 rate: a measured profile says which). No
    // tf32 GEMM is used on the CPU. One core streams about 10 GB/s; a CPU
    // device gets 8 GiB; dispatching an op costs about 2 us. Fused attention
    // (64 x 64 tiles, head size 64, causal) ran at 0.34 (forward) and 0.44
    // (backward) of the GEMMs' rate beside them (`pipeforge profile` of a
    // GPT at T = 128 on an AMD EPYC Zen 5: 61 and 85 GFLOP/s against 180-190).
    {"cpu", "cpu", 100e9, 0, 200e9, 10e9, 8, 2e-6, 0.35, 0.45},
    // A100 SXM 80 GB: 19.5 TFLOP/s fp32 (no tensor cores), 156 tf32 and 312
    // bf16 on tensor cores (dense, no sparsity); HBM2e at about 2.0 TB/s.
    // The fused attention kernels run on CUDA cores, not tensor cores: priced
    // at half the fp32 rate until measured on the device.
    {"a100", "cuda", 19.5e12, 156e12, 312e12, 2.0e12, 80, 5e-6, 0.5, 0.5},
    // H100 SXM: 67 TFLOP/s fp32, 495 tf32 and 989 bf16 (dense); HBM3 at
    // 3.35 TB/s.
    {"h100", "cuda", 67e12, 495e12, 989e12, 3.35e12, 80, 5e-6, 0.5, 0.5},
};

constexpr std::string_view kPrecisions[] = {"fp32", "tf32", "bf16"};

std::string join(const std::vector<std::string_view>& names) {
  std::string out;
  for (std::string_view n : names) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

bool known_precision(std::string_view p) {
  return std::find(std::begin(kPrecisions), std::end(kPrecisions), p) != std::end(kPrecisions);
}

std::string precision_list() { return join({std::begin(kPrecisions), std::end(kPrecisions)}); }

}  // namespace

std::vector<std::string_view> builtin_profile_names() {
  std::vector<std::string_view> names;
  for (const Builtin& b : kBuiltins) names.push_back(b.name);
  return names;
}

void check_profile_dtype(const DeviceProfile& profile, const std::string& path, std::string_view dtype,
                         std::string_view command) {
  const std::string_view measured = profile.precision == "bf16" ? "bf16" : "f32";
  if (profile.kind == "cpu" && measured != dtype)
    throw Error(fmt::format("{} timed {} products, and this plan's CPU stages run {} ones: profile again with "
                            "--dtype {}, or {} with --dtype {}",
                            path, measured, dtype, dtype, command, measured));
}

DeviceProfile builtin_profile(std::string_view name, std::string_view precision) {
  const Builtin* found = nullptr;
  for (const Builtin& b : kBuiltins)
    if (b.name == name) found = &b;
  if (!found) throw Error(fmt::format("unknown device kind '{}'; known: {}", name, join(builtin_profile_names())));
  if (!known_precision(precision))
    throw Error(fmt::format("unknown precision '{}'; known: {}", precision, precision_list()));
  double rate = precision == "fp32" ? found->fp32 : precision == "tf32" ? found->tf32 : found->bf16;
  if (rate == 0) {
    std::vector<std::string_view> rates;
    for (std::string_view p : kPrecisions)
      if ((p == "fp32" ? found->fp32 : p == "tf32" ? found->tf32 : found->bf16) > 0) rates.push_back(p);
    throw Error(fmt::format("{} has no {} matmul rate; it has {}", name, precision, join(rates)));
  }
  DeviceProfile p;
  p.name = found->name;
  p.kind = found->kind;
  p.precision = precision;
  p.flops = rate;
  p.bandwidth = found->bandwidth;
  p.memory_bytes = static_cast<int64_t>(found->memory_gib * kGiB);
  p.launch_s = found->launch_s;
  p.efficiency[std::string(op_name(OpKind::attention))] = found->attention_fp32 * found->fp32 / rate;
  p.efficiency[std::string(op_name(OpKind::attention_grad))] = found->attention_grad_fp32 * found->fp32 / rate;
  return p;
}

namespace {

// The longer of the arithmetic at `rate` and the traffic at the bandwidth,
// plus the launch; nothing for an op that does neither.
double roofline_s(const DeviceProfile& profile, double rate, int64_t flops, int64_t bytes) {
  if (flops == 0 && bytes == 0) return 0;
  return std::max(static_cast<double>(flops) / rate, static_cast<double>(bytes) / profile.bandwidth) +
         profile.launch_s;
}

}  // namespace

double op_time(const DeviceProfile& profile, int64_t flops, int64_t bytes) {
  return roofline_s(profile, profile.flops, flops, bytes);
}

double op_time(const DeviceProfile& profile, OpKind kind, int64_t flops, int64_t bytes) {
  const auto it = profile.efficiency.find(op_name(kind));
  return roofline_s(profile, profile.flops * (it == profile.efficiency.end() ? 1.0 : it->second), flops, bytes);
}

std::string op_timing_key(OpKind kind, std::span<const TensorType> operands, std::string_view attrs) {
  std::string key(op_name(kind));
  for (size_t i = 0; i < operands.size(); ++i) key += (i ? ", " : " ") + operands[i].str();
  if (!attrs.empty()) key += " " + std::string(attrs);
  return key;
}

namespace {

// An op's attributes as a timing key writes them: dimensions as numbers
// (the same op under another binding is another key).
std::string attrs_text(const Op& op, const DimBinding& binding) {
  auto value = [&](const DimExpr& d) {
    std::optional<int64_t> v = d.evaluate(binding);
    return v ? std::to_string(*v) : d.str();
  };
  std::string attrs;
  for (const AttrSpec& spec : op_info(op.kind).attrs) {
    const Attr* a = op.attr(spec.name);
    if (!a) continue;
    std::string text;
    if (a->kind == AttrKind::dim) {
      text = value(a->dim);
    } else if (a->kind == AttrKind::dims) {
      for (const DimExpr& d : a->dims) text += (text.empty() ? "" : ",") + value(d);
      text = "[" + text + "]";
    } else {
      text = a->str();
    }
    attrs += fmt::format("{}{}={}", attrs.empty() ? "" : " ", spec.name, text);
  }
  return attrs;
}

// The row block `op` multiplies by, when it is a product by a piece of a
// weight split between stages (partitioner/product_split.h).
std::optional<ParamPiece> weight_piece(const Function& f, const Op& op) {
  if (op.kind != OpKind::matmul || op.operands.size() != 2) return std::nullopt;
  const int def = f.values[op.operands[1]].def_op;
  return def >= 0 ? param_piece(f.ops[def]) : std::nullopt;
}

// A product by a row block, which a profile of the unsplit model did not
// time: its rows' share of the whole product's measured time.
std::optional<OpTiming> piece_share(const DeviceProfile& profile, const Function& f, const Op& op,
                                    const DimBinding& binding) {
  const std::optional<ParamPiece> piece = weight_piece(f, op);
  if (!piece) return std::nullopt;
  std::vector<TensorType> whole = {f.type_of(op.operands[0]), piece->whole_type(f.type_of(op.operands[1]))};
  if (piece->axis == 0) whole[0].shape.back() = piece->whole_rows;  // rows of the weight: columns of the activation
  std::optional<OpTiming> t = find_timing(profile, op_timing_key(op.kind, whole, attrs_text(op, binding)));
  if (!t) return std::nullopt;
  return OpTiming{t->forward_s * piece->share(), t->backward_s * piece->share()};
}

// Whether `v` is the result of a product by a row block of a split weight.
bool is_piece_product(const Function& f, ValueId v) {
  const int def = f.values[v].def_op;
  return def >= 0 && weight_piece(f, f.ops[def]).has_value();
}

}  // namespace

bool timed_by_profile(const DeviceProfile& profile, const Function& f, const Op& op, const DimBinding& binding) {
  if (find_timing(profile, op_timing_key(f, op, binding)) || piece_share(profile, f, op, binding)) return true;
  // In a stage's program one half may be another stage's: its product
  // arrives as an argument, its part of the split leaves as a result.
  if (op.kind == OpKind::add) return is_piece_product(f, op.operands[0]) || is_piece_product(f, op.operands[1]);
  if (op.kind != OpKind::split) return false;
  // Every op reading a part of the split is a product by a row block.
  std::vector<bool> part(f.values.size(), false);
  for (ValueId r : op.results) part[static_cast<size_t>(r)] = true;
  bool feeds = false;
  for (const Op& user : f.ops)
    for (size_t i = 0; i < user.operands.size(); ++i)
      if (part[static_cast<size_t>(user.operands[i])]) {
        if (i != 0 || !is_piece_product(f, user.results[0])) return false;
        feeds = true;
      }
  return feeds;
}

std::string op_timing_key(const Function& f, const Op& op, const DimBinding& binding) {
  std::vector<TensorType> operands;
  for (ValueId v : op.operands) operands.push_back(f.type_of(v));
  return op_timing_key(op.kind, operands, attrs_text(op, binding));
}

std::optional<double> measured_update_rate(const DeviceProfile& profile, std::string_view optimizer) {
  const auto rate = profile.update_s_per_param.find(optimizer);
  if (rate == profile.update_s_per_param.end()) return std::nullopt;
  return rate->second;
}

std::optional<OpTiming> find_timing(const DeviceProfile& profile, const std::string& key) {
  auto it = profile.measured.find(key);
  if (it == profile.measured.end()) return std::nullopt;
  return it->second;
}

OpTiming require_timing(const DeviceProfile& profile, const std::string& key) {
  if (std::optional<OpTiming> t = find_timing(profile, key)) return *t;
  std::string which = profile.path.empty() ? fmt::format("{} (built in)", profile.name) : profile.path;
  throw Error(fmt::format("profile {} has no timing for {}; run 'pipeforge profile' for this model", which, key));
}

OpTiming estimate_timing(const DeviceProfile& profile, const std::string& key, OpCost forward, OpCost backward) {
  if (std::optional<OpTiming> t = find_timing(profile, key)) return *t;
  return {op_time(profile, forward.flops, forward.bytes), op_time(profile, backward.flops, backward.bytes)};
}

OpTiming estimate_op_timing(const DeviceProfile& profile, const Function& f, const Op& op, const DimBinding& binding,
                            const OpCost& forward) {
  if (std::optional<OpTiming> t = find_timing(profile, op_timing_key(f, op, binding))) return *t;
  if (std::optional<OpTiming> t = piece_share(profile, f, op, binding)) return *t;
  if (op.kind == OpKind::attention)
    return {op_time(profile, op.kind, forward.flops, forward.bytes),
            op_time(profile, OpKind::attention_grad, forward.flops * 5 / 2, 2 * forward.bytes)};
  return {op_time(profile, op.kind, forward.flops, forward.bytes),
          op_time(profile, op.kind, 2 * forward.flops, 2 * forward.bytes)};
}

// ---------------------------------------------------------------------------
// Files.

namespace {

void check_format(const Json& doc, const JsonReader& r, std::string_view format, std::string_view what) {
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != format)
    r.fail(fmt::format("not a pipeforge {} (no \"format\": \"{}\")", what, format));
  const Json& version = r.member(doc, "", "version");
  if (!version.is_number_integer()) r.fail("version must be an integer");
  if (version.get<int64_t>() != 1)
    r.fail(fmt::format("version {} is not supported by this pipeforge (it reads version 1)", version.get<int64_t>()));
}

double positive(const JsonReader& r, const Json& object, std::string_view where, std::string_view key) {
  double v = r.number(object, where, key);
  if (v <= 0) r.fail(fmt::format("{} must be positive, got {}", JsonReader::at(where, key), v));
  return v;
}

LinkSpec read_link(const JsonReader& r, const Json& doc, std::string_view key) {
  const Json& link = r.object(doc, "", key);
  r.expect_keys(link, key, {"bandwidth", "latency"});
  return {positive(r, link, key, "bandwidth"), r.number(link, key, "latency", 0)};
}

}  // namespace

std::string profile_to_json(const DeviceProfile& profile) {
  Json ops = Json::array();
  for (const auto& [key, t] : profile.measured)
    ops.push_back({{"key", key}, {"forward_s", t.forward_s}, {"backward_s", t.backward_s}});
  Json doc = {
      {"format", "pipeforge-profile"},
      {"version", 1},
      {"device",
       {{"name", profile.name},
        {"kind", profile.kind},
        {"precision", profile.precision},
        {"flops", profile.flops},
        {"bandwidth", profile.bandwidth},
        {"memory_bytes", profile.memory_bytes},
        {"launch_s", profile.launch_s},
        {"concurrent", profile.concurrent}}},
      {"ops", ops},
  };
  if (profile.cold_caches) doc["device"]["cold_caches"] = true;
  if (!profile.efficiency.empty()) doc["device"]["efficiency"] = profile.efficiency;
  if (!profile.update_s_per_param.empty()) doc["device"]["update_s_per_param"] = profile.update_s_per_param;
  return format_json(doc);
}

DeviceProfile profile_from_json(const std::string& text, const std::string& path) {
  Json doc = parse_json_document(text, path);
  JsonReader r(path);
  check_format(doc, r, "pipeforge-profile", "profile");
  r.expect_keys(doc, "", {"format", "version", "device", "ops"});
  const Json& d = r.object(doc, "", "device");
  r.expect_keys(d, "device", {"name", "kind", "precision", "flops", "bandwidth", "memory_bytes", "launch_s"},
                {"concurrent", "cold_caches", "efficiency", "update_s_per_param"});
  DeviceProfile p;
  p.path = path;
  p.name = r.string(d, "device", "name");
  if (p.name.empty()) r.fail("device.name must not be empty");
  p.kind = r.string(d, "device", "kind");
  if (p.kind != "cpu" && p.kind != "cuda")
    r.fail(fmt::format("device.kind must be \"cpu\" or \"cuda\", got \"{}\"", p.kind));
  p.precision = r.string(d, "device", "precision");
  if (!known_precision(p.precision))
    r.fail(fmt::format("device.precision must be one of {}, got \"{}\"", precision_list(), p.precision));
  p.flops = positive(r, d, "device", "flops");
  p.bandwidth = positive(r, d, "device", "bandwidth");
  p.memory_bytes = r.integer(d, "device", "memory_bytes", 1);
  p.launch_s = r.number(d, "device", "launch_s", 0);
  if (d.contains("concurrent")) p.concurrent = static_cast<int>(r.integer(d, "device", "concurrent", 1, 1 << 16));
  if (d.contains("cold_caches")) p.cold_caches = r.boolean(d, "device", "cold_caches");
  if (d.contains("efficiency")) {
    const Json& e = r.object(d, "device", "efficiency");
    for (const auto& [name, value] : e.items()) {
      if (!find_op(name)) r.fail(fmt::format("device.efficiency names no op: '{}'", name));
      p.efficiency[name] = positive(r, e, "device.efficiency", name);
    }
  }
  if (d.contains("update_s_per_param")) {
    const Json& u = r.object(d, "device", "update_s_per_param");
    for (const auto& [name, value] : u.items()) {
      if (name != "adamw" && name != "sgd")
        r.fail(fmt::format("device.update_s_per_param names no optimizer: '{}' (adamw or sgd)", name));
      p.update_s_per_param[name] = positive(r, u, "device.update_s_per_param", name);
    }
  }
  const Json& ops = r.array(doc, "", "ops");
  std::map<std::string, size_t> first;  // key -> index of the entry that has it
  for (size_t i = 0; i < ops.size(); ++i) {
    std::string at = JsonReader::at("ops", i);
    r.expect_keys(ops[i], at, {"key", "forward_s", "backward_s"});
    std::string key = r.string(ops[i], at, "key");
    if (auto [it, fresh] = first.emplace(key, i); !fresh)
      r.fail(fmt::format("{} repeats the key '{}' of ops[{}]", at, key, it->second));
    p.measured[key] = {r.number(ops[i], at, "forward_s", 0), r.number(ops[i], at, "backward_s", 0)};
  }
  return p;
}

DeviceProfile load_profile(const std::string& path) { return profile_from_json(read_source_file(path)->text(), path); }

void save_profile(const DeviceProfile& profile, const std::string& path) {
  write_file_atomically(path, profile_to_json(profile));
}

// ---------------------------------------------------------------------------
// Clusters.

Cluster default_cluster(std::string_view kind) {
  const LinkSpec inter{25e9, 10e-6};
  if (kind == "cpu") return {1024, {10e9, 1e-6}, inter};
  if (kind == "cuda") return {8, {300e9, 5e-6}, inter};
  throw Error(fmt::format("no default cluster for device kind '{}'; known: cpu, cuda", kind));
}

LinkSpec link_between(const Cluster& cluster, int a, int b) {
  return a / cluster.devices_per_node == b / cluster.devices_per_node ? cluster.intra : cluster.inter;
}

namespace {

// Slowest for a transfer of any size: the lower bandwidth, then the higher
// latency.
void keep_slowest(LinkSpec& slowest, const LinkSpec& l) {
  if (l.bandwidth_bytes_per_s < slowest.bandwidth_bytes_per_s ||
      (l.bandwidth_bytes_per_s == slowest.bandwidth_bytes_per_s && l.latency_s > slowest.latency_s))
    slowest = l;
}

}  // namespace

LinkSpec pipeline_link(const Cluster& cluster, int devices) {
  LinkSpec slowest = cluster.intra;
  for (int d = 0; d + 1 < devices; ++d) keep_slowest(slowest, link_between(cluster, d, d + 1));
  return slowest;
}

LinkSpec replica_link(const Cluster& cluster, int devices, int replicas) {
  LinkSpec slowest = cluster.intra;
  for (int d = 0; d < devices; ++d)
    for (int k = 0; k < replicas && replicas > 1; ++k)
      keep_slowest(slowest, link_between(cluster, k * devices + d, (k + 1) % replicas * devices + d));
  return slowest;
}

std::string cluster_to_json(const Cluster& cluster) {
  auto link = [](const LinkSpec& l) { return Json{{"bandwidth", l.bandwidth_bytes_per_s}, {"latency", l.latency_s}}; };
  Json doc = {{"format", "pipeforge-cluster"}, {"version", 1}};
  if (cluster.nodes > 0) doc["nodes"] = cluster.nodes;
  doc["devices_per_node"] = cluster.devices_per_node;
  doc["intra"] = link(cluster.intra);
  doc["inter"] = link(cluster.inter);
  return format_json(doc);
}

Cluster cluster_from_json(const std::string& text, const std::string& path) {
  Json doc = parse_json_document(text, path);
  JsonReader r(path);
  check_format(doc, r, "pipeforge-cluster", "cluster");
  r.expect_keys(doc, "", {"format", "version", "devices_per_node", "intra", "inter"}, {"nodes"});
  Cluster c;
  if (doc.contains("nodes")) c.nodes = static_cast<int>(r.integer(doc, "", "nodes", 1, 1 << 20));
  c.devices_per_node = static_cast<int>(r.integer(doc, "", "devices_per_node", 1, 1 << 20));
  c.intra = read_link(r, doc, "intra");
  c.inter = read_link(r, doc, "inter");
  return c;
}

void check_cluster_size(const Cluster& cluster, int64_t devices) {
  if (cluster.nodes == 0) return;
  const int64_t has = static_cast<int64_t>(cluster.nodes) * cluster.devices_per_node;
  if (devices > has)
    throw Error(fmt::format("the cluster has {} node{} of {} devices ({}); the plan needs {}", cluster.nodes,
                            cluster.nodes == 1 ? "" : "s", cluster.devices_per_node, has, devices));
}

Cluster load_cluster(const std::string& path) { return cluster_from_json(read_source_file(path)->text(), path); }

// ---------------------------------------------------------------------------
// --devices lists.

std::vector<DeviceEntry> parse_device_entries(std::string_view spec, const DeviceProfile& reference) {
  auto bad = [&](std::string_view item) {
    return Error(
        fmt::format("bad device list '{}' at '{}'; write it like cpu:4, cpu:2x4 (threads each) or a100:2,h100:2",
                    spec, item));
  };
  auto number = [&](std::string_view digits, std::string_view item, int most) {
    int n = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec != std::errc() || end != digits.data() + digits.size() || n < 1 || n > most) throw bad(item);
    return n;
  };
  std::vector<DeviceEntry> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = std::min(spec.find(',', pos), spec.size());
    std::string_view item = spec.substr(pos, comma - pos);
    pos = comma + 1;
    size_t colon = item.find(':');
    std::string_view kind = item.substr(0, colon);
    int count = 1, threads = 1;
    if (colon != std::string_view::npos) {
      std::string_view digits = item.substr(colon + 1);
      const size_t x = digits.find('x');
      count = number(digits.substr(0, x), item, 65536);
      if (x != std::string_view::npos) threads = number(digits.substr(x + 1), item, 4096);
    }
    if (kind.empty()) throw bad(item);
    DeviceProfile profile;
    // A measured profile ("cpu-measured") prices the devices of its kind
    // ("cpu") as well as those of its name: it is this machine's CPU.
    if (kind == reference.name || kind == reference.kind) {
      profile = reference;
    } else {
      std::vector<std::string_view> names = builtin_profile_names();
      if (std::find(names.begin(), names.end(), kind) == names.end()) {
        if (std::find(names.begin(), names.end(), reference.name) == names.end()) names.push_back(reference.name);
        throw Error(fmt::format("unknown device kind '{}'; known: {}", kind, join(names)));
      }
      profile = builtin_profile(kind, reference.precision);
    }
    if (threads > 1 && profile.kind != "cpu")
      throw Error(fmt::format("{}: threads are counted for CPU devices; a {} device is one GPU", item, kind));
    for (int i = 0; i < count; ++i) {
      DeviceSpec device{fmt::format("{}:{}", kind, out.size()), threads * profile.flops / reference.flops,
                        profile.memory_bytes};
      out.push_back({std::move(device), profile, threads});
    }
  }
  return out;
}

std::vector<DeviceSpec> parse_devices(std::string_view spec, const DeviceProfile& reference) {
  std::vector<DeviceSpec> out;
  for (DeviceEntry& e : parse_device_entries(spec, reference)) out.push_back(std::move(e.spec));
  return out;
}

}  // namespace pf
