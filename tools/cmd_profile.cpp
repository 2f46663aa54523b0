// `pipeforge profile`: time every op of a model on the CPU, for compile --profile.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "backends/cpu/blas.h"
#include "partitioner/compile.h"
#include "passes/pipeline.h"
#include "profiler/profiler.h"
#include "tools/command.h"
#include "tools/option_checks.h"

namespace pf::tools {

namespace {
struct ProfileCommandOptions {
  std::string file, bind, device = "cpu", output, dtype = "f32";
  int64_t batch = 0;
  int microbatches = 8;
  int repeats = 5;
  int concurrent = 1;
  bool cold_caches = false;
  bool verbose = false;
};
}  // namespace

void add_profile_command(CLI::App& app) {
  auto o = std::make_shared<ProfileCommandOptions>();
  CLI::App* cmd = app.add_subcommand(
      "profile", "time each op of a model, forward and backward, on the real backend; write a device profile");
  cmd->add_option("file", o->file, "model file (.pf)")->required();
  add_bind_option(*cmd, o->bind);
  at_least(cmd->add_option("--batch", o->batch,
                           "batch size (binds the first input's leading dimension; default: the model's)"),
           1)
      ->default_str("");  // 0 in the options: the model's own
  at_least(cmd->add_option("--microbatches,-m", o->microbatches,
                           "time the ops at the micro-batch size compile will use"),
           1);
  cmd->add_option("--device", o->device, "the backend to measure (cpu)")->check(CLI::IsMember({"cpu"}));
  at_least(cmd->add_option("--repeats", o->repeats, "timed runs per op (the median is kept)"), 1);
  at_least(cmd->add_option("--concurrent", o->concurrent,
                           "cores computing at once while each op is timed (one copy of the op each): the number of "
                           "CPU stages that will share this machine, so that the times include what they cost each "
                           "other"),
           1);
  cmd->add_option("--dtype", o->dtype,
                  "time the products as a plan of this dtype runs them: f32, or bf16 (operands rounded to bf16); "
                  "the profile's precision says which")
      ->check(CLI::IsMember({"f32", "bf16"}));
  cmd->add_flag("--cold-caches", o->cold_caches,
                "drop each op's inputs, weights and packed weights from the caches before every timed run, as a "
                "step whose weights and stashed activations outgrow the caches finds them");
  cmd->add_flag("-v,--verbose", o->verbose, "print every op's times");
  cmd->add_option("-o,--output", o->output, "write the profile here (JSON)")->required();
  cmd->callback([o] {
    cpu::set_cpu_threads(1);  // a CPU device is one core
    LoadedModel model = load_model(o->file, o->bind, true);
    if (o->batch > 0) bind_batch(model, o->batch);
    DimBinding micro = microbatch_binding(model.module, model.binding, o->microbatches);
    PassContext ctx{micro};
    run_pipeline(model.module, PassPipeline::model, ctx);
    int count = 0;
    double total = 0;
    const ProfileOptions options{o->repeats, o->concurrent, o->dtype == "bf16", o->microbatches, o->cold_caches};
    DeviceProfile profile = profile_model(model.module, micro, options,
                                          [&](const std::string& key, const OpTiming& t) {
                                            ++count;
                                            total += t.forward_s + t.backward_s;
                                            if (o->verbose)
                                              std::cout << fmt::format("{:>10.3f} ms {:>10.3f} ms  {}\n",
                                                                       t.forward_s * 1e3, t.backward_s * 1e3, key);
                                          });
    save_profile(profile, o->output);
    std::string how;
    if (o->concurrent > 1) how += fmt::format(", {} cores busy at once", o->concurrent);
    if (o->cold_caches) how += ", caches cold";
    std::cout << fmt::format("measured {} distinct ops of @{} ({:.1f} ms forward+backward for one of each{}); wrote {}\n",
                             count, model.module.graph().name, total * 1e3, how, o->output);
    std::cout << fmt::format("an optimizer step (gradient norm included): adamw {:.2f} ns, sgd {:.2f} ns per parameter\n",
                             profile.update_s_per_param.at("adamw") * 1e9, profile.update_s_per_param.at("sgd") * 1e9);
    std::cout << fmt::format("a core: {:.1f} GFLOP/s in a 512^3 {} product, {:.1f} GB/s of memory\n",
                             profile.flops / 1e9, o->dtype, profile.bandwidth / 1e9);
  });
}

}  // namespace pf::tools
