// `pipeforge run`: flags that mean something for a model or for a plan, not for both.
#include "tools/run_flags.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/batch.h"
#include "partitioner/compile.h"
#include "tools/command.h"

namespace pf::tools {

namespace {

/// The batch a plan was compiled for: a split input's leading dimension over
/// all micro-batches (0 when every input is whole).
int64_t plan_batch(const Plan& plan) {
  for (const PlanStage& stage : plan.stages)
    for (const PlanTensor& t : stage.inputs)
      if (!t.whole && !t.type.shape.empty()) return t.type.shape[0] * plan.microbatches;
  return 0;
}

/// The plan's devices as `--devices` takes them: runs of one kind, counted
/// ("cpu:4", "a100:2,h100:2").
std::string devices_flag(const Plan& plan) {
  std::vector<std::pair<std::string, int>> runs;
  for (const PlanDevice& d : plan.devices) {
    const std::string kind = d.name.substr(0, d.name.find(':'));
    if (runs.empty() || runs.back().first != kind) runs.emplace_back(kind, 0);
    runs.back().second += 1;
  }
  std::string out;
  for (const auto& [kind, count] : runs) out += fmt::format("{}{}:{}", out.empty() ? "" : ",", kind, count);
  return out;
}

std::string binding_text(const DimBinding& b) {
  std::string out;
  for (const auto& [dim, value] : b) out += fmt::format("{}{}={}", out.empty() ? "" : ",", dim, value);
  return out;
}

/// What the plan's model file says, when it can still be read: the plan
/// records the binding of every dimension (the batch's per micro-batch) but
/// neither which one is the batch nor which values were the model's own.
struct ModelFacts {
  std::string batch_dim;  // empty when unknown
  DimBinding declared;    // empty when the model cannot be read
};

ModelFacts model_facts(const Plan& plan, int64_t batch) {
  // Read from standard input, the model is not there to read again.
  if (plan.model_source != "-") {
    try {
      const LoadedModel model = load_model(plan.model_source, "", false);
      return {batch_dimension(model.module.graph()), model.module.binding({})};
    } catch (const Error&) {
      // moved, changed or gone: the command below then spells out every dimension
    }
  }
  // The batch is a dimension bound to the micro-batch size; when only one is,
  // it is that one.
  ModelFacts facts;
  for (const auto& [dim, value] : plan.binding)
    if (batch > 0 && value == batch / plan.microbatches) {
      if (!facts.batch_dim.empty()) return {};
      facts.batch_dim = dim;
    }
  return facts;
}

/// The command that compiles the plan's model again as it was compiled, but
/// for batch `batch` and with the dimensions in `changed`: the dimensions
/// that differ from the model's own (all of them when the model cannot be
/// read), its devices, micro-batches,
/// schedule, virtual stages, and `recompute` and `dtype`.
std::string recompile_command(const Plan& plan, const ModelFacts& model, const std::string& plan_path, int64_t batch,
                              const DimBinding& changed, const std::string& recompute, DType dtype) {
  DimBinding bind;
  for (const auto& [dim, value] : plan.binding) {
    if (dim == model.batch_dim) continue;
    auto it = changed.find(dim);
    const int64_t wanted = it != changed.end() ? it->second : value;
    auto declared = model.declared.find(dim);
    if (declared == model.declared.end() || declared->second != wanted) bind[dim] = wanted;
  }
  std::string command = fmt::format("pipeforge compile {}", plan.model_source);
  if (!bind.empty()) command += " --bind " + binding_text(bind);
  command += fmt::format(" --batch {} --devices {} --microbatches {} --schedule {}", batch, devices_flag(plan),
                         plan.microbatches, plan.schedule);
  if (plan.virtual_stages > 1) command += fmt::format(" --virtual {}", plan.virtual_stages);
  if (dtype != DType::f32) command += fmt::format(" --dtype {}", dtype_name(dtype));
  if (recompute != "none") command += " --recompute " + recompute;
  return command + " -o " + plan_path;
}

}  // namespace

void check_plan_flags(const CLI::App& run, const Plan& plan, const std::string& plan_path) {
  // What the backward recomputes and how the stages compute are in the
  // stage programs (eval has neither flag).
  struct Compiled {
    const char* flag;
    std::string value;
  };
  for (const Compiled& compiled : {Compiled{"--recompute", plan.recompute},
                                   Compiled{"--dtype", std::string(dtype_name(plan.dtype))}}) {
    const CLI::Option* flag = run.get_option_no_throw(compiled.flag);
    if (!flag || flag->count() == 0) continue;
    const std::string wanted = flag->as<std::string>();
    if (wanted == compiled.value) continue;
    const bool recompute = std::string_view(compiled.flag) == "--recompute";
    const int64_t batch = plan_batch(plan);
    throw Error(fmt::format("{} {}: {} was compiled with {} {}, which a plan fixes when it is compiled; compile it "
                            "again: {}",
                            compiled.flag, wanted, plan_path, compiled.flag, compiled.value,
                            recompile_command(plan, model_facts(plan, batch), plan_path, batch, {},
                                              recompute ? wanted : plan.recompute,
                                              recompute ? plan.dtype : *parse_dtype(wanted))));
  }
  // The partitioner balanced the stages for the threads the plan gives each
  // device: other counts would unbalance them.
  if (run.count("--threads") > 0 && plan.devices.size() > 1) {
    const int threads = run.get_option("--threads")->as<int>();
    throw Error(fmt::format("--threads sets the threads of a run's one device; {}'s {} devices run the threads it was "
                            "compiled for (its stages are balanced for them): to give each {}, compile it with "
                            "--devices cpu:{}x{}",
                            plan_path, plan.devices.size(), threads, plan.devices.size(), threads));
  }
  const bool batch_given = run.count("--batch") > 0, bind_given = run.count("--bind") > 0;
  if (!batch_given && !bind_given) return;

  const int64_t batch = plan_batch(plan);
  const ModelFacts model = model_facts(plan, batch);
  int64_t wanted_batch = batch;
  std::string given;
  if (batch_given) {
    wanted_batch = run.get_option("--batch")->as<int64_t>();
    if (batch == 0)
      throw Error(fmt::format("--batch {}: every input of {} is read whole by each micro-batch, so it has no batch "
                              "to set",
                              wanted_batch, plan_path));
    if (wanted_batch != batch) given = fmt::format("--batch {}", wanted_batch);
  }
  // --bind names dimensions as the model declares them; the plan holds the
  // batch's per micro-batch, so the batch is compared whole (and --batch,
  // applied after --bind as for a model, wins).
  DimBinding changed, was;
  if (bind_given) {
    const std::string text = run.get_option("--bind")->as<std::string>();
    for (const auto& [dim, value] : parse_binding(text)) {
      if (dim == model.batch_dim) {
        if (!batch_given) wanted_batch = value;
        continue;
      }
      auto it = plan.binding.find(dim);
      if (it == plan.binding.end())
        throw Error(fmt::format("--bind: {} has no dimension '{}' (its dimensions: {})", plan_path, dim,
                                binding_text(plan.binding)));
      if (it->second != value) {
        changed[dim] = value;
        was[dim] = it->second;
      }
    }
    if (!changed.empty() || (!batch_given && wanted_batch != batch))
      given += fmt::format("{}--bind {}", given.empty() ? "" : " ", text);
  }
  if (wanted_batch == batch && changed.empty()) return;

  std::string compiled_for, wanted;
  if (wanted_batch != batch) {
    compiled_for = fmt::format(" for batch {} ({} micro-batches of {})", batch, plan.microbatches,
                               batch / plan.microbatches);
    wanted = fmt::format(" for batch {}", wanted_batch);
  }
  if (!changed.empty()) {
    compiled_for += " with " + binding_text(was);
    wanted += " with " + binding_text(changed);
  }
  throw Error(fmt::format("{}: {} was compiled{}, and a plan's shapes are fixed when it is compiled; compile it "
                          "again{}: {}",
                          given, plan_path, compiled_for, wanted,
                          recompile_command(plan, model, plan_path, wanted_batch, changed, plan.recompute,
                                            plan.dtype)));
}

Plan one_stage_plan(const std::string& file, const std::string& bind, int64_t batch, int threads,
                    const std::string& optimizer, const std::string& recompute, const std::string& dtype) {
  LoadedModel model = load_model(file, bind, true);
  if (batch > 0) bind_batch(model, batch);
  CompileOptions options;
  options.devices = fmt::format("cpu:1x{}", std::max(1, threads));
  options.microbatches = 1;
  options.schedule = "gpipe";
  options.optimizer = optimizer;
  options.recompute = recompute;
  options.dtype = dtype;
  return compile_plan(std::move(model.module), model.binding, file, options).plan;
}

void check_optimizer_flags(const CLI::App& run, const std::string& optimizer) {
  if (run.count("--momentum") > 0 && optimizer != "sgd")
    throw Error(fmt::format("--momentum applies to sgd, but this run trains with {}; drop it or add --optimizer sgd",
                            optimizer));
}

}  // namespace pf::tools
