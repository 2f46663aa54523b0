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
#include "partitioner/compile.h"
#include "plan/plan.h"
#include "runtime/dataset.h"
#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include "tools/command.h"
#include "tools/metrics_log.h"
#include "tools/option_checks.h"
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
  std::string text, init_from, data, save_grads, save_weights;
  int threads = 1;
  bool lr_given = false;
  std::string trace;
  double timeout = 60;
  std::string checkpoint, resume;
  int64_t checkpoint_every = 0;  // 0: only after the last step
  std::string log;               // --log: a JSON line per step
};

/// Where a step's inputs come from: a fixed batch from a file, or a dataset.
class BatchSource {
 public:
  /// `inputs` are the model's inputs for a whole batch; `classes` the
  /// width of a classifier's logits (0 if none); `model` names it in errors.
  BatchSource(const RunOptions& o, const std::vector<std::pair<std::string, TensorType>>& inputs, int64_t classes,
              const std::string& model, uint64_t seed) {
    for (const auto& [name, type] : inputs) {
      types_.push_back(type);
      names_.push_back(name);
    }
    for (const TensorType& t : types_) buffers_.emplace_back(static_cast<size_t>(t.bytes()));
    if (!o.data.empty()) {
      SafeTensors file = SafeTensors::read(o.data);
      std::vector<std::pair<std::string, TensorType>> expected;
      for (size_t i = 0; i < types_.size(); ++i) expected.emplace_back(names_[i], types_[i]);
      check_tensors(file, expected, o.data);
      for (size_t i = 0; i < types_.size(); ++i) {
        const TensorData& t = file.at(names_[i]);
        std::copy(t.bytes.begin(), t.bytes.end(), buffers_[i].begin());
      }
      return;
    }
    auto is = [&](size_t i, DType dt, size_t rank) {
      return i < types_.size() && types_[i].dtype == dt && types_[i].rank() == static_cast<int64_t>(rank);
    };
    if (types_.size() == 2 && is(0, DType::i32, 2) && is(1, DType::i32, 2)) {
      if (o.text.empty())
        throw Error(fmt::format("@{} reads tokens: give it a text file with --text FILE (or a batch with --data)",
                                model));
      const Shape& s = types_[0].shape;
      dataset_ = std::make_unique<ByteTextDataset>(o.text, s[0], s[1], seed);
      tokens_per_batch_ = s[0] * s[1];
    } else if (types_.size() == 2 && is(0, DType::f32, 2) && is(1, DType::i32, 1)) {
      dataset_ = std::make_unique<SeparableDataset>(types_[0].shape[1], classes, types_[0].shape[0], seed);
    } else if (types_.size() == 2 && is(0, DType::f32, 4) && is(1, DType::i32, 1) &&
               types_[0].shape == Shape{types_[0].shape[0], 3, 32, 32}) {
      dataset_ = std::make_unique<GratingImageDataset>(types_[0].shape[0], seed);
    } else {
      throw Error(fmt::format("no built-in data fits @{}'s inputs; give a batch with --data D.safetensors", model));
    }
    if (!o.text.empty() && tokens_per_batch_ == 0)
      throw Error(fmt::format("--text: @{} does not read tokens (two i32[B,T] inputs)", model));
  }

  const std::vector<std::string>& names() const { return names_; }

  std::vector<const void*> next() {
    if (dataset_) {
      std::vector<void*> out;
      for (auto& b : buffers_) out.push_back(b.data());
      dataset_->next_batch(out);
    }
    std::vector<const void*> in;
    for (auto& b : buffers_) in.push_back(b.data());
    return in;
  }

  /// Makes batch `index` (0-based) the next one.
  void seek(int64_t index) {
    if (dataset_) dataset_->seek(index);
  }

  int64_t samples() const { return types_.empty() || types_[0].shape.empty() ? 1 : types_[0].shape[0]; }
  int64_t tokens() const { return tokens_per_batch_; }

 private:
  std::vector<TensorType> types_;
  std::vector<std::string> names_;
  std::vector<std::vector<std::byte>> buffers_;
  std::unique_ptr<Dataset> dataset_;
  int64_t tokens_per_batch_ = 0;
};

int64_t classes_of(const Function& g) {
  for (const Op& op : g.ops)
    if (op.kind == OpKind::cross_entropy) return g.type_of(op.operands[0]).shape.back();
  return 0;
}

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

/// Every parameter's element count, a tied one once.
int64_t parameter_count(const Plan& plan) {
  std::set<std::string> seen;
  int64_t n = 0;
  for (const PlanStage& stage : plan.stages)
    for (const PlanParam& p : stage.params)
      if (seen.insert(p.name).second) n += p.type.numel();
  return n;
}

// A model trains on one CPU device as a plan of one stage, compiled here in
// memory: the same runtime, step, checkpoints and trace as any plan.
Plan one_stage_plan(const RunOptions& o) {
  LoadedModel model = load_model(o.file, o.bind, true);
  if (o.batch > 0) bind_batch(model, o.batch);
  CompileOptions options;
  options.devices = "cpu:1";
  options.microbatches = 1;
  options.schedule = "gpipe";
  options.optimizer = o.train.optimizer;
  return compile_plan(std::move(model.module), model.binding, o.file, options).plan;
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
  if (!o.resume.empty()) {
    runtime.load_checkpoint(o.resume);
    if (runtime.step() >= o.steps)
      throw Error(fmt::format("{}: the checkpoint is at step {} and --steps is {}: nothing left to train", o.resume,
                              runtime.step(), o.steps));
  } else if (!o.init_from.empty()) {
    runtime.load_weights(o.init_from);
  } else {
    runtime.initialize(o.train.seed);
  }
  const int64_t first = runtime.step() + 1;

  // A classifier's loss, and so its width, is in the last stage: only that
  // program is read again (the runtime keeps its parsed programs to itself).
  const int64_t classes = classes_of(stage_program(plan, plan.stages.back()).graph());
  BatchSource source(o, runtime.batch_inputs(), classes, plan.model_name, o.train.seed);
  // A resumed run reads the batches the uninterrupted run would have.
  source.seek(first - 1);
  bool terminal = rank == 0 && isatty(STDOUT_FILENO);
  const RuntimeOptions options = runtime_options(o);
  out << fmt::format("training @{} from {}: {}, {} parameters, {} lr {}\n", plan.model_name, o.file, what,
                           format_count(parameter_count(plan)), options.train.optimizer,
                           format_real(options.train.lr));
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
    std::vector<const void*> batch = source.next();
    Runtime::Batch named;
    for (size_t i = 0; i < batch.size(); ++i) named.inputs.emplace_back(source.names()[i], batch[i]);
    runtime.train_step(named);
    const PipelineStepResult& r = runtime.last_step();
    if (step == first && !o.save_grads.empty()) runtime.save_gradients(o.save_grads);
    bool checkpoint = !o.checkpoint.empty() &&
                      (step == o.steps || (o.checkpoint_every > 0 && step % o.checkpoint_every == 0));
    if (checkpoint) runtime.save_checkpoint(o.checkpoint);
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
        "step {:>5}  loss {:.6f}  |g| {:.4g}  lr {:.3g}  {:.1f} ms  {}  bubble {:.1f}%  activations [{}]", step,
        r.loss, r.grad_norm, r.lr, r.seconds * 1e3, rate(source, r.seconds), 100 * r.bubble, memory);
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
        fmt::format("{} stages on {} devices, {}, {} micro-batches, {} processes", plan.stages.size(),
                    plan.devices.size(), plan.schedule, plan.microbatches, rendezvous.world),
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
  ProcessGroup group(rendezvous, o.timeout);
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
                 fmt::format("{} stages on {} devices, {}, {} micro-batches", plan.stages.size(), plan.devices.size(),
                             plan.schedule, plan.microbatches));
  }
  Runtime runtime = Runtime::from_plan(one_stage_plan(o), o.file + "'s one-stage plan", runtime_options(o));
  train(o, runtime, fmt::format("one CPU device, {} thread{}", o.threads, o.threads == 1 ? "" : "s"));
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
  cmd->add_option("--text", o->text, "train a token model on the bytes of this file");
  CLI::Option* init_from =
      cmd->add_option("--init-from", o->init_from,
                      "load every parameter from this safetensors file or checkpoint folder");
  cmd->add_option("--data", o->data, "use this batch (safetensors, by input name) at every step");
  cmd->add_option("--save-grads", o->save_grads, "write the first step's gradients here (safetensors)");
  cmd->add_option("--save-weights", o->save_weights, "write the trained weights here (safetensors)");
  at_least(cmd->add_option("--threads", o->threads,
                           "threads of the one device training a model or a one-device plan (refused with more "
                           "devices: each runs on one core)"),
           1);
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
