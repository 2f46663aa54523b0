// `pipeforge eval`: the loss of saved weights on a data set, forward only, through a plan or a model on one CPU device.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "plan/plan.h"
#include "runtime/runtime.h"
#include "tools/batch_source.h"
#include "tools/command.h"
#include "tools/evaluation.h"
#include "tools/option_checks.h"
#include "tools/run_flags.h"

namespace pf::tools {

namespace {

struct EvalOptions {
  std::string file;
  std::string bind;
  int64_t batch = 0;
  std::string weights;
  DataFlags data;
  int64_t batches = 0;  // 0: every whole batch
  int threads = 0;  // 0: the plan's (one for a model)
  double timeout = 60;
};

void evaluate_weights(const CLI::App& cmd, const EvalOptions& o) {
  RuntimeOptions options;
  options.threads = o.threads;
  options.timeout_s = o.timeout;
  const bool is_plan = o.file.ends_with(".json");
  Runtime runtime = is_plan ? Runtime::load(o.file, options)
                            : Runtime::from_plan(one_stage_plan(o.file, o.bind, o.batch, o.threads, "adamw"), o.file + "'s one-stage plan", options);
  const Plan& plan = runtime.plan();
  if (is_plan) check_plan_flags(cmd, plan, o.file);
  BatchSource source(o.data, runtime, /*seed=*/0, /*shuffle=*/false, /*rank=*/-1);
  const int64_t batches = eval_batches(source, o.batches, "--batches");
  runtime.load_weights(o.weights);
  std::cout << fmt::format("evaluating @{} from {} with {}: {} stage{} on {} device{}\n", plan.model_name, o.file,
                           o.weights, plan.stages.size(), plan.stages.size() == 1 ? "" : "s", plan.devices.size(),
                           plan.devices.size() == 1 ? "" : "s");
  std::cout << "data: " << source.describe() << "\n";
  const Evaluation e = evaluate(runtime, source, batches);
  std::cout << "eval" << e.summary() << "\n";
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto o = std::make_shared<EvalOptions>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "the loss of saved weights on a data set: a model (.pf) on one CPU device, or a plan (.json) across its "
              "devices, forward only");
  cmd->add_option("file", o->file, "model file (.pf) or plan (.json)")->required();
  add_bind_option(*cmd, o->bind);
  at_least(cmd->add_option("--batch", o->batch,
                           "batch size (binds the first input's leading dimension); with a plan, only the batch it "
                           "was compiled for"),
           1);
  cmd->add_option("--weights", o->weights, "the weights: a safetensors file or a checkpoint folder")->required();
  cmd->add_option("--data", o->data.data,
                  "the data set, as `pipeforge run --data` reads it (safetensors by input name, or token ids), in its "
                  "own order")
      ->required();
  cmd->add_option("--data-dtype", o->data.data_dtype, "read --data as a flat file of token ids of this type")
      ->check(CLI::IsMember({"uint16", "int32", "uint32"}));
  at_least(cmd->add_option("--batches", o->batches, "evaluate the first K batches (default: every whole batch)"), 1)
      ->default_str("");  // 0 in the options: every whole batch
  at_least(cmd->add_option("--threads", o->threads,
                           "threads of the one device evaluating a model (default 1) or a one-device plan (default: "
                           "the plan's)"),
           1)
      ->default_str("");  // 0 in the options: the plan's
  more_than(cmd->add_option("--timeout", o->timeout, "seconds a stage may wait for its peer before the evaluation stops"),
            0);
  cmd->callback([cmd, o] { evaluate_weights(*cmd, *o); });
}

}  // namespace pf::tools
