// `pipeforge compile`: cut a model into pipeline stages by cost and write the plan.
#include <fmt/format.h>

#include <algorithm>
#include <iostream>
#include <memory>

#include "ir/units.h"
#include "partitioner/compile.h"
#include "runtime/schedule.h"
#include "tools/command.h"
#include "tools/option_checks.h"
#include "tools/plan_render.h"

namespace pf::tools {

namespace {

struct CompileCommandOptions {
  std::string file, bind, output, memory_limit, split, microbatches = "8", data_parallel = "1", fusion = "all";
  std::string schedule_file;
  int64_t batch = 0;
  CompileOptions compile;
};

std::string period_line(const char* name, const PartitionResult& r, double chosen) {
  if (r.stages.empty()) return fmt::format("  {:<14} -\n", name);
  std::string fits = r.fits_memory ? "" : "  (does not fit in memory)";
  return fmt::format("  {:<14} {:>9.3f} ms  x{:.2f}{}\n", name, r.period_s * 1e3,
                     chosen > 0 ? r.period_s / chosen : 0.0, fits);
}

/// A positive count, or "auto" as 0.
int count_or_auto(const std::string& text, const char* option) {
  if (text == "auto") return 0;
  size_t used = 0;
  int value = 0;
  try {
    value = std::stoi(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 1)
    throw Error(fmt::format("{} must be a positive number or auto, not '{}'", option, text));
  return value;
}

}  // namespace

void add_compile_command(CLI::App& app) {
  auto o = std::make_shared<CompileCommandOptions>();
  CLI::App* cmd = app.add_subcommand("compile", "cut a model into pipeline stages by cost and write a plan");
  cmd->add_option("file", o->file, "model file (.pf)")->required();
  add_bind_option(*cmd, o->bind);
  at_least(cmd->add_option("--batch", o->batch,
                           "batch size (binds the first input's leading dimension; default: the model's)"),
           1)
      ->default_str("");  // 0 in the options: the model's own
  cmd->add_option("--devices", o->compile.devices, "devices, e.g. cpu:4, h100:8, a100:2,h100:2");
  cmd->add_option("--microbatches,-m", o->microbatches,
                  "micro-batches per step, or auto: chosen by predicted step time among micro-batches of 1, 2, 4 or 8 "
                  "samples");
  cmd->add_option("--data-parallel,-d", o->data_parallel,
                  "replicas of the pipeline, each on devices of its own and 1/D of the batch (world size: devices x "
                  "D), or auto: --devices are all the GPUs, and P x D is chosen by predicted step time");
  at_least(cmd->add_option("--tensor-parallel,-t", o->compile.tensor_parallel,
                           "ranks per pipeline device (GPUs of one node), each layer split over them Megatron-style; "
                           "the plan holds each rank's program, run on cpu devices (threads, or processes with "
                           "launch) and priced on GPUs"),
           1);
  cmd->add_flag("--sequence-parallel", o->compile.sequence_parallel,
                "with --tensor-parallel: the norms, biases and residual adds between a layer's split products run on "
                "each rank's part of the tokens (Megatron-LM's sequence parallelism: less activation memory)");
  at_least(cmd->add_option("--expert-parallel,-e", o->compile.expert_parallel,
                           "data-parallel replicas per group sharing a mixture of experts out (Megatron-LM's and "
                           "DeepSpeed-MoE's expert parallelism): each holds a block of every layer's experts, which "
                           "take its group's tokens; divides --data-parallel"),
           1);
  CLI::Option* schedule =
      cmd->add_option("--schedule", o->compile.schedule,
                      schedule_kind_choices() + ", or auto: each of 1f1b, zb1, zbv and dualpipev (and interleaved "
                                                "and zbi with --virtual) compiled, the one of the shortest predicted "
                                                "step kept")
          ->check(CLI::IsMember(compile_schedule_names()));
  CLI::Option* virtual_stages =
      at_least(cmd->add_option("--virtual", o->compile.virtual_stages,
                               "model chunks per device (interleaved, loopedbfs; zbi: 2 or more; zbv and dualpipev "
                               "have 2)"),
               1);
  CLI::Option* schedule_file =
      cmd->add_option("--schedule-file", o->schedule_file,
                      "run the action lists of this schedule file (each device's F, B and W in order, as pipeforge "
                      "schedule --format list writes them, or PyTorch's schedule CSV, a name ending in .csv); it "
                      "fixes the pipeline devices, micro-batches and chunks")
          ->excludes(schedule);
  at_least(cmd->add_option("--extra-warmup", o->compile.extra_warmup,
                           "with --schedule 1f1b or zb1: this many more forwards before the first backward on every "
                           "pipeline device but the last (as many more activations held; slack against actions "
                           "that run late), planned and run as written lists (schedule custom)"),
           0)
      ->excludes(schedule_file);
  cmd->add_option("--precision", o->compile.precision,
                  "matmul precision of the roofline: fp32, tf32 or bf16; default: the --dtype's (bf16 or fp32)");
  cmd->add_option("--dtype", o->compile.dtype,
                  "how the stages compute: f32 (default) or bf16; CUDA stages then run their kernels in bf16 with f32 "
                  "master weights (no loss scaling); CPU stages keep their values in f32 and run every product on "
                  "operands rounded to bf16, summed in f32 (AVX-512 BF16 dot products where the CPU has them)");
  cmd->add_option("--profile", o->compile.profile, "measured device profile (from pipeforge profile)");
  cmd->add_option("--cluster", o->compile.cluster, "cluster description: links inside and between nodes");
  cmd->add_option("--memory-limit", o->memory_limit, "memory per device, e.g. 2GiB");
  cmd->add_option("--optimizer", o->compile.optimizer, "sgd or adamw (sizes the optimizer state)")
      ->check(CLI::IsMember({"sgd", "adamw"}));
  cmd->add_flag("--shard-optimizer", o->compile.shard_optimizer,
                "share each stage's optimizer state out between its data-parallel replicas (ZeRO stage 1): each "
                "keeps and updates 1/D of it, then they exchange the updated weights");
  cmd->add_option("--fusion", o->fusion,
                  "which chains of ops become one op: all, none, attention (matmul, scale, mask, softmax, matmul) "
                  "or swiglu (silu and mul); the others run as written (for comparing, or debugging a fusion)")
      ->check(CLI::IsMember(fusion_choices()))
      ->capture_default_str();
  cmd->add_option("--split", o->split, "manual split: the layer indices where stages 2.. begin, e.g. 4,8,12");
  cmd->add_option("--cuts", o->compile.cuts,
                  "where stages may begin: layers (layer boundaries), any (inside layers too), products (inside a "
                  "matmul too: two stages hold rows of its weight), or auto (inside layers when that shortens the "
                  "period by 1% or more, inside a matmul when by 3% more)")
      ->check(CLI::IsMember({"auto", "layers", "any", "products"}))
      ->capture_default_str();
  cmd->add_option("--recompute", o->compile.recompute,
                  "what each stage's backward computes again instead of stashing: none, layers (everything but "
                  "what crosses a layer boundary; about one more forward of compute for a fraction of the memory), "
                  "selective (the same but the products' results: a part of the saving for a few percent of "
                  "compute), or auto (selective, then layers, only when the plan does not fit in memory without)")
      ->check(CLI::IsMember({"none", "selective", "layers", "auto"}))
      ->capture_default_str();
  cmd->add_option("-o,--output", o->output, "write the plan here")->required();
  cmd->callback([cmd, o, virtual_stages] {
    o->compile.microbatches = count_or_auto(o->microbatches, "--microbatches");
    if (!o->schedule_file.empty()) {
      const Schedule written = read_schedule_file(o->schedule_file);
      auto agrees = [&](const char* flag, bool given, int value, const std::string& text, int written_value,
                        const char* what) {
        if (given && value != written_value)
          throw Error(fmt::format("{} {}: {} runs {} {}; drop the flag", flag, text, o->schedule_file,
                                  written_value, what));
      };
      agrees("--microbatches", cmd->count("--microbatches") > 0, o->compile.microbatches, o->microbatches,
             written.microbatches, "micro-batches");
      agrees("--virtual", virtual_stages->count() > 0, o->compile.virtual_stages,
             std::to_string(o->compile.virtual_stages), written.virtual_stages, "chunks per device");
      o->compile.schedule = "custom";
      o->compile.schedule_actions = write_schedule_text(written);
    }
    o->compile.data_parallel = count_or_auto(o->data_parallel, "--data-parallel");
    if (!o->memory_limit.empty()) o->compile.memory_limit = parse_bytes(o->memory_limit);
    o->compile.fusions = fusions_named(o->fusion);
    if (!o->split.empty()) {
      o->compile.split_layers = parse_int_list(o->split, "--split");
      std::sort(o->compile.split_layers.begin(), o->compile.split_layers.end());
    }
    LoadedModel model = load_model(o->file, o->bind, true);
    if (o->batch > 0) bind_batch(model, o->batch);
    CompileResult r = compile_plan(std::move(model.module), model.binding, o->file, o->compile);
    save_plan(r.plan, o->output);
    std::string out;
    if (!r.layouts.candidates.empty())
      out += fmt::format("layouts of {} GPUs (P pipeline devices x D replicas x T GPUs each, m micro-batches of mb "
                         "samples; * chosen):\n{}\n",
                         r.layouts.candidates[0].layout.gpus(), render_layout_table(r.layouts));
    if (!r.schedules.empty()) {
      out += "schedules (--schedule auto; * chosen: the shortest predicted step):\n";
      for (size_t k = 0; k < r.schedules.size(); ++k) {
        const CompileResult::ScheduleCandidate& c = r.schedules[k];
        const char* mark = k == r.chosen_schedule ? "*" : " ";
        out += c.error.empty() ? fmt::format("{} {:<12} step {:>10}  bubble {:>5.1f}%  busiest device holds {}\n", mark,
                                             c.schedule, format_seconds(c.step_s), 100 * c.bubble,
                                             format_bytes(static_cast<double>(c.device_memory_bytes)))
                               : fmt::format("{} {:<12} {}\n", mark, c.schedule, c.error);
      }
      out += "\n";
    }
    if (!r.recompute_reason.empty())
      out += fmt::format("recomputing in the backward (--recompute {}): without it, {}\n", r.plan.recompute,
                         r.recompute_reason);
    out += render_plan_text(r.plan);
    if (r.plan.recompute != "none" && !plan_recomputes(r.plan))
      out += fmt::format("--recompute {}: nothing to recompute (no op of a named layer has a value only its own "
                         "layer reads)\n",
                         r.plan.recompute);
    out += fmt::format("\npredicted period per micro-batch (and relative to the chosen split):\n");
    out += period_line("cost DP", r.chosen, r.chosen.period_s);
    out += period_line("equal layers", r.equal_layers, r.chosen.period_s);
    out += period_line("equal params", r.equal_params, r.chosen.period_s);
    if (r.cuts != "layers" && r.layer_cuts_period_s > 0)
      out += fmt::format("  {:<14} {:>9.3f} ms  x{:.2f}\n", "layer cuts only", r.layer_cuts_period_s * 1e3,
                         r.layer_cuts_period_s / r.chosen.period_s);
    double best_baseline = 0;
    for (const PartitionResult* b : {&r.equal_layers, &r.equal_params})
      if (b->fits_memory && !b->stages.empty() && (best_baseline == 0 || b->period_s < best_baseline))
        best_baseline = b->period_s;
    if (best_baseline > 0)
      out += fmt::format("speed-up of the cost DP over the best baseline: {:.2f}x\n", best_baseline / r.chosen.period_s);
    out += fmt::format("wrote {} ({} stages, {} micro-batches, {})\n", o->output, r.plan.stages.size(),
                       r.plan.microbatches, r.plan.schedule);
    std::cout << out;
  });
}

}  // namespace pf::tools
