// A plan whose costs a test can work out by hand: L identical matmul layers
// (the last with a loss), one stage per layer, priced by a profile that
// gives every matmul the same measured time and every other op none.
#pragma once

#include <fmt/format.h>

#include <limits>
#include <string>
#include <vector>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "partitioner/device_profile.h"
#include "plan/plan.h"

namespace pf::test {

/// Batch B, width C, `layers` layers "l0".."l{L-1}". The input passes a
/// bias first, so that every matmul computes both gradients: each stage's
/// backward costs the same.
inline Module chain_model(int layers, int batch = 16) {
  std::string text = "dim B = " + std::to_string(batch) + "\ndim C = 16\n\ngraph @chain(%x: f32[B,C], %y: f32[B,C]) -> f32[] {\n";
  text += "  %b = param init=zeros layer=\"l0\" : f32[C]\n  %xb = add %x, %b layer=\"l0\" : f32[B,C]\n";
  std::string in = "%xb";
  for (int l = 0; l < layers; ++l) {
    text += fmt::format("  %w{0} = param init=normal(0.1) layer=\"l{0}\" : f32[C,C]\n", l);
    text += fmt::format("  %h{0} = matmul {1}, %w{0} layer=\"l{0}\" : f32[B,C]\n", l, in);
    in = fmt::format("%h{}", l);
  }
  text += fmt::format("  %loss = mse_loss {}, %y layer=\"l{}\" : f32[]\n  return %loss\n}}\n", in, layers - 1);
  return parse_module_text("chain.pf", text);
}

/// The chain compiled with one stage per layer.
inline Plan chain_plan(int layers, const std::string& schedule, int microbatches, int data_parallel = 1,
                       int virtual_stages = 1, int batch = 16) {
  Module m = chain_model(layers, batch);
  DimBinding b = m.binding();
  verify_module(m, b);
  CompileOptions o;
  o.devices = fmt::format("cpu:{}", layers / virtual_stages);
  o.microbatches = microbatches;
  o.schedule = schedule;
  o.data_parallel = data_parallel;
  o.virtual_stages = virtual_stages;
  return compile_plan(std::move(m), b, "chain.pf", o).plan;
}

/// The CPU roofline with every op of the plan's programs measured: a matmul
/// `forward_s` forward and `backward_s` backward, anything else nothing.
inline DeviceProfile matmul_profile(const Plan& plan, const std::vector<Module>& programs, double forward_s,
                                    double backward_s) {
  DeviceProfile profile = builtin_profile("cpu");
  profile.name = "cpu-measured";
  for (const Module& program : programs) {
    const Function& g = program.graph();
    for (const Op& op : g.ops) {
      if (op.operands.empty()) continue;
      const bool matmul = op.kind == OpKind::matmul;
      profile.measured[op_timing_key(g, op, plan.binding)] = {matmul ? forward_s : 0, matmul ? backward_s : 0};
    }
  }
  return profile;
}

/// Links that take no time: hand-offs arrive when they are sent.
inline Cluster instant_cluster() {
  const double inf = std::numeric_limits<double>::infinity();
  return {1024, {inf, 0}, {inf, 0}};
}

}  // namespace pf::test
