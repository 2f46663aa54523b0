// The memory planner: reuse on chains, returned and aliased live ranges, no two live values overlapping.
#include "backends/common/memory_plan.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "tests/verified_module.h"

namespace pf::backend {
namespace {

/// Arguments and parameters: what an executor leaves outside the arena.
std::vector<bool> args_and_params(const Function& f) {
  std::vector<bool> external(f.values.size(), false);
  for (ValueId a : f.args) external[a] = true;
  for (const Op& op : f.ops)
    if (op.kind == OpKind::param) external[op.results[0]] = true;
  return external;
}

/// Checks the plan against liveness computed here from scratch (from
/// Function::users, not the planner's own walk): every value that owns bytes
/// is aligned and inside the arena, and any two values whose live ranges
/// overlap (aliases counted with the value they alias) use disjoint bytes.
void expect_no_overlap(const Function& f, const MemoryPlan& plan, DType float_dtype, const std::vector<bool>& external,
                       const std::vector<ValueId>& alias_of = {}) {
  const size_t n = f.values.size();
  auto root = [&](ValueId v) {
    while (!alias_of.empty() && alias_of[v] >= 0) v = alias_of[v];
    return v;
  };
  const std::vector<std::vector<int>> users = f.users();
  const int end = static_cast<int>(f.ops.size());
  std::vector<int> first(n), last(n);
  for (size_t v = 0; v < n; ++v) first[v] = last[v] = f.values[v].def_op;
  for (size_t v = 0; v < n; ++v) {
    const ValueId r = root(static_cast<ValueId>(v));
    for (int u : users[v]) last[r] = std::max(last[r], u);
    if (std::find(f.returns.begin(), f.returns.end(), static_cast<ValueId>(v)) != f.returns.end()) last[r] = end;
  }
  std::vector<ValueId> owners;
  for (size_t v = 0; v < n; ++v) {
    const ValueId r = root(static_cast<ValueId>(v));
    if (r != static_cast<ValueId>(v)) {
      EXPECT_EQ(plan.offset[v], plan.offset[r]) << "alias %" << f.values[v].name;
      continue;
    }
    if (external[v]) {
      EXPECT_EQ(plan.offset[v], -1) << "%" << f.values[v].name;
      continue;
    }
    const int64_t size = stored_bytes(f.type_of(static_cast<ValueId>(v)), float_dtype);
    EXPECT_GE(plan.bytes[v], size) << "%" << f.values[v].name;
    EXPECT_EQ(plan.offset[v] % kArenaAlignment, 0) << "%" << f.values[v].name;
    EXPECT_LE(plan.offset[v] + size, plan.arena_bytes) << "%" << f.values[v].name;
    if (size > 0) owners.push_back(static_cast<ValueId>(v));
  }
  for (size_t i = 0; i < owners.size(); ++i)
    for (size_t j = i + 1; j < owners.size(); ++j) {
      const ValueId a = owners[i], b = owners[j];
      if (first[a] > last[b] || first[b] > last[a]) continue;  // never live together
      const int64_t a_end = plan.offset[a] + stored_bytes(f.type_of(a), float_dtype);
      const int64_t b_end = plan.offset[b] + stored_bytes(f.type_of(b), float_dtype);
      EXPECT_TRUE(a_end <= plan.offset[b] || b_end <= plan.offset[a])
          << "%" << f.values[a].name << " [" << plan.offset[a] << ", " << a_end << ") and %" << f.values[b].name << " ["
          << plan.offset[b] << ", " << b_end << ") are live together at ops " << std::max(first[a], first[b]) << ".."
          << std::min(last[a], last[b]);
    }
}

TEST(MemoryPlan, LongChainReusesTwoBuffers) {
  // 64 elementwise ops on f32[32,32] (4 KiB each): at any op only its operand
  // and its result are live, so two buffers suffice.
  std::string text = "graph @chain(%x: f32[32,32]) -> f32[32,32] {\n";
  std::string prev = "x";
  for (int i = 0; i < 64; ++i) {
    const std::string cur = "h." + std::to_string(i);
    text += "  %" + cur + " = " + (i % 2 ? "exp" : "tanh") + " %" + prev + " : f32[32,32]\n";
    prev = cur;
  }
  text += "  return %" + prev + "\n}\n";
  Module m = verified_module(text);
  const Function& f = m.graph();
  const std::vector<bool> external = args_and_params(f);
  const MemoryPlan plan = plan_memory(f, DType::f32, external);
  EXPECT_EQ(plan.naive_bytes, 64 * 4096);
  EXPECT_EQ(plan.arena_bytes, 2 * 4096);
  expect_no_overlap(f, plan, DType::f32, external);

  // Floats stored as f64 take twice the bytes, nothing else changes.
  const MemoryPlan plan64 = plan_memory(f, DType::f64, external);
  EXPECT_EQ(plan64.arena_bytes, 2 * 8192);
  expect_no_overlap(f, plan64, DType::f64, external);
}

const char* kThree = R"(
graph @g(%x: f32[16]) -> (f32[16], f32[16]) {
  %a = exp %x : f32[16]
  %b = exp %a : f32[16]
  %c = exp %b : f32[16]
  return %c, %RET
}
)";

TEST(MemoryPlan, ReturnedValuesStayLiveToTheEnd) {
  // Returning %a keeps its bytes from %c, which could otherwise reuse them.
  auto plan_with = [](const std::string& second) {
    std::string text = kThree;
    text.replace(text.find("%RET"), 4, second);
    Module m = verified_module(text);
    const std::vector<bool> external = args_and_params(m.graph());
    MemoryPlan plan = plan_memory(m.graph(), DType::f32, external);
    expect_no_overlap(m.graph(), plan, DType::f32, external);
    return plan;
  };
  EXPECT_EQ(plan_with("%c").arena_bytes, 2 * 64);
  EXPECT_EQ(plan_with("%a").arena_bytes, 3 * 64);
}

TEST(MemoryPlan, ExternalValuesTakeNoBytes) {
  const char* text = R"(
graph @g(%x: f32[4,8]) -> f32[4,16] {
  %w = param init=zeros : f32[8,16]
  %y = matmul %x, %w : f32[4,16]
  %z = relu %y : f32[4,16]
  return %z
}
)";
  Module m = verified_module(text);
  const Function& f = m.graph();
  std::vector<bool> external = args_and_params(f);
  MemoryPlan plan = plan_memory(f, DType::f32, external);
  EXPECT_EQ(plan.offset[f.find_value("x")], -1);
  EXPECT_EQ(plan.offset[f.find_value("w")], -1);
  EXPECT_EQ(plan.bytes[f.find_value("w")], 0);
  EXPECT_EQ(plan.naive_bytes, 2 * 256);
  EXPECT_EQ(plan.arena_bytes, 2 * 256);
  // A result the caller binds is external too.
  external[f.find_value("z")] = true;
  plan = plan_memory(f, DType::f32, external);
  EXPECT_EQ(plan.offset[f.find_value("z")], -1);
  EXPECT_EQ(plan.arena_bytes, 256);
}

TEST(MemoryPlan, SizesAreAlignedAndIntegersKeepTheirDtype) {
  const char* text = R"(
graph @g(%x: f32[3], %ids: i64[5]) -> (f32[3], i64[5], bool[4,4]) {
  %y = neg %x : f32[3]
  %j = reshape %ids shape=[5] : i64[5]
  %m = causal_mask : bool[4,4]
  return %y, %j, %m
}
)";
  Module m = verified_module(text);
  const Function& f = m.graph();
  const std::vector<bool> external = args_and_params(f);
  const MemoryPlan plan = plan_memory(f, DType::f64, external);
  EXPECT_EQ(plan.bytes[f.find_value("y")], 64);  // 3 doubles: 24 bytes, aligned up
  EXPECT_EQ(plan.bytes[f.find_value("j")], 64);  // 5 i64, not widened or narrowed
  EXPECT_EQ(plan.bytes[f.find_value("m")], 64);  // 16 bools
  EXPECT_EQ(stored_bytes(f.type_of(f.find_value("y")), DType::f64), 24);
  EXPECT_EQ(stored_bytes(f.type_of(f.find_value("j")), DType::f32), 40);
  EXPECT_EQ(plan.arena_bytes, 3 * 64);
  expect_no_overlap(f, plan, DType::f64, external);
}

// attention's lse stays in f32 under a half float dtype, in the forward that
// writes it and in a backward that reads it from the stash; f64 keeps f64.
TEST(MemoryPlan, AttentionLseKeepsF32UnderBf16) {
  const char* text = R"(
func @fwd(%q: f32[2,16,8]) -> (f32[2,16,8], f32[2,16]) {
  %o, %lse = attention %q, %q, %q causal=true : f32[2,16,8], f32[2,16]
  return %o, %lse
}
graph @bwd(%g: f32[2,16,8], %q: f32[2,16,8], %o: f32[2,16,8], %lse: f32[2,16]) -> f32[2,16,8] {
  %dq, %dk, %dv = attention_grad %g, %q, %q, %q, %o, %lse causal=true : f32[2,16,8], f32[2,16,8], f32[2,16,8]
  return %dq
}
)";
  Module m = verified_module(text);
  const Function& fwd = *m.find_function("fwd");
  const Function& bwd = *m.find_function("bwd");
  const std::vector<DType> stored = stored_dtypes(fwd, DType::bf16);
  EXPECT_EQ(stored[fwd.find_value("o")], DType::bf16);
  EXPECT_EQ(stored[fwd.find_value("lse")], DType::f32);
  EXPECT_EQ(stored_dtypes(bwd, DType::bf16)[bwd.find_value("lse")], DType::f32);
  EXPECT_EQ(stored_dtypes(bwd, DType::bf16)[bwd.find_value("o")], DType::bf16);
  EXPECT_EQ(stored_dtypes(fwd, DType::f64)[fwd.find_value("lse")], DType::f64);
  const MemoryPlan plan = plan_memory(fwd, DType::bf16, args_and_params(fwd));
  EXPECT_EQ(plan.bytes[fwd.find_value("o")], 2 * 16 * 8 * 2);
  EXPECT_EQ(plan.bytes[fwd.find_value("lse")], 2 * 16 * 4);  // 64 in bf16
}

TEST(MemoryPlan, AliasesShareTheirTargetsBytesAndExtendItsLife) {
  // %v aliases %a; %v's use by %e keeps %a's bytes from %b and %c.
  const char* text = R"(
graph @g(%x: f32[16]) -> f32[16] {
  %a = exp %x : f32[16]
  %v = reshape %a shape=[16] : f32[16]
  %b = neg %x : f32[16]
  %c = relu %b : f32[16]
  %e = add %v, %c : f32[16]
  return %e
}
)";
  Module m = verified_module(text);
  const Function& f = m.graph();
  const std::vector<bool> external = args_and_params(f);
  std::vector<ValueId> alias_of(f.values.size(), -1);
  const ValueId a = f.find_value("a"), v = f.find_value("v");
  alias_of[v] = a;
  const MemoryPlan plan = plan_memory(f, DType::f32, external, alias_of);
  EXPECT_EQ(plan.offset[v], plan.offset[a]);
  EXPECT_EQ(plan.bytes[v], 0);
  EXPECT_NE(plan.offset[a], plan.offset[f.find_value("b")]);
  EXPECT_NE(plan.offset[a], plan.offset[f.find_value("c")]);
  EXPECT_EQ(plan.naive_bytes, 4 * 64);
  EXPECT_EQ(plan.arena_bytes, 3 * 64);  // live at %c: %a, %b, %c
  expect_no_overlap(f, plan, DType::f32, external, alias_of);

  // An alias of an external value is outside the arena as well.
  std::vector<ValueId> of_x(f.values.size(), -1);
  of_x[a] = f.find_value("x");
  const MemoryPlan outside = plan_memory(f, DType::f32, external, of_x);
  EXPECT_EQ(outside.offset[a], -1);
  EXPECT_EQ(outside.bytes[a], 0);
  EXPECT_EQ(outside.arena_bytes, 3 * 64);  // %v, %b, %c (%v is no alias here)
}

TEST(MemoryPlan, OpsRunAtOnceNeverWriteWhatTheOtherReads) {
  // In op order, %c may take %a's bytes (%a's last use is %b's op). Run at
  // the same time as %b's op, %c's op would overwrite %a while it is read.
  Module m = verified_module(R"(
graph @g(%x: f32[16]) -> f32[16] {
  %a = exp %x : f32[16]
  %b = neg %a : f32[16]
  %c = relu %x : f32[16]
  %d = add %b, %c : f32[16]
  return %d
}
)");
  const Function& f = m.graph();
  const std::vector<bool> external = args_and_params(f);
  const ValueId a = f.find_value("a"), b = f.find_value("b"), c = f.find_value("c");
  const MemoryPlan in_order = plan_memory(f, DType::f32, external);
  EXPECT_EQ(in_order.offset[c], in_order.offset[a]);
  const std::vector<int> time = {0, 1, 1, 2};  // %b's op and %c's op at once
  const MemoryPlan at_once = plan_memory(f, DType::f32, external, {}, time);
  EXPECT_NE(at_once.offset[c], at_once.offset[a]);
  EXPECT_NE(at_once.offset[c], at_once.offset[b]);
  EXPECT_EQ(at_once.arena_bytes, 3 * 64);  // at time 1: %a, %b, %c
  EXPECT_THROW(plan_memory(f, DType::f32, external, {}, std::vector<int>{0, 1}), Error);
}

TEST(MemoryPlan, BadInputsAreErrors) {
  Module m = verified_module(R"(
graph @g(%x: f32[16]) -> f32[16] {
  %a = exp %x : f32[16]
  %b = exp %a : f32[16]
  return %b
}
)");
  const Function& f = m.graph();
  try {
    plan_memory(f, DType::f32, {true});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "memory plan of @g: 1 external flags for 3 values");
  }
  std::vector<ValueId> cycle(f.values.size(), -1);
  cycle[f.find_value("a")] = f.find_value("b");
  cycle[f.find_value("b")] = f.find_value("a");
  try {
    plan_memory(f, DType::f32, args_and_params(f), cycle);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "memory plan of @g: the aliases of %a form a cycle");
  }
}

/// A random program over f32 vectors of many sizes: elementwise ops, slices
/// that shrink, concats that grow, values used far from their definition.
std::string random_program(std::mt19937& rng, int ops) {
  struct V {
    std::string name;
    int64_t size;
  };
  std::vector<V> values = {{"x0", 48}, {"x1", 200}};
  std::string text = "graph @r(%x0: f32[48], %x1: f32[200]) -> (";
  std::string body;
  auto pick = [&] { return values[std::uniform_int_distribution<size_t>(0, values.size() - 1)(rng)]; };
  for (int i = 0; i < ops; ++i) {
    const V a = pick();
    const std::string name = fmt::format("v{}", i);
    const int kind = std::uniform_int_distribution<int>(0, 3)(rng);
    int64_t size = a.size;
    if (kind == 0) {
      body += "  %" + name + " = relu %" + a.name;
    } else if (kind == 1) {
      V b = a;  // a partner of the same size, if one exists
      for (int tries = 0; tries < 8; ++tries) {
        const V c = pick();
        if (c.size == a.size) b = c;
      }
      body += "  %" + name + " = add %" + a.name + ", %" + b.name;
    } else if (kind == 2 || a.size > 2000) {
      size = std::uniform_int_distribution<int64_t>(1, a.size)(rng);
      body += "  %" + name + " = slice %" + a.name + " axis=0 start=0 end=" + std::to_string(size);
    } else {
      const V b = pick();
      size = a.size + b.size;
      body += "  %" + name + " = concat %" + a.name + ", %" + b.name + " axis=0";
    }
    body += " : f32[" + std::to_string(size) + "]\n";
    values.push_back({name, size});
  }
  const V r1 = values.back(), r2 = values[values.size() / 2];
  text += "f32[" + std::to_string(r1.size) + "], f32[" + std::to_string(r2.size) + "]) {\n" + body;
  return text + "  return %" + r1.name + ", %" + r2.name + "\n}\n";
}

TEST(MemoryPlan, RandomProgramsNeverOverlapLiveValues) {
  std::mt19937 rng(20240611);
  for (int trial = 0; trial < 40; ++trial) {
    const std::string text = random_program(rng, 60);
    Module m = verified_module(text);
    const Function& f = m.graph();
    const std::vector<bool> external = args_and_params(f);
    const MemoryPlan plan = plan_memory(f, DType::f32, external);
    SCOPED_TRACE(text);
    EXPECT_LE(plan.arena_bytes, plan.naive_bytes);
    expect_no_overlap(f, plan, DType::f32, external);
    if (HasFailure()) return;  // one dump is enough
  }
}

}  // namespace
}  // namespace pf::backend
