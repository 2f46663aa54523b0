// `pipeforge opt`: run passes and print the IR (the tool lit tests drive).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <iostream>
#include <memory>

#include "ir/printer.h"
#include "passes/pipeline.h"
#include "tools/command.h"

namespace pf::tools {

namespace {
struct OptOptions {
  std::string file;
  std::string passes;
  std::string pipeline;
  std::string bind;
  std::string output;
  bool no_verify = false;
  bool print_changed = false;
  bool split = false;
  std::vector<std::string> wrt;
  std::string recompute = "none";
  int tensor_parallel = 1;
  int tp_rank = 0;
  bool sequence_parallel = false;
  int expert_parallel = 1;
  int ep_rank = 0;
  int64_t decode_context = 0;
};
}  // namespace

void add_opt_command(CLI::App& app) {
  auto opts = std::make_shared<OptOptions>();
  std::string pass_help = "comma-separated passes to run in order; known:";
  for (const PassInfo& p : known_passes()) pass_help += " " + std::string(p.name);
  CLI::App* cmd = app.add_subcommand("opt", "run passes over a model and print the resulting IR");
  cmd->add_option("file", opts->file, "model file (.pf), or - for standard input")->required();
  CLI::Option* passes_option = cmd->add_option("--passes", opts->passes, pass_help);
  std::string pipeline_help = "one of the compiler's pass pipelines, run instead of --passes:";
  std::vector<std::string> pipeline_names;
  for (const PassPipelineInfo& p : known_pipelines()) {
    pipeline_help += fmt::format(" {} ({})", p.name, fmt::join(pipeline_passes(p.pipeline), ","));
    pipeline_names.emplace_back(p.name);
  }
  cmd->add_option("--pipeline", opts->pipeline, pipeline_help)->check(CLI::IsMember(pipeline_names))->excludes(passes_option);
  add_bind_option(*cmd, opts->bind);
  cmd->add_option("-o,--output", opts->output, "write the IR here instead of standard output");
  cmd->add_option("--wrt", opts->wrt,
                  "graph arguments whose gradients autodiff returns too, before the parameters' (as a pipeline "
                  "stage needs for what it received); split-backward puts them in @<graph>.backward_input")
      ->delimiter(',')
      ->default_str("");
  cmd->add_option("--recompute", opts->recompute,
                  "what autodiff computes again in the backward instead of stashing: none, layers (all but "
                  "what crosses a layer boundary), or selective (the same but the products' results)")
      ->check(CLI::IsMember({"none", "layers", "selective"}))
      ->default_str("none");
  cmd->add_option("--tensor-parallel", opts->tensor_parallel,
                  "the tensor-parallel pass writes the program of one rank of a group of this many")
      ->check(CLI::Range(1, 4096))
      ->default_str("1");
  cmd->add_option("--tp-rank", opts->tp_rank, "which rank of the tensor-parallel group (0 to --tensor-parallel - 1)")
      ->check(CLI::NonNegativeNumber)
      ->default_str("0");
  cmd->add_flag("--sequence-parallel", opts->sequence_parallel,
               "with --tensor-parallel: the ops between row- and column-parallel products run on the rank's part "
               "of the tokens");
  cmd->add_option("--expert-parallel", opts->expert_parallel,
                  "the expert-parallel pass writes the program of one replica of this many that share the experts")
      ->check(CLI::Range(1, 4096))
      ->default_str("1");
  cmd->add_option("--ep-rank", opts->ep_rank, "which replica (0 to --expert-parallel - 1)")
      ->check(CLI::NonNegativeNumber)
      ->default_str("0");
  cmd->add_option("--decode-context", opts->decode_context,
                  "the positions decode-step sizes its caches of keys and values for (the model's context)")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--no-verify", opts->no_verify, "do not verify the IR between passes");
  cmd->add_flag("--print-changed", opts->print_changed,
                "after each pass, write 'pass NAME: changed' or 'pass NAME: no change' to standard error (standard "
                "output keeps only the IR)");
  add_split_option(*cmd, opts->split);
  cmd->callback([opts] {
    std::vector<std::string> passes;
    if (!opts->passes.empty()) passes = split_pass_list(opts->passes);
    for (const PassPipelineInfo& p : known_pipelines())
      if (p.name == opts->pipeline) passes = pipeline_passes(p.pipeline);
    PassRunOptions run{!opts->no_verify};
    if (opts->print_changed)
      run.after_each = [](std::string_view pass, bool changed) {
        std::cerr << fmt::format("pass {}: {}\n", pass, changed ? "changed" : "no change");
      };
    std::string text = for_each_input(opts->file, opts->split, [&](std::shared_ptr<const SourceFile> source) {
      LoadedModel model = load_model(std::move(source), opts->bind, false);
      PassContext ctx{model.binding, opts->wrt};
      ctx.recompute = *parse_recompute(opts->recompute);
      ctx.tensor_parallel = opts->tensor_parallel;
      ctx.tensor_parallel_rank = opts->tp_rank;
      ctx.sequence_parallel = opts->sequence_parallel;
      ctx.expert_parallel = opts->expert_parallel;
      ctx.expert_parallel_rank = opts->ep_rank;
      ctx.decode_context = opts->decode_context;
      run_passes(model.module, passes, ctx, run);
      return print_module(model.module);
    });
    write_output(opts->output, text);
  });
}

}  // namespace pf::tools
