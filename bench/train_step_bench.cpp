// Times one training step (forward + loss + backward + SGD step) of the reference MLP and GPT, and of a Llama-style
// decoder and a Mixtral-style one (8 experts, 2 per token) of the GPT's sizes, on one CPU device,
// as `pipeforge run MODEL.pf` trains it (a one-stage plan through the runtime), and prints one markdown table: median step time, GFLOP/s against this machine's sgemm peak, the share of the
// step spent in GEMM and the five op kinds that take longest.
//
//   make -C build-perf train_step_bench && build-perf/bench/train_step_bench --threads 1,2
//
// The workloads are those of the PyTorch reference (../shared/bench/torch_bench.py; the Llama's and the
// Mixtral's twins are bench/torch_llama.py and bench/torch_moe.py), and so is the step: SGD without momentum at lr 1e-3, the same batch every step. bench/compare_torch.sh runs both in one go.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "backends/cpu/parallel.h"
#include "bench/median.h"
#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "partitioner/compile.h"
#include "runtime/pipeline.h"
#include "runtime/random_batch.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

using pf::bench::median;

/// One workload of the comparison with PyTorch.
struct Workload {
  std::string name;
  std::string file;  // relative to the examples folder
  std::string bind;
  int64_t tokens;       // per step: samples for the MLP, batch * sequence for the GPT
  int64_t attn_flops;   // 12 * layers * T * C * tokens for the GPT (full T x T products), else 0
};

std::vector<Workload> workloads() {
  constexpr int64_t kLayers = 4, kWidth = 512, kSeq = 128, kBatch = 8;
  return {
      {"mlp", "mlp.pf", "", 256, 0},
      {"gpt", "gpt.pf", "L=4,C=512,H=8,T=128,S=128,V=8192,B=8", kBatch * kSeq,
       12 * kLayers * kSeq * kWidth * kBatch * kSeq},
      // The GPT's sizes with Llama's blocks; F = 8C/3 rounded up to a multiple of 256, as Llama sizes its MLP.
      {"llama", "llama.pf", "L=4,C=512,H=8,F=1536,T=128,V=8192,B=8", kBatch * kSeq,
       12 * kLayers * kSeq * kWidth * kBatch * kSeq},
      // Llama's with each MLP 8 experts of half its width, 2 per token: the same products per token.
      {"moe", "moe.pf", "L=4,C=512,H=8,F=768,T=128,V=8192,B=8,E=8,K=2", kBatch * kSeq,
       12 * kLayers * kSeq * kWidth * kBatch * kSeq},
  };
}

const Workload& find_workload(const std::vector<Workload>& all, const std::string& name) {
  for (const Workload& w : all)
    if (w.name == name) return w;
  throw pf::Error(fmt::format("--models: no workload named '{}' (mlp, gpt, llama, moe)", name));
}

/// The best of a few 2048^3 sgemm calls: the rate a GEMM-bound step could reach on `threads` threads.
double sgemm_peak_gflops(int threads) {
  constexpr int64_t n = 2048;
  pf::cpu::set_cpu_threads(threads);
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n, 0.0f);
  double best = 1e30;
  for (int rep = 0; rep < 6; ++rep) {
    const Clock::time_point start = Clock::now();
    pf::cpu::gemm(false, false, n, n, n, a.data(), n, b.data(), n, c.data(), n);
    best = std::min(best, seconds_since(start));
  }
  return 2.0 * n * n * n / best / 1e9;
}

/// FLOPs of the matmuls of one step: the forward graph and its backward function, by the ops' cost rules.
double matmul_flops(const pf::Module& m, const std::string& backward, const pf::DimBinding& binding) {
  double flops = 0;
  for (const pf::Function* f : {&m.graph(), m.find_function(backward)}) {
    for (const pf::Op& op : f->ops) {
      if (op.kind != pf::OpKind::matmul) continue;
      std::vector<pf::TensorType> in, out;
      for (pf::ValueId v : op.operands) in.push_back(f->type_of(v));
      for (pf::ValueId v : op.results) out.push_back(f->type_of(v));
      flops += static_cast<double>(pf::op_info(op.kind).cost(in, out, pf::evaluate_attrs(op, binding)).flops);
    }
  }
  return flops;
}

int64_t classes_of(const pf::Function& g) {
  for (const pf::Op& op : g.ops)
    if (op.kind == pf::OpKind::cross_entropy) return g.type_of(op.operands[0]).shape.back();
  throw pf::Error(fmt::format("train_step_bench: @{} has no cross_entropy loss", g.name));
}

struct Row {
  std::string model;
  int threads = 1;
  int64_t params = 0;
  double median_ms = 0, min_ms = 0, max_ms = 0;
  double flops_6nt = 0, flops_attn = 0, gemm_flops = 0;
  double gemm_share = 0;   // matmul kernel seconds / step seconds, in the profiled steps
  double gemm_ms = 0;      // per profiled step
  double loss_first = 0, loss_last = 0;
  std::vector<std::pair<std::string, double>> top;  // op kind -> ms per profiled step
  std::vector<pf::backend::OpTime> ops;                  // with --ops: each op of that kind, ms per profiled step
};

/// Where the models are, and how the stages compute (the plan's --dtype: f32, or bf16 products).
struct Setup {
  std::string examples;
  std::string dtype;
  std::string fusion = "all";  // compile --fusion
};

/// One workload as `pipeforge run MODEL.pf` trains it: a one-stage plan on one CPU device, compiled in memory,
/// SGD as torch_bench.py's, with random inputs bound.
struct Session {
  pf::Plan plan;
  pf::Module program;  // the stage's, for the FLOPs of its matmuls
  std::unique_ptr<pf::Pipeline> pipeline;
  pf::RandomBatch batch;  // labels and tokens below the classifier's width
  pf::DimBinding binding;

  Session(const Workload& w, const Setup& setup, int threads) {
    pf::cpu::set_cpu_threads(threads);
    pf::Module module = pf::parse_module(pf::read_source_file(setup.examples + "/" + w.file));
    binding = module.binding(pf::parse_binding(w.bind));
    pf::verify_module(module, binding, pf::VerifyOptions{true});
    pf::CompileOptions co;
    co.devices = fmt::format("cpu:1x{}", threads);  // the device runs its kernels on `threads` (run --threads)
    co.microbatches = 1;
    co.schedule = "gpipe";
    co.optimizer = "sgd";
    co.dtype = setup.dtype;
    co.fusions = pf::fusions_named(setup.fusion);
    plan = pf::compile_plan(std::move(module), binding, w.file, co).plan;
    program = pf::stage_program(plan, plan.stages[0]);
    pf::PipelineOptions options;
    options.train.optimizer = "sgd";
    options.train.lr = 1e-3;
    options.train.momentum = 0;  // torch.optim.SGD(lr=1e-3) as in torch_bench.py
    pipeline = pf::Pipeline::from_plan(plan, options);
    pipeline->initialize(0);
    pipeline->start();
    batch = pf::random_batch(program.graph(), 0, static_cast<int32_t>(classes_of(program.graph())));
  }

  /// The parameters 6NT counts: those a product reads for each token. A
  /// table that is only gathered from (an untied token embedding) costs no
  /// FLOPs per token; an expert's weights count K of E (each token reads its
  /// K experts').
  int64_t params() const {
    const pf::Function& g = program.graph();
    const std::vector<std::vector<int>> users = g.users();
    auto only = [&](pf::ValueId v, pf::OpKind kind) {
      return v >= 0 && std::all_of(users[static_cast<size_t>(v)].begin(), users[static_cast<size_t>(v)].end(),
                                   [&](int op) { return g.ops[static_cast<size_t>(op)].kind == kind; });
    };
    int64_t n = 0;
    for (const pf::PlanParam& p : plan.stages[0].params) {
      const pf::ValueId v = g.find_value(p.name);
      if (only(v, pf::OpKind::embedding)) continue;
      n += only(v, pf::OpKind::moe_matmul) ? p.type.numel() * binding.at("K") / binding.at("E") : p.type.numel();
    }
    return n;
  }

  /// One training step; its loss. Adds the seconds after the schedule's
  /// actions (gradient norm and SGD step) to `optimizer_seconds` when given.
  double step(double* optimizer_seconds = nullptr) {
    const pf::PipelineStepResult r = pipeline->train_step(batch.named);
    if (optimizer_seconds) *optimizer_seconds += r.update_seconds;
    return r.loss;
  }
};

/// --serve: warms up, prints "ready", then runs one step per line read from
/// stdin and answers "<seconds> <loss>" (bench/lockstep.py alternates
/// programs step by step this way, so that the machine's drift hits both).
/// With `profile`, the served steps time every op, and at the end stderr gets
/// one line per op ("<ms per step> <op and operand types>") and one for the
/// optimizer, to set beside bench/torch_step_server.py --profile.
void serve(const Workload& w, const Setup& setup, int threads, int warmup, bool profile) {
  Session session(w, setup, threads);
  for (int i = 0; i < warmup; ++i) session.step();
  pf::Pipeline& pipeline = *session.pipeline;
  pipeline.set_profile(profile);
  pipeline.reset_profile();
  std::cout << "ready" << std::endl;
  std::string line;
  int steps = 0;
  double optimizer = 0;
  while (std::getline(std::cin, line)) {
    const Clock::time_point start = Clock::now();
    const double loss = session.step(&optimizer);
    ++steps;
    std::cout << fmt::format("{:.6f} {:.6f}", seconds_since(start), loss) << std::endl;
  }
  if (!profile || steps == 0) return;
  for (const pf::backend::OpTime& t : pipeline.op_times(0))
    std::cerr << fmt::format("{:8.2f}  {}: {}\n", t.seconds / steps * 1e3, t.function, t.text);
  std::cerr << fmt::format("{:8.2f}  optimizer (gradient norm and SGD step)\n", optimizer / steps * 1e3);
}

Row run(const Workload& w, const Setup& setup, int threads, int warmup, int steps, int top,
        const std::string& ops_of_kind) {
  Session session(w, setup, threads);
  pf::Pipeline& pipeline = *session.pipeline;
  const pf::DimBinding& binding = session.binding;

  Row row;
  row.model = w.name;
  row.threads = threads;
  row.params = session.params();
  row.loss_first = session.step();
  for (int i = 1; i < warmup; ++i) session.step();
  std::vector<double> times;
  for (int i = 0; i < steps; ++i) {
    const Clock::time_point start = Clock::now();
    row.loss_last = session.step();
    times.push_back(seconds_since(start));
  }
  row.median_ms = median(times) * 1e3;
  row.min_ms = *std::min_element(times.begin(), times.end()) * 1e3;
  row.max_ms = *std::max_element(times.begin(), times.end()) * 1e3;
  const double tokens = static_cast<double>(w.tokens);
  row.flops_6nt = 6.0 * static_cast<double>(row.params) * tokens;
  row.flops_attn = row.flops_6nt + static_cast<double>(w.attn_flops);

  // Shares come from separate profiled steps, so that the timed ones above read no clock per op. What the
  // kernels do not cover is listed as "optimizer" (after the schedule's actions: gradient norm and SGD step) and
  // "other" (the executors' and the rank worker's own work).
  row.gemm_flops = matmul_flops(session.program, session.plan.stages[0].gradients->backward, binding);
  const int profiled = std::max(1, steps / 2);
  pipeline.set_profile(true);
  pipeline.reset_profile();
  double wall = 0, optimizer = 0;
  for (int i = 0; i < profiled; ++i) {
    const Clock::time_point start = Clock::now();
    session.step(&optimizer);
    wall += seconds_since(start);
  }
  pipeline.set_profile(false);
  const std::vector<pf::backend::OpTime> op_times = pipeline.op_times(0);
  pf::backend::OpSeconds seconds{};
  for (const pf::backend::OpTime& t : op_times) seconds[static_cast<size_t>(t.kind)] += t.seconds;
  double kernels = 0;
  std::vector<std::pair<std::string, double>> kinds;
  for (int k = 0; k < pf::kNumOps; ++k) {
    if (seconds[k] <= 0) continue;
    kernels += seconds[k];
    kinds.emplace_back(std::string(pf::op_name(static_cast<pf::OpKind>(k))), seconds[k] / profiled * 1e3);
  }
  kinds.emplace_back("optimizer", optimizer / profiled * 1e3);
  kinds.emplace_back("other", (wall - kernels - optimizer) / profiled * 1e3);
  std::sort(kinds.begin(), kinds.end(), [](auto& a, auto& b) { return a.second > b.second; });
  kinds.resize(std::min<size_t>(kinds.size(), static_cast<size_t>(top)));
  row.top = kinds;
  row.gemm_ms = seconds[static_cast<size_t>(pf::OpKind::matmul)] / profiled * 1e3;
  for (pf::backend::OpTime t : op_times)
    if (pf::op_name(t.kind) == ops_of_kind) {
      t.seconds = t.seconds / profiled * 1e3;  // now ms per step
      row.ops.push_back(std::move(t));
    }
  row.gemm_share = seconds[static_cast<size_t>(pf::OpKind::matmul)] / wall;
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Times one training step of the reference MLP, GPT and Llama-style decoder on one CPU device"};
  Setup setup{PF_SOURCE_DIR "/examples", "f32"};
  std::vector<int> thread_counts{1, 2};
  std::vector<std::string> models{"mlp", "gpt", "llama", "moe"};
  int warmup = 3, steps = 10, top_kinds = 5;
  std::string ops_of_kind;
  bool json = false, serve_steps = false, profile = false, openblas_sgemm = false;
  app.add_option("--examples", setup.examples, "folder holding mlp.pf, gpt.pf, llama.pf and moe.pf");
  app.add_option("--dtype", setup.dtype, "how the stage computes: f32, or bf16 (its products on operands rounded to bf16)")
      ->check(CLI::IsMember({"f32", "bf16"}));
  app.add_option("--threads", thread_counts, "thread counts (of the device: GEMMs and kernels)")->delimiter(',');
  app.add_option("--models", models, "mlp, gpt, llama, moe")->delimiter(',');
  app.add_option("--warmup", warmup, "untimed steps first")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps (the median is reported)")->check(CLI::PositiveNumber);
  app.add_option("--top", top_kinds, "op kinds listed per row")->check(CLI::PositiveNumber);
  app.add_option("--ops", ops_of_kind, "also list every op of this kind (matmul, add, ...) with its time per step");
  app.add_flag("--json", json, "one JSON line per row instead of the table");
  app.add_flag("--serve", serve_steps,
               "one model and thread count: warm up, print 'ready', then run a step per stdin line and print "
               "'<seconds> <loss>' (for bench/lockstep.py)");
  app.add_flag("--profile", profile, "with --serve: at the end, every op's milliseconds per served step on stderr");
  app.add_flag("--openblas-sgemm", openblas_sgemm, "every f32 GEMM through OpenBLAS instead of Pipeforge's own");
  app.add_option("--fusion", setup.fusion, "the fusions compiled in: all, none, attention or swiglu (compile --fusion)")
      ->check(CLI::IsMember(pf::fusion_choices()));
  CLI11_PARSE(app, argc, argv);
  pf::cpu::use_openblas_sgemm(openblas_sgemm);

  try {
    if (serve_steps) {
      if (models.size() != 1 || thread_counts.size() != 1)
        throw pf::Error("--serve: give one model (--models) and one thread count (--threads)");
      serve(find_workload(workloads(), models[0]), setup, thread_counts[0], warmup, profile);
      return 0;
    }
    std::vector<Row> rows;
    std::vector<std::pair<int, double>> peaks;
    for (int t : thread_counts) peaks.emplace_back(t, sgemm_peak_gflops(t));
    const std::vector<Workload> all = workloads();
    for (const std::string& name : models)
      for (int t : thread_counts)
        rows.push_back(run(find_workload(all, name), setup, t, warmup, steps, top_kinds, ops_of_kind));
    auto peak_of = [&](int t) {
      for (auto& [threads, gflops] : peaks)
        if (threads == t) return gflops;
      return 0.0;
    };
    if (json) {
      for (const Row& r : rows)
        std::cout << fmt::format(
            "{{\"model\": \"{}\", \"threads\": {}, \"median_ms\": {:.1f}, \"min_ms\": {:.1f}, \"max_ms\": {:.1f}, "
            "\"gflops_6NT\": {:.1f}, \"gflops_with_attn\": {:.1f}, \"gemm_share\": {:.3f}, \"gemm_gflops\": {:.1f}, "
            "\"sgemm_peak_gflops\": {:.1f}, \"sgemm_kernel\": \"{}\", \"openblas_core\": \"{}\", \"params\": {}, "
            "\"loss_first\": {:.4f}, \"loss_last\": {:.4f}}}\n",
            r.model, r.threads, r.median_ms, r.min_ms, r.max_ms, r.flops_6nt / r.median_ms / 1e6,
            r.flops_attn / r.median_ms / 1e6, r.gemm_share, r.gemm_flops / r.gemm_ms / 1e6, peak_of(r.threads),
            pf::cpu::sgemm_kernel_name(), pf::cpu::blas_core_name(), r.params, r.loss_first, r.loss_last);
      return 0;
    }
    std::vector<std::string> peak_text;
    for (auto& [t, g] : peaks) peak_text.push_back(fmt::format("{:.0f} GFLOP/s on {}", g, t));
    std::cout << fmt::format(
        "f32 GEMM: {} (OpenBLAS {} kernel for the rest); sgemm peak (2048^3, best of 6): {}; {} warm-up + {} timed "
        "steps{}\n\n",
        pf::cpu::sgemm_kernel_name(), pf::cpu::blas_core_name(), fmt::join(peak_text, ", "), warmup, steps,
        setup.dtype == "bf16" ? fmt::format("; --dtype bf16: every product through {}", pf::cpu::bf16_kernel_name())
                              : "");
    std::cout << "| model | threads | median ms (min-max) | GFLOP/s 6NT | GFLOP/s with attn | of sgemm peak | GEMM "
                 "share | GEMM GFLOP/s | top op kinds, ms per step |\n";
    std::cout << "|---|---|---|---|---|---|---|---|---|\n";
    for (const Row& r : rows) {
      const double rate = r.flops_6nt / r.median_ms / 1e6, attn = r.flops_attn / r.median_ms / 1e6;
      std::string top;
      for (const auto& [kind, ms] : r.top) top += fmt::format("{}{} {:.1f}", top.empty() ? "" : ", ", kind, ms);
      std::cout << fmt::format("| {} | {} | {:.1f} ({:.1f}-{:.1f}) | {:.1f} | {} | {:.0f}% | {:.0f}% | {:.1f} | {} |\n",
                               r.model, r.threads, r.median_ms, r.min_ms, r.max_ms, rate,
                               r.flops_attn > r.flops_6nt ? fmt::format("{:.1f}", attn) : std::string("-"),
                               100 * (r.flops_attn / r.median_ms / 1e6) / peak_of(r.threads), 100 * r.gemm_share,
                               r.gemm_flops / r.gemm_ms / 1e6, top);
    }
    for (const Row& r : rows) {
      if (r.ops.empty()) continue;
      std::cout << fmt::format("\n{}, {} thread(s): every {} op, ms per step\n\n| function | op | operands | ms |\n"
                               "|---|---:|---|---:|\n",
                               r.model, r.threads, ops_of_kind);
      double total = 0;
      for (const pf::backend::OpTime& t : r.ops) {
        std::cout << fmt::format("| {} | {} | {} | {:.2f} |\n", t.function, t.op, t.text, t.seconds);
        total += t.seconds;
      }
      std::cout << fmt::format("| all | | {} ops | {:.1f} |\n", r.ops.size(), total);
    }
  } catch (const pf::Error& e) {
    std::cerr << e.render();
    return 1;
  }
  return 0;
}
