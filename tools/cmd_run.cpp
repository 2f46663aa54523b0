// `pipeforge run`: train a plan across its devices, or a model on one CPU device through a one-stage plan.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>
#include <chrono>
#include <iostream>
#include <memory>

#include "comm/process_group.h"
#include "ir/units.h"
#include "plan/plan.h"
#include "runtime/pipeline.h"
#include "runtime/runtime.h"
#include "tools/batch_source.h"
#include "tools/command.h"
#include "tools/evaluation.h"
#include "tools/metrics_log.h"
#include "tools/option_checks.h"
#include "tools/plan_facts.h"
#include "tools/run_flags.h"
#include "tools/stale_files.h"

namespace pf::tools {

namespace {

struct RunOptions {
  std::string file;
  std::string bind;
  int64_t steps = 10;
  int64_t batch = 0;
  TrainingOptions train;
  DataFlags data;
  std::string init_from, save_grads, save_weights;
  std::string eval_data;
  int64_t eval_every = 0, eval_batches = 0;  // 0: never; every whole batch of --eval-data
  int threads = 0;  // 0: the plan's (one for a model)
  std::string pack_weights = "auto";
  std::string recompute = "none";
  std::string dtype = "f32";
  bool lr_given = false;
  std::string trace;
  double timeout = 60;
  std::string checkpoint, resume;
  int64_t checkpoint_every = 0;  // 0: only after the last step
  std::string log;               // --log: a JSON line per step
};

std::string rate(const BatchSource& source, double seconds) {
  return source.tokens() > 0
             ? fmt::format("{} tokens/s", format_count(static_cast<int64_t>(source.tokens() / seconds)))
             : fmt::format("{} samples/s", format_count(static_cast<int64_t>(source.samples() / seconds)));
}

RuntimeOptions runtime_options(const RunOptions& o) {
  RuntimeOptions r;
  r.train = o.train;
  if (!o.lr_given) r.train.lr = default_lr(o.train.optimizer);
  r.train.steps = o.steps;
  r.timeout_s = o.timeout;
  r.trace = !o.trace.empty();
  r.threads = o.threads;
  r.pack_weights = pack_weights_named(o.pack_weights).value();  // the flag takes only those names
  return r;
}

/// Where rank `rank` writes a file that rank 0 writes at `path`:
/// "trace.json" -> "trace.rank1.json".
std::string rank_file(const std::string& path, int rank) {
  const size_t slash = path.find_last_of('/');
  const size_t dot = path.find_last_of('.');
  const bool has_ext = dot != std::string::npos && (slash == std::string::npos || dot > slash);
  return has_ext ? fmt::format("{}.rank{}{}", path.substr(0, dot), rank, path.substr(dot))
                 : fmt::format("{}.rank{}", path, rank);
}

/// "2 devices", or "2 devices of 4 threads" where the plan gives them more.
std::string devices_text(const Plan& plan) {
  std::string out = fmt::format("{} device{}", plan.devices.size(), plan.devices.size() == 1 ? "" : "s");
  if (plan.tensor_parallel > 1)
    out += fmt::format(" of {} {}-parallel ranks each", plan.tensor_parallel,
                       plan.sequence_parallel ? "tensor- and sequence" : "tensor");
  const bool same = std::all_of(plan.devices.begin(), plan.devices.end(),
                                [&](const PlanDevice& d) { return d.threads == plan.devices.front().threads; });
  if (same && plan.devices.front().threads > 1) return out + fmt::format(" of {} threads", plan.devices.front().threads);
  if (!same) {
    std::vector<int> threads;
    for (const PlanDevice& d : plan.devices) threads.push_back(d.threads);
    return out + fmt::format(" of {} threads", fmt::join(threads, "/"));
  }
  return out;
}

/// Every parameter's element count, a tied one once.
int64_t parameter_count(const Plan& plan) {
  std::set<std::string> seen;
  int64_t n = 0;
  for (const PlanStage& stage : plan.stages)
    for (const PlanParam& p : stage.params)
      if (seen.insert(p.name).second) n += p.type.numel();
  return n;
}

// How a plan's stages compute, where not in f32 alone.
std::string dtype_note(const Plan& plan) {
  return plan.dtype == DType::f32 ? "" : fmt::format(", {}", dtype_name(plan.dtype));
}

// How a plan runs: "2 stages on 2 devices, 1f1b, 4 micro-batches, bf16".
std::string layout_text(const Plan& plan) {
  return fmt::format("{} on {}, {}, {}{}", tools::count(plan.stages.size(), "stage", "stages"), devices_text(plan),
                     plan.schedule, tools::count(static_cast<size_t>(plan.microbatches), "micro-batch", "micro-batches"),
                     dtype_note(plan));
}

// The same data, weights and outputs whatever the plan, plus the measured
// bubble, the activations each stage held, a trace, and checkpoints. A
// failing step throws before anything is written, so the last checkpoint
// stays the one written before it.
void train(const RunOptions& o, Runtime& runtime, const std::string& what, int rank = 0, int processes = 1) {
  const Plan& plan = runtime.plan();
  // Between processes rank 0 speaks for all: the step figures are everyone's.
  std::ostringstream muted;
  std::ostream& out = rank == 0 ? std::cout : muted;
  CheckpointNotes notes;
  if (!o.resume.empty()) {
    notes = runtime.load_checkpoint(o.resume);
    if (runtime.step() >= o.steps)
      throw Error(fmt::format("{}: the checkpoint is at step {} and --steps is {}: nothing left to train", o.resume,
                              runtime.step(), o.steps));
  } else if (!o.init_from.empty()) {
    runtime.load_weights(o.init_from);
  } else {
    runtime.initialize(o.train.seed);
  }
  const int64_t first = runtime.step() + 1;

  // Between processes each rank reads its replica's share of every batch.
  const int data_rank = processes > 1 ? rank : -1;
  BatchSource source(o.data, runtime, o.train.seed, /*shuffle=*/true, data_rank);
  // A resumed run reads the batches the uninterrupted run would have.
  source.resume(notes, first - 1, o.resume);
  std::unique_ptr<BatchSource> eval;
  int64_t eval_batches = 0;
  if (!o.eval_data.empty()) {
    eval = std::make_unique<BatchSource>(DataFlags{o.eval_data, o.data.data_dtype, "", "--eval-data"}, runtime,
                                         o.train.seed, /*shuffle=*/false, data_rank);
    eval_batches = tools::eval_batches(*eval, o.eval_batches, "--eval-batches");
  }
  bool terminal = rank == 0 && isatty(STDOUT_FILENO);
  const RuntimeOptions options = runtime_options(o);
  out << fmt::format("training @{} from {}: {}, {} parameters, {} lr {}\n", plan.model_name, o.file, what,
                           format_count(parameter_count(plan)), options.train.optimizer,
                           format_real(options.train.lr));
  if (source.has_data_set()) out << "data: " << source.describe() << "\n";
  if (eval) out << "eval data: " << eval->describe() << "\n";
  if (!o.resume.empty()) out << fmt::format("resuming from {} at step {}\n", o.resume, first - 1);
  // Rank 0 tidies and logs for all; no rank writes a checkpoint before the
  // first step, which waits for rank 0.
  if (rank == 0)
    for (const std::string& note : remove_partial_writes({o.save_weights}, {o.checkpoint})) out << note << "\n";
  MetricsLog log(rank == 0 ? o.log : "", !o.resume.empty());
  EtaEstimate eta(o.steps - first + 1);
  const auto started = std::chrono::steady_clock::now();
  std::vector<TraceEvent> trace;
  double trace_offset = 0;
  for (int64_t step = first; step <= o.steps; ++step) {
    runtime.train_step(source.next());
    const PipelineStepResult& r = runtime.last_step();
    if (step == first && !o.save_grads.empty()) runtime.save_gradients(o.save_grads);
    bool checkpoint = !o.checkpoint.empty() &&
                      (step == o.steps || (o.checkpoint_every > 0 && step % o.checkpoint_every == 0));
    if (checkpoint) runtime.save_checkpoint(o.checkpoint, source.notes());
    for (TraceEvent e : r.trace) {
      e.start_s += trace_offset;
      e.end_s += trace_offset;
      trace.push_back(e);
    }
    trace_offset += r.seconds;
    std::string memory;
    for (size_t s = 0; s < r.peak_stash_bytes.size(); ++s)
      memory += fmt::format("{}{}", s ? " " : "", format_bytes(static_cast<double>(r.peak_stash_bytes[s])));
    std::string line = fmt::format(
        "step {:>5}  loss {:.6f}{}  |g| {:.4g}  lr {:.3g}  {:.1f} ms  {}  bubble {:.1f}%  activations [{}]", step,
        r.loss, source.epoch_text(), r.grad_norm, r.lr, r.seconds * 1e3, rate(source, r.seconds), 100 * r.bubble,
        memory);
    if (!std::isfinite(r.grad_norm)) line += "  (gradient not finite: step skipped)";
    if (checkpoint) line += fmt::format("  checkpoint {}", o.checkpoint);
    log.step(step_metrics(step, r, source.samples(), source.tokens()));
    const std::string left =
        eta.after_step(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (!left.empty()) line += "  " + left;
    if (terminal) {
      int width = 20, done = static_cast<int>(width * step / o.steps);
      out << "\r" << line << "  [" << std::string(done, '#') << std::string(width - done, '.') << "]"
                << (step == o.steps ? "\n" : "") << std::flush;
      if (step % std::max<int64_t>(1, o.steps / 10) == 0 && step != o.steps) out << "\n";
    } else {
      out << line << "\n";
    }
    if (eval && ((o.eval_every > 0 && step % o.eval_every == 0) || step == o.steps)) {
      const Evaluation e = evaluate(runtime, *eval, eval_batches);
      out << fmt::format("eval  step {}{}\n", step, e.summary());
      log.eval(step, e.loss,
               e.predicted > 0 ? std::optional<double>(static_cast<double>(e.correct) / e.predicted) : std::nullopt);
    }
  }
  if (!o.trace.empty()) {
    // Each process traces its own ranks.
    write_output(rank == 0 ? o.trace : rank_file(o.trace, rank), trace_json(trace, runtime.devices()));
    out << fmt::format("wrote {} (open it in https://ui.perfetto.dev){}\n", o.trace,
                       processes > 1 ? fmt::format("; the other ranks' beside it, as {}", rank_file(o.trace, 1)) : "");
  }
  if (!o.save_weights.empty()) {
    runtime.save_weights(o.save_weights);
    out << fmt::format("wrote {}\n", o.save_weights);
  }
}

// One rank's run in a job of processes, once it has joined.
void train_rank(const CLI::App& cmd, const RunOptions& o, const Rendezvous& rendezvous, ProcessGroup& group) {
  const CommGroup world = CommGroup::world(rendezvous.world);
  // Every call is collective from here: a rank with other flags would wait
  // for calls that never come.
  std::string flags;  // "steps=3 optimizer=\"sgd\"": the flags given, on one line
  std::istringstream lines(cmd.config_to_str(false, false));
  for (std::string line; std::getline(lines, line);)
    if (!line.empty() && !line.starts_with("file=")) flags += (flags.empty() ? "" : " ") + line;
  uint64_t mine = std::hash<std::string>{}(o.file + '\n' + flags), first = mine;
  group.comm().broadcast(world, 0, &first, sizeof first);
  std::vector<double> differs(static_cast<size_t>(rendezvous.world), 0.0);
  differs[static_cast<size_t>(rendezvous.rank)] = first != mine;
  group.comm().all_reduce(world, differs);
  std::vector<int> others;
  for (int r = 0; r < rendezvous.world; ++r)
    if (differs[static_cast<size_t>(r)] != 0) others.push_back(r);
  if (!others.empty())
    throw Error(fmt::format("rank{} {} run{} {} with other flags than rank 0; give every rank the same{}",
                            others.size() == 1 ? "" : "s", fmt::join(others, ", "), others.size() == 1 ? "s" : "",
                            o.file, first != mine ? fmt::format(" (rank {}: {})", rendezvous.rank, flags) : ""));
  RuntimeOptions options = runtime_options(o);
  options.rank = rendezvous.rank;
  options.comm = &group.comm();
  Runtime runtime = Runtime::load(o.file, options);
  const Plan& plan = runtime.plan();
  std::vector<std::string> names;
  for (const PlanRank& r : plan.ranks) names.push_back(rank_name(plan, r.rank));
  group.name_ranks(std::move(names));
  check_plan_flags(cmd, plan, o.file);
  train(o, runtime,
        fmt::format("{}, {} processes", layout_text(plan), rendezvous.world),
        rendezvous.rank, rendezvous.world);
  // Nobody leaves (taking rank 0's store with it) while another still works.
  group.comm().barrier(world);
}

// One rank of a plan run as processes (pipeforge launch, or a scheduler
// that sets the same variables): the same run, its steps printed by rank 0.
// A collective that another rank's failure ends reports that failure.
void run_rank(const CLI::App& cmd, const RunOptions& o, const Rendezvous& rendezvous) {
  if (!o.file.ends_with(".json"))
    throw Error(fmt::format("PF_RANK is set, but {} is a model: processes run a plan; compile it first: pipeforge "
                            "compile {} --devices cpu:N -o PLAN.json",
                            o.file, o.file));
  // GPU ranks talk over NCCL when every rank of the plan is on a GPU, over
  // Gloo otherwise.
  ProcessGroup group(rendezvous, o.timeout, nccl_device(load_plan(o.file), rendezvous.rank));
  try {
    train_rank(cmd, o, rendezvous, group);
  } catch (const CommAborted&) {
    throw Error(group.comm().error());
  } catch (const CommTimeout& t) {
    throw Error(t.message);
  }
}

void run(const CLI::App& cmd, const RunOptions& o) {
  check_optimizer_flags(cmd, o.train.optimizer);
  if (const std::optional<Rendezvous> rendezvous = rendezvous_from_environment())
    return run_rank(cmd, o, *rendezvous);
  if (o.file.ends_with(".json")) {
    Runtime runtime = Runtime::load(o.file, runtime_options(o));
    const Plan& plan = runtime.plan();
    check_plan_flags(cmd, plan, o.file);
    return train(o, runtime,
                 layout_text(plan));
  }
  Runtime runtime = Runtime::from_plan(
      one_stage_plan(o.file, o.bind, o.batch, o.threads, o.train.optimizer, o.recompute, o.dtype),
      o.file + "'s one-stage plan", runtime_options(o));
  const int threads = runtime.plan().devices.front().threads;
  train(o, runtime,
        fmt::format("one CPU device, {} thread{}{}", threads, threads == 1 ? "" : "s", dtype_note(runtime.plan())));
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  o->train.clip = default_clip();
  CLI::App* cmd = app.add_subcommand(
      "run", "train a model (.pf) on one CPU device, or a plan (.json) across its devices; one line per step");
  cmd->add_option("file", o->file, "model file (.pf) or plan (.json)")->required();
  add_bind_option(*cmd, o->bind);
  cmd->get_option("--bind")->description(
      "override dimensions declared in the model, e.g. B=8,T=64; with a plan, only the values it was compiled with");
  at_least(cmd->add_option("--steps", o->steps, "training steps"), 1);
  at_least(cmd->add_option("--batch", o->batch,
                           "batch size (binds the first input's leading dimension; default: the model's); with a "
                           "plan, only the batch it was compiled for"),
           1)
      ->default_str("");  // 0 in the options: the model's own
  cmd->add_option("--optimizer", o->train.optimizer, "adamw (the default) or sgd")->check(CLI::IsMember({"sgd", "adamw"}));
  // The default depends on the optimizer: the description gives both.
  cmd->add_option("--lr", o->train.lr,
                  fmt::format("learning rate (default {} for adamw, {} for sgd)", format_real(default_lr("adamw")),
                              format_real(default_lr("sgd"))))
      ->each([o](const std::string&) { o->lr_given = true; })
      ->default_str("");
  cmd->add_option("--momentum", o->train.momentum, "sgd momentum (with --optimizer sgd only)");
  cmd->add_option("--weight-decay", o->train.weight_decay, "decoupled weight decay (matrices only)");
  cmd->add_option("--clip", o->train.clip, "clip gradients to this global norm (0: off)");
  cmd->add_option("--warmup", o->train.warmup, "linear warm-up steps, then cosine decay to lr/10");
  cmd->add_flag("--cosine", o->train.cosine, "cosine decay to lr/10 over the run");
  cmd->add_option("--seed", o->train.seed, "seed of the initial weights and of the data");
  cmd->add_option("--text", o->data.text, "train a token model on the bytes of this file");
  CLI::Option* init_from =
      cmd->add_option("--init-from", o->init_from,
                      "load every parameter from this safetensors file or checkpoint folder");
  cmd->add_option("--data", o->data.data,
                  "train on this data set: safetensors, a tensor per input holding N samples along the first axis "
                  "(N = the batch: that batch at every step), or token ids for a model reading tokens and targets "
                  "(a .bin of uint16 as nanoGPT writes, or llm.c's with its header); shuffled per epoch from --seed, "
                  "the last partial batch of an epoch left out");
  cmd->add_option("--data-dtype", o->data.data_dtype,
                  "read --data (and --eval-data) as a flat file of token ids of this type, whatever its name")
      ->check(CLI::IsMember({"uint16", "int32", "uint32"}));
  CLI::Option* eval_data = cmd->add_option(
      "--eval-data", o->eval_data, "evaluate on this data set (same formats as --data, read in order, never shuffled)");
  at_least(cmd->add_option("--eval-every", o->eval_every,
                           "print the loss on --eval-data every N steps (forward only); without it, after the last "
                           "step only"),
           1)
      ->default_str("")  // 0 in the options: after the last step only
      ->needs(eval_data);
  at_least(cmd->add_option("--eval-batches", o->eval_batches,
                           "batches of --eval-data each evaluation reads (default: every whole batch)"),
           1)
      ->default_str("")  // 0 in the options: every whole batch
      ->needs(eval_data);
  cmd->add_option("--save-grads", o->save_grads, "write the first step's gradients here (safetensors)");
  cmd->add_option("--save-weights", o->save_weights, "write the trained weights here (safetensors)");
  at_least(cmd->add_option("--threads", o->threads,
                           "threads of the one device training a model (default 1) or a one-device plan (default: "
                           "the plan's); a plan of several devices runs the threads it was compiled for (--devices "
                           "cpu:NxT)"),
           1)
      ->default_str("");  // 0 in the options: the plan's
  cmd->add_option("--pack-weights", o->pack_weights,
                  "keep each CPU stage's weights packed for its products through a step, packed once per step "
                  "rather than once per micro-batch, for the memory of up to two copies: auto (with two "
                  "micro-batches or more, where the device's memory holds them), on or off")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  cmd->add_option("--recompute", o->recompute,
                  "what the backward computes again instead of keeping: none, layers (all but each layer's "
                  "boundaries) or selective (the same but the products' results); a plan's is compiled in "
                  "(compile --recompute), and the flag must agree with it")
      ->check(CLI::IsMember({"none", "layers", "selective"}))
      ->default_str("none");
  cmd->add_option("--dtype", o->dtype,
                  "how the device computes: f32, or bf16 (its products on operands rounded to bf16, summed in f32); "
                  "a plan's is compiled in (compile --dtype), and the flag must agree with it")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->default_str("f32");
  cmd->add_option("--trace", o->trace, "write a Chrome/Perfetto trace of every stage's actions");
  cmd->add_option("--log", o->log,
                  "write a JSON line per step here (loss, lr, gradient norm, time, throughput, bubble, activations "
                  "per stage), flushed as it goes; pipeforge plot draws it");
  more_than(cmd->add_option("--timeout", o->timeout,
                            "seconds a stage may wait for its peer, or spend in one computation, before the run stops"),
            0);
  CLI::Option* checkpoint =
      cmd->add_option("--checkpoint", o->checkpoint,
                      "write weights, optimizer state and step into this folder after the last step (a "
                      "safetensors shard per stage and an index)");
  at_least(cmd->add_option("--checkpoint-every", o->checkpoint_every, "also write the checkpoint every N steps"), 1)
      ->needs(checkpoint);
  cmd->add_option("--resume", o->resume,
                  "go on from this checkpoint up to --steps (same options as the run that wrote it)")
      ->excludes(init_from);
  cmd->callback([cmd, o] { run(*cmd, *o); });
}

}  // namespace pf::tools
