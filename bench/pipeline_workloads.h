// The pipeline benchmarks' workloads (pipeline_bench, simulate_bench) and the
// profile their plans are compiled on: each op timed on this machine at one
// micro-batch while every stage's core is busy, as `pipeforge profile
// --concurrent p` measures it.
#pragma once

#include <string>
#include <vector>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "passes/pipeline.h"
#include "profiler/profiler.h"

namespace pf::bench {

struct Workload {
  std::string name;
  std::string file;  // relative to the source tree
  DimBinding overrides;
};

/// Models whose layers do not split evenly in two (4 blocks and a heavy
/// head; 784->4096 + 4096->4096 | 4096->4096 + a 10-way head, where the
/// first layer computes no input gradient), and a deeper GPT with 4
/// sequences per micro-batch.
inline std::vector<Workload> pipeline_workloads() {
  return {
      {"gpt L=8 C=512 T=128 V=8192 B=32", "examples/gpt.pf",
       {{"B", 32}, {"L", 8}, {"C", 512}, {"H", 8}, {"T", 128}, {"S", 128}, {"V", 8192}}},
      {"gpt L=4 C=512 T=128 V=8192 B=8", "examples/gpt.pf",
       {{"B", 8}, {"L", 4}, {"C", 512}, {"H", 8}, {"T", 128}, {"S", 128}, {"V", 8192}}},
      {"mlp 784-4096x3-10 B=256", "examples/mlp.pf", {{"B", 256}}},
  };
}

inline Module load_workload(const Workload& w) {
  return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/" + w.file));
}

/// Every op of `w` timed at one of `m` micro-batches with `busy` cores
/// computing at once (profile_model), caches warm or cold, saved to `path`
/// for CompileOptions::profile.
inline DeviceProfile measure_workload(const Workload& w, int m, int busy, const std::string& path,
                                      bool cold_caches = false) {
  Module model = load_workload(w);
  const DimBinding b = model.binding(w.overrides);
  verify_module(model, b, VerifyOptions{true});
  const DimBinding micro = microbatch_binding(model, b, m);
  PassContext ctx{micro};
  run_pipeline(model, PassPipeline::model, ctx);
  ProfileOptions options;
  options.concurrent = busy;
  options.microbatches = m;
  options.cold_caches = cold_caches;
  DeviceProfile profile = profile_model(model, micro, options);
  save_profile(profile, path);
  return profile;
}

}  // namespace pf::bench
