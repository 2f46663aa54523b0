// Device profiles: roofline numbers, measured timings, profile and cluster files, --devices lists.
#include "partitioner/device_profile.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "passes/cost_summary.h"
#include "tests/error_of.h"

namespace pf {
namespace {

using testing_support::error_of;

using Json = nlohmann::ordered_json;

constexpr int64_t kGiB = int64_t{1} << 30;

TEST(DeviceProfile, BuiltinRooflines) {
  DeviceProfile cpu = builtin_profile("cpu");
  EXPECT_EQ(cpu.kind, "cpu");
  EXPECT_EQ(cpu.precision, "fp32");
  EXPECT_EQ(cpu.flops, 100e9);
  EXPECT_EQ(cpu.bandwidth, 10e9);
  EXPECT_EQ(cpu.memory_bytes, 8 * kGiB);
  EXPECT_EQ(cpu.launch_s, 2e-6);
  EXPECT_TRUE(cpu.path.empty());
  EXPECT_EQ(builtin_profile("cpu", "bf16").flops, 200e9);  // AVX-512 BF16's dot products

  EXPECT_EQ(builtin_profile("a100").flops, 19.5e12);
  EXPECT_EQ(builtin_profile("a100", "tf32").flops, 156e12);
  EXPECT_EQ(builtin_profile("a100", "bf16").flops, 312e12);
  EXPECT_EQ(builtin_profile("a100").bandwidth, 2.0e12);
  DeviceProfile h100 = builtin_profile("h100", "bf16");
  EXPECT_EQ(h100.kind, "cuda");
  EXPECT_EQ(h100.precision, "bf16");
  EXPECT_EQ(h100.flops, 989e12);
  EXPECT_EQ(builtin_profile("h100", "tf32").flops, 495e12);
  EXPECT_EQ(builtin_profile("h100").flops, 67e12);
  EXPECT_EQ(h100.bandwidth, 3.35e12);
  EXPECT_EQ(h100.memory_bytes, 80 * kGiB);
  EXPECT_EQ(h100.launch_s, 5e-6);
  EXPECT_EQ(builtin_profile_names(), (std::vector<std::string_view>{"cpu", "a100", "h100"}));
}

TEST(DeviceProfile, UnknownNamesAndPrecisions) {
  EXPECT_EQ(error_of([] { builtin_profile("tpu"); }), "unknown device kind 'tpu'; known: cpu, a100, h100");
  EXPECT_EQ(error_of([] { builtin_profile("h100", "fp8"); }), "unknown precision 'fp8'; known: fp32, tf32, bf16");
  EXPECT_EQ(error_of([] { builtin_profile("cpu", "tf32"); }), "cpu has no tf32 matmul rate; it has fp32, bf16");
}

TEST(DeviceProfile, RooflineTime) {
  DeviceProfile h100 = builtin_profile("h100");
  // A GPT-2 QKV projection for 8 x 64 tokens: compute-bound.
  int64_t flops = 2 * 8 * 64 * 768 * int64_t{2304};
  int64_t bytes = 4 * (8 * 64 * 768 + 768 * 2304 + 8 * 64 * int64_t{2304});
  EXPECT_DOUBLE_EQ(op_time(h100, flops, bytes), static_cast<double>(flops) / 67e12 + 5e-6);
  // A ReLU over the same tokens: memory-bound.
  int64_t n = 8 * 64 * 768;
  EXPECT_DOUBLE_EQ(op_time(h100, n, 8 * n), static_cast<double>(8 * n) / 3.35e12 + 5e-6);
  DeviceProfile cpu = builtin_profile("cpu");
  EXPECT_NEAR(op_time(cpu, flops, bytes), 0.018119 + 2e-6, 1e-6);
  // No work, no kernel.
  EXPECT_EQ(op_time(cpu, 0, 0), 0);
}

TEST(DeviceProfile, AttentionIsPricedAtItsKernelsRate) {
  Module m = parse_module_text("a.pf",
                               "graph @g(%q: f32[1,8,128,64], %k: f32[1,8,128,64], %v: f32[1,8,128,64]) -> "
                               "f32[1,8,128,64] {\n"
                               "  %o, %lse = attention %q, %k, %v causal=true scale=0.125 : f32[1,8,128,64], "
                               "f32[1,8,128]\n  return %o\n}\n");
  const DimBinding binding = m.binding();
  verify_module(m, binding);
  const Function& g = m.graph();
  const Op& op = g.ops.at(0);
  ASSERT_EQ(op.kind, OpKind::attention);
  // q k^T and p v over the lower triangle: 2 * 2 * 8 * 128 * 128 * 64 / 2 FLOPs.
  const OpCost cost = op_cost(g, op, binding);
  ASSERT_EQ(cost.flops, int64_t{16777216});
  const DeviceProfile cpu = builtin_profile("cpu");
  const OpTiming t = estimate_op_timing(cpu, g, op, binding, cost);
  EXPECT_DOUBLE_EQ(t.forward_s, 16777216 / (100e9 * 0.35) + 2e-6);
  // The backward recomputes the scores: five products against two.
  EXPECT_DOUBLE_EQ(t.backward_s, 41943040 / (100e9 * 0.45) + 2e-6);
  // A GEMM keeps the matmul rate, and so does an op of a kind not listed.
  EXPECT_DOUBLE_EQ(op_time(cpu, OpKind::matmul, 16777216, 0), 16777216 / 100e9 + 2e-6);
  // On a GPU the kernel runs on CUDA cores: half the fp32 rate whatever the
  // matmul precision.
  const DeviceProfile h100 = builtin_profile("h100", "bf16");
  EXPECT_DOUBLE_EQ(op_time(h100, OpKind::attention, 16777216, 0), 16777216 / (67e12 * 0.5) + 5e-6);
}

TEST(DeviceProfile, TimingKeys) {
  std::vector<TensorType> operands = {{DType::f32, {8, 64, 768}}, {DType::f32, {768, 2304}}};
  EXPECT_EQ(op_timing_key(OpKind::matmul, operands, ""), "matmul f32[8,64,768], f32[768,2304]");
  EXPECT_EQ(op_timing_key(OpKind::matmul, operands, "transpose_b=true"),
            "matmul f32[8,64,768], f32[768,2304] transpose_b=true");

  Module m = parse_module_text("k.pf",
                               "dim B = 2\ndim C = 6\ngraph @g(%x: f32[B,C]) -> f32[B,2,C/2] {\n"
                               "  %r = reshape %x shape=[B,2,C/2] layer=\"a\" flops=0\n"
                               "  %s = softmax %r axis=-1 layer=\"a\"\n  return %s\n}\n");
  DimBinding binding = m.binding({{"B", 5}});
  verify_module(m, binding);
  const Function& g = m.graph();
  // Evaluated dimensions; layer and cost annotations left out.
  EXPECT_EQ(op_timing_key(g, g.ops[0], binding), "reshape f32[5,6] shape=[5,2,3]");
  EXPECT_EQ(op_timing_key(g, g.ops[1], binding), "softmax f32[5,2,3] axis=-1");
}

DeviceProfile measured_profile() {
  DeviceProfile p = builtin_profile("h100", "bf16");
  p.name = "h100-lab";
  p.measured["matmul f32[8,64,768], f32[768,2304]"] = {3.5e-5, 7.25e-5};
  p.measured["relu f32[8,64,768]"] = {2e-6, 3e-6};
  return p;
}

TEST(DeviceProfile, MeasuredTimesOverrideTheRoofline) {
  DeviceProfile p = measured_profile();
  EXPECT_EQ(find_timing(p, "relu f32[8,64,768]"), (OpTiming{2e-6, 3e-6}));
  EXPECT_FALSE(find_timing(p, "relu f32[8,64]"));
  EXPECT_EQ(estimate_timing(p, "relu f32[8,64,768]", {1, 1}, {1, 1}), (OpTiming{2e-6, 3e-6}));
  OpTiming roofline = estimate_timing(p, "gelu f32[8]", {8, 64}, {0, 0});
  EXPECT_DOUBLE_EQ(roofline.forward_s, 64 / 3.35e12 + 5e-6);
  EXPECT_EQ(roofline.backward_s, 0);
  EXPECT_EQ(require_timing(p, "relu f32[8,64,768]"), (OpTiming{2e-6, 3e-6}));
  EXPECT_EQ(error_of([&] { require_timing(p, "gelu f32[8]"); }),
            "profile h100-lab (built in) has no timing for gelu f32[8]; run 'pipeforge profile' for this model");
  p.path = "P.json";
  EXPECT_EQ(error_of([&] { require_timing(p, "matmul f32[8,64,768], f32[768,3072]"); }),
            "profile P.json has no timing for matmul f32[8,64,768], f32[768,3072]; run 'pipeforge profile' for this "
            "model");
}

TEST(DeviceProfile, ARowBlockOfASplitWeightTakesItsShareOfTheWholeProductsTime) {
  // The product of measured_profile's matmul, its weight's 768 rows split
  // 512 | 256 between two stages (product_split.h).
  Module m = parse_module_text("s.pf", R"(
graph @g(%x: f32[8,64,768]) -> f32[8,64,2304] {
  %x.a, %x.b = split %x axis=2 sizes=[512,256] : f32[8,64,512], f32[8,64,256]
  %w.a = param init=xavier piece_of="w" rows=[0,512] whole_rows=768 : f32[512,2304]
  %y.a = matmul %x.a, %w.a : f32[8,64,2304]
  %w.b = param init=xavier piece_of="w" rows=[512,768] whole_rows=768 : f32[256,2304]
  %y.b = matmul %x.b, %w.b : f32[8,64,2304]
  %y = add %y.a, %y.b : f32[8,64,2304]
  %z = relu %y : f32[8,64,2304]
  return %z
}
)");
  const DimBinding b = m.binding();
  verify_module(m, b);
  const Function& g = m.graph();
  const DeviceProfile p = measured_profile();
  auto timing = [&](int op) { return estimate_op_timing(p, g, g.ops[static_cast<size_t>(op)], b, op_cost(g, g.ops[static_cast<size_t>(op)], b)); };
  EXPECT_DOUBLE_EQ(timing(2).forward_s, 3.5e-5 * 2 / 3);
  EXPECT_DOUBLE_EQ(timing(4).backward_s, 7.25e-5 / 3);
  // The split and the sum around the halves count as priced; an op the
  // profile never saw does not.
  std::vector<bool> timed;
  for (const Op& op : g.ops) timed.push_back(timed_by_profile(p, g, op, b));
  EXPECT_EQ(timed, (std::vector<bool>{true, false, true, false, true, true, false}));
}

TEST(DeviceProfile, JsonRoundTrip) {
  DeviceProfile p = measured_profile();
  std::string text = profile_to_json(p);
  EXPECT_TRUE(text.starts_with("{\n  \"format\": \"pipeforge-profile\",\n  \"version\": 1,\n")) << text;
  EXPECT_NE(text.find(R"({"key": "relu f32[8,64,768]", "forward_s": 2e-06, "backward_s": 3e-06})"), std::string::npos)
      << text;
  DeviceProfile back = profile_from_json(text, "p.json");
  EXPECT_EQ(back.path, "p.json");
  EXPECT_EQ(back.name, "h100-lab");
  EXPECT_EQ(back.kind, "cuda");
  EXPECT_EQ(back.precision, "bf16");
  EXPECT_EQ(back.flops, 989e12);
  EXPECT_EQ(back.bandwidth, 3.35e12);
  EXPECT_EQ(back.memory_bytes, 80 * kGiB);
  EXPECT_EQ(back.launch_s, 5e-6);
  EXPECT_EQ(back.concurrent, 1);
  EXPECT_EQ(back.measured, p.measured);
  EXPECT_EQ(back.efficiency, p.efficiency);
  EXPECT_EQ(profile_to_json(back), text);

  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("pf_profile_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "h100.json").string();
  save_profile(p, path);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  DeviceProfile loaded = load_profile(path);
  EXPECT_EQ(loaded.path, path);
  EXPECT_EQ(loaded.measured, p.measured);
  std::filesystem::remove_all(dir);
  EXPECT_EQ(error_of([&] { load_profile(path); }), "cannot open '" + path + "'");
}

std::string profile_error(const std::function<void(Json&)>& edit) {
  Json doc = Json::parse(profile_to_json(measured_profile()));
  edit(doc);
  return error_of([&] { profile_from_json(doc.dump(), "P.json"); });
}

TEST(DeviceProfile, HowManyCoresWereBusyWhileTimingIsKeptAndOneWhenAbsent) {
  DeviceProfile p = measured_profile();
  p.concurrent = 2;
  EXPECT_EQ(profile_from_json(profile_to_json(p), "P.json").concurrent, 2);
  Json doc = Json::parse(profile_to_json(p));
  doc["device"].erase("concurrent");  // a profile written before the field
  EXPECT_EQ(profile_from_json(doc.dump(), "P.json").concurrent, 1);
}

TEST(DeviceProfile, ColdCachesAreKeptAndWarmWhenAbsent) {
  DeviceProfile p = measured_profile();
  EXPECT_EQ(profile_to_json(p).find("cold_caches"), std::string::npos);  // warm: written as before
  p.cold_caches = true;
  EXPECT_NE(profile_to_json(p).find(R"("cold_caches": true)"), std::string::npos);
  EXPECT_TRUE(profile_from_json(profile_to_json(p), "P.json").cold_caches);
  EXPECT_FALSE(profile_from_json(profile_to_json(measured_profile()), "P.json").cold_caches);
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["cold_caches"] = "yes"; }),
            "P.json: device.cold_caches must be true or false");
}

TEST(DeviceProfile, MeasuredOptimizerRatesAreKeptAndOptional) {
  DeviceProfile p = measured_profile();
  p.update_s_per_param = {{"adamw", 1.25e-9}, {"sgd", 5e-10}};
  const std::string text = profile_to_json(p);
  EXPECT_NE(text.find(R"("update_s_per_param": {"adamw": 1.25e-09, "sgd": 5e-10})"), std::string::npos) << text;
  EXPECT_EQ(profile_from_json(text, "P.json").update_s_per_param, p.update_s_per_param);
  EXPECT_TRUE(profile_from_json(profile_to_json(measured_profile()), "P.json").update_s_per_param.empty());
}

TEST(DeviceProfile, BadProfileFiles) {
  EXPECT_EQ(profile_error([](Json& j) { j["format"] = "pipeforge-plan"; }),
            "P.json: not a pipeforge profile (no \"format\": \"pipeforge-profile\")");
  EXPECT_EQ(profile_error([](Json& j) { j["version"] = 3; }),
            "P.json: version 3 is not supported by this pipeforge (it reads version 1)");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["flops"] = 0; }), "P.json: device.flops must be positive, got 0");
  EXPECT_EQ(profile_error([](Json& j) { j["device"].erase("bandwidth"); }), "P.json: device has no \"bandwidth\"");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["kind"] = "tpu"; }),
            "P.json: device.kind must be \"cpu\" or \"cuda\", got \"tpu\"");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["precision"] = "fp8"; }),
            "P.json: device.precision must be one of fp32, tf32, bf16, got \"fp8\"");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["memory_bytes"] = 1.5; }),
            "P.json: device.memory_bytes must be an integer");
  EXPECT_EQ(profile_error([](Json& j) { j["ops"].push_back(j["ops"][0]); }),
            "P.json: ops[2] repeats the key 'matmul f32[8,64,768], f32[768,2304]' of ops[0]");
  EXPECT_EQ(profile_error([](Json& j) { j["ops"][1]["forward_s"] = "fast"; }),
            "P.json: ops[1].forward_s must be a finite number");
  EXPECT_EQ(profile_error([](Json& j) { j["ops"][1]["backward_s"] = -1e-6; }),
            "P.json: ops[1].backward_s must be at least 0, got -1e-06");
  EXPECT_EQ(profile_error([](Json& j) { j["ops"][0]["time"] = 1; }), "P.json: ops[0] has an unknown field \"time\"");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["concurrent"] = 0; }),
            "P.json: device.concurrent must be at least 1, got 0");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["efficiency"]["flash"] = 0.5; }),
            "P.json: device.efficiency names no op: 'flash'");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["efficiency"]["attention"] = 0; }),
            "P.json: device.efficiency.attention must be positive, got 0");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["update_s_per_param"]["lamb"] = 1e-9; }),
            "P.json: device.update_s_per_param names no optimizer: 'lamb' (adamw or sgd)");
  EXPECT_EQ(profile_error([](Json& j) { j["device"]["update_s_per_param"]["adamw"] = -1e-9; }),
            "P.json: device.update_s_per_param.adamw must be positive, got -1e-09");
  try {
    profile_from_json("{\"format\": \"pipeforge-profile\"\n  \"version\": 1}", "P.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.message(),
              "not valid JSON: syntax error while parsing object - unexpected string literal; expected "
              "'}'");
    EXPECT_EQ(e.render(),
              "P.json:2:3: error: not valid JSON: syntax error while parsing object - unexpected string literal; "
              "expected '}'\n  \"version\": 1}\n  ^\n");
  }
}

TEST(Cluster, Defaults) {
  Cluster cpu = default_cluster("cpu");
  EXPECT_EQ(cpu.intra.bandwidth_bytes_per_s, 10e9);
  EXPECT_EQ(cpu.intra.latency_s, 1e-6);
  Cluster cuda = default_cluster("cuda");
  EXPECT_EQ(cuda.devices_per_node, 8);
  EXPECT_EQ(cuda.intra.bandwidth_bytes_per_s, 300e9);
  EXPECT_EQ(cuda.intra.latency_s, 5e-6);
  EXPECT_EQ(cuda.inter.bandwidth_bytes_per_s, 25e9);
  EXPECT_EQ(cuda.inter.latency_s, 10e-6);
  EXPECT_EQ(error_of([] { default_cluster("tpu"); }), "no default cluster for device kind 'tpu'; known: cpu, cuda");

  EXPECT_EQ(link_between(cuda, 0, 7).bandwidth_bytes_per_s, 300e9);
  EXPECT_EQ(link_between(cuda, 7, 8).bandwidth_bytes_per_s, 25e9);
  EXPECT_EQ(pipeline_link(cuda, 8).bandwidth_bytes_per_s, 300e9);
  EXPECT_EQ(pipeline_link(cuda, 9).bandwidth_bytes_per_s, 25e9);
  EXPECT_EQ(pipeline_link(cpu, 64).bandwidth_bytes_per_s, 10e9);
}

// Found by fuzzing: a number no double holds was an exception of the JSON
// library's, not an error of ours. It is located like a syntax error.
TEST(Cluster, ANumberBeyondADoubleIsALocatedError) {
  try {
    cluster_from_json("{\n  \"devices_per_node\": 1e99999\n}\n", "c.json");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.render(), "c.json:2:23: error: not valid JSON: number overflow parsing '1e99999'\n"
                          "  \"devices_per_node\": 1e99999\n"
                          "                      ^\n");
  }
  EXPECT_EQ(error_of([] { profile_from_json("{\"version\": 3.21e55555555}", "p.json"); }),
            "not valid JSON: number overflow parsing '3.21e55555555'");
}

TEST(Cluster, JsonFiles) {
  Cluster c{4, {200e9, 4e-6}, {50e9, 8e-6}};
  std::string text = cluster_to_json(c);
  EXPECT_EQ(text,
            "{\n  \"format\": \"pipeforge-cluster\",\n  \"version\": 1,\n  \"devices_per_node\": 4,\n"
            "  \"intra\": {\"bandwidth\": 200000000000.0, \"latency\": 4e-06},\n"
            "  \"inter\": {\"bandwidth\": 50000000000.0, \"latency\": 8e-06}\n}\n");
  Cluster back = cluster_from_json(text, "c.json");
  EXPECT_EQ(back.devices_per_node, 4);
  EXPECT_EQ(back.intra.bandwidth_bytes_per_s, 200e9);
  EXPECT_EQ(back.inter.latency_s, 8e-6);

  auto bad = [&](const std::function<void(Json&)>& edit) {
    Json doc = Json::parse(text);
    edit(doc);
    return error_of([&] { cluster_from_json(doc.dump(), "c.json"); });
  };
  EXPECT_EQ(bad([](Json& j) { j["devices_per_node"] = 0; }), "c.json: devices_per_node must be at least 1, got 0");
  EXPECT_EQ(bad([](Json& j) { j["intra"]["bandwidth"] = -1; }), "c.json: intra.bandwidth must be positive, got -1");
  EXPECT_EQ(bad([](Json& j) { j["inter"]["latency"] = -1; }), "c.json: inter.latency must be at least 0, got -1");
  EXPECT_EQ(bad([](Json& j) { j.erase("inter"); }), "c.json: no \"inter\"");
  EXPECT_EQ(bad([](Json& j) { j["format"] = "cluster"; }),
            "c.json: not a pipeforge cluster (no \"format\": \"pipeforge-cluster\")");
  EXPECT_EQ(error_of([] { load_cluster("/no/such/cluster.json"); }), "cannot open '/no/such/cluster.json'");
}

// A node count bounds the devices; without one (older files) there is no bound.
TEST(Cluster, NodeCount) {
  Cluster c{8, {300e9, 5e-6}, {25e9, 10e-6}, 128};
  std::string text = cluster_to_json(c);
  EXPECT_NE(text.find("\"version\": 1,\n  \"nodes\": 128,\n  \"devices_per_node\": 8,"), std::string::npos) << text;
  Cluster back = cluster_from_json(text, "c.json");
  EXPECT_EQ(back.nodes, 128);
  EXPECT_EQ(back.devices_per_node, 8);
  EXPECT_EQ(cluster_from_json(cluster_to_json(Cluster{4, {1e9, 0}, {1e9, 0}}), "c.json").nodes, 0);
  Json doc = Json::parse(text);
  doc["nodes"] = 0;
  EXPECT_EQ(error_of([&] { cluster_from_json(doc.dump(), "c.json"); }), "c.json: nodes must be at least 1, got 0");

  check_cluster_size(c, 1024);
  EXPECT_EQ(error_of([&] { check_cluster_size(c, 1032); }),
            "the cluster has 128 nodes of 8 devices (1024); the plan needs 1032");
  check_cluster_size(default_cluster("cuda"), 1 << 20);

  // The example: 128 nodes of 8 A100s, NVLink inside a node (300 GB/s each
  // way per GPU), one 200 Gb/s InfiniBand port per GPU between nodes.
  Cluster selene = load_cluster(PF_SOURCE_DIR "/examples/clusters/a100_1024.json");
  EXPECT_EQ(selene.nodes * selene.devices_per_node, 1024);
  EXPECT_EQ(selene.intra.bandwidth_bytes_per_s, 300e9);
  EXPECT_EQ(selene.inter.bandwidth_bytes_per_s, 200e9 / 8);
}

TEST(Devices, OneKind) {
  std::vector<DeviceSpec> cpus = parse_devices("cpu:4", builtin_profile("cpu"));
  ASSERT_EQ(cpus.size(), 4u);
  EXPECT_EQ(cpus[0].name, "cpu:0");
  EXPECT_EQ(cpus[3].name, "cpu:3");
  EXPECT_EQ(cpus[3].speed, 1.0);
  EXPECT_EQ(cpus[3].memory_bytes, 8 * kGiB);
  std::vector<DeviceSpec> gpus = parse_devices("h100:8", builtin_profile("h100", "bf16"));
  ASSERT_EQ(gpus.size(), 8u);
  EXPECT_EQ(gpus[7].name, "h100:7");
  EXPECT_EQ(gpus[7].memory_bytes, 80 * kGiB);
  EXPECT_EQ(parse_devices("h100", builtin_profile("h100")).size(), 1u);
}

TEST(Devices, MixedKindsGetTheirOwnProfiles) {
  std::vector<DeviceEntry> mixed = parse_device_entries("a100:2,h100:2", builtin_profile("a100", "tf32"));
  ASSERT_EQ(mixed.size(), 4u);
  EXPECT_EQ(mixed[1].spec.name, "a100:1");
  EXPECT_EQ(mixed[2].spec.name, "h100:2");
  EXPECT_EQ(mixed[0].spec.speed, 1.0);
  EXPECT_DOUBLE_EQ(mixed[3].spec.speed, 495.0 / 156.0);
  EXPECT_EQ(mixed[3].profile.name, "h100");
  EXPECT_EQ(mixed[3].profile.precision, "tf32");

  // The reference profile itself prices devices of its name, measured times included.
  DeviceProfile lab = measured_profile();
  std::vector<DeviceEntry> entries = parse_device_entries("h100-lab:2,h100:1", lab);
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[1].spec.name, "h100-lab:1");
  EXPECT_EQ(entries[1].profile.measured, lab.measured);
  EXPECT_TRUE(entries[2].profile.measured.empty());
  EXPECT_EQ(entries[2].spec.speed, 1.0);  // both bf16 H100s
}

// A profile measured on this machine's CPU ("cpu-measured", its own product
// rate) prices the cpu devices of a list itself: speed 1 a core, not the
// built-in CPU roofline's rate over the measured one (which priced every
// stage 1.8x too slow once profiles measured the core's rate).
TEST(Devices, AMeasuredCpuProfilePricesTheCpuDevices) {
  DeviceProfile here = builtin_profile("cpu");
  here.name = "cpu-measured";
  here.flops = 182e9;
  here.measured["matmul f32[4,8], f32[8,8]"] = {1e-6, 2e-6};
  const std::vector<DeviceEntry> entries = parse_device_entries("cpu:1,cpu:1x4", here);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].spec.speed, 1.0);
  EXPECT_EQ(entries[1].spec.speed, 4.0);
  EXPECT_EQ(entries[0].profile.name, "cpu-measured");
  EXPECT_EQ(entries[1].profile.measured, here.measured);
}

TEST(Devices, BadLists) {
  DeviceProfile cpu = builtin_profile("cpu");
  EXPECT_EQ(error_of([&] { parse_devices("tpu:2", cpu); }), "unknown device kind 'tpu'; known: cpu, a100, h100");
  EXPECT_EQ(error_of([&] { parse_devices("tpu", measured_profile()); }),
            "unknown device kind 'tpu'; known: cpu, a100, h100, h100-lab");
  EXPECT_EQ(error_of([&] { parse_devices("h100:", cpu); }),
            "bad device list 'h100:' at 'h100:'; write it like cpu:4, cpu:2x4 (threads each) or a100:2,h100:2");
  EXPECT_EQ(error_of([&] { parse_devices("cpu:2,,cpu:1", cpu); }),
            "bad device list 'cpu:2,,cpu:1' at ''; write it like cpu:4, cpu:2x4 (threads each) or a100:2,h100:2");
  for (std::string_view spec : {"cpu:0", "cpu:-1", ":2", "cpu:4,", "cpu:x", "cpu:2x", "cpu:2x0", "cpu:x4", "cpu:2x4x", ""})
    EXPECT_NE(error_of([&] { parse_devices(spec, cpu); }).find("bad device list"), std::string::npos) << spec;
  EXPECT_EQ(error_of([&] { parse_devices("cpu:1,h100:1", builtin_profile("h100", "tf32")); }),
            "cpu has no tf32 matmul rate; it has fp32, bf16");
  EXPECT_EQ(error_of([&] { parse_devices("h100:2x4", builtin_profile("h100")); }),
            "h100:2x4: threads are counted for CPU devices; a h100 device is one GPU");
}

// cpu:NxT: N devices of T threads, each T times as fast as one thread (the
// profile times one core).
TEST(Devices, CpuDevicesCarryTheirThreads) {
  std::vector<DeviceEntry> entries = parse_device_entries("cpu:2x4,cpu:1", builtin_profile("cpu"));
  ASSERT_EQ(entries.size(), 3u);
  EXPECT_EQ(entries[1].spec.name, "cpu:1");
  EXPECT_EQ(entries[1].threads, 4);
  EXPECT_EQ(entries[1].spec.speed, 4.0);
  EXPECT_EQ(entries[2].threads, 1);
  EXPECT_EQ(entries[2].spec.speed, 1.0);
}

}  // namespace
}  // namespace pf
