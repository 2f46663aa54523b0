// pipeforge.compile and pipeforge.Plan: a model cut into pipeline stages, saved, loaded and drawn.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "partitioner/compile.h"
#include "plan/plan.h"
#include "runtime/schedule.h"
#include "python/bindings.h"
#include "tools/model_loading.h"
#include "tools/plan_render.h"

namespace pf::python {

namespace {

void check_choice(const char* what, const std::string& value, const std::vector<std::string>& choices) {
  if (std::none_of(choices.begin(), choices.end(), [&](const std::string& c) { return value == c; }))
    throw py::value_error(fmt::format("{} must be one of {}, not '{}'", what, fmt::join(choices, ", "), value));
}

void check_positive(const char* what, int64_t value) {
  if (value < 1) throw py::value_error(fmt::format("{} must be positive, not {}", what, value));
}

/// A schedule file's lists in canonical form (read_schedule_text's
/// diagnostics for a bad one), checked against the counts given with it.
std::string schedule_file_actions(py::handle path, std::optional<int> microbatches,
                                  std::optional<int> virtual_stages, const std::optional<std::string>& schedule) {
  const bool given = py::isinstance<Schedule>(path);  // pipeforge.schedule's or read_schedule's
  const std::string file = given ? str_of(py::repr(path)) : path_of(path);
  if (schedule)
    throw py::value_error(fmt::format("give schedule or schedule_file, not both ('{}' and {})", *schedule, file));
  const Schedule written = given ? path.cast<Schedule>() : [&] {
    py::gil_scoped_release release;
    return read_schedule_file(file);
  }();
  if (microbatches && *microbatches != written.microbatches)
    throw py::value_error(fmt::format("microbatches {}: {} runs {} micro-batches; leave it out", *microbatches, file,
                                      written.microbatches));
  if (virtual_stages && *virtual_stages != written.virtual_stages)
    throw py::value_error(fmt::format("virtual_stages {}: {} runs {} chunks per device; leave it out", *virtual_stages,
                                      file, written.virtual_stages));
  return write_schedule_text(written);
}

Plan compile(py::handle model, const std::string& devices, std::optional<int> microbatches,
             const std::optional<std::string>& schedule, int data_parallel, std::optional<int64_t> batch,
             py::handle bind, std::optional<int> virtual_stages, const std::string& optimizer,
             const std::string& cuts, const std::string& recompute, bool shard_optimizer, int tensor_parallel,
             bool sequence_parallel, const std::string& dtype, int expert_parallel, const std::string& fusion,
             py::handle schedule_file, int extra_warmup) {
  if (microbatches) check_positive("microbatches", *microbatches);
  if (extra_warmup < 0) throw py::value_error(fmt::format("extra_warmup must be at least 0, not {}", extra_warmup));
  check_positive("data_parallel", data_parallel);
  check_positive("tensor_parallel", tensor_parallel);
  check_positive("expert_parallel", expert_parallel);
  if (virtual_stages) check_positive("virtual_stages", *virtual_stages);
  if (batch) check_positive("batch", *batch);
  if (schedule) check_choice("schedule", *schedule, compile_schedule_names());
  check_choice("optimizer", optimizer, {"sgd", "adamw"});
  check_choice("cuts", cuts, {"auto", "layers", "any", "products"});
  check_choice("recompute", recompute, {"none", "selective", "layers", "auto"});
  check_choice("dtype", dtype, {"f32", "bf16"});
  check_choice("fusion", fusion, fusion_choices());
  const std::shared_ptr<const SourceFile> source = model_source(model);
  const std::string binding = bind_text(bind);
  CompileOptions options;
  options.devices = devices;
  if (!schedule_file.is_none()) {
    options.schedule_actions = schedule_file_actions(schedule_file, microbatches, virtual_stages, schedule);
    options.schedule = "custom";
  } else {
    options.schedule = schedule.value_or(options.schedule);
    options.microbatches = microbatches.value_or(options.microbatches);
    options.virtual_stages = virtual_stages.value_or(options.virtual_stages);
  }
  options.data_parallel = data_parallel;
  options.optimizer = optimizer;
  options.cuts = cuts;
  options.recompute = recompute;
  options.shard_optimizer = shard_optimizer;
  options.tensor_parallel = tensor_parallel;
  options.sequence_parallel = sequence_parallel;
  options.expert_parallel = expert_parallel;
  options.dtype = dtype;
  options.fusions = fusions_named(fusion);
  options.extra_warmup = extra_warmup;
  py::gil_scoped_release release;
  tools::LoadedModel loaded = tools::load_model(source, binding, true);
  if (batch) tools::bind_batch(loaded, *batch);
  return compile_plan(std::move(loaded.module), loaded.binding, source->name(), options).plan;
}

std::string dump(const Plan& plan, const std::string& format, bool ops) {
  check_choice("format", format, {"text", "dot", "svg"});
  if (ops && format == "text") throw py::value_error("ops draws ops; it needs format 'dot' or 'svg'");
  if (format == "text") return tools::render_plan_text(plan);
  std::string dot = tools::render_plan_dot(plan, ops);
  if (format == "dot") return dot;
  py::gil_scoped_release release;  // Graphviz may take a while
  return tools::dot_to_svg(dot);
}

std::vector<std::string> device_names(const Plan& plan) {
  std::vector<std::string> out;
  for (const PlanDevice& d : plan.devices) out.push_back(d.name);
  return out;
}

}  // namespace

void bind_plan(py::module_& m) {
  py::class_<Plan>(m, "Plan",
                   "A compiled pipeline plan: the model cut into stages, each stage's programs, its devices, "
                   "schedule and micro-batches (what `pipeforge compile` writes).")
      .def_static(
          "load", [](py::handle path) { return load_plan(path_of(path)); }, py::arg("path"),
          "Reads a plan file and checks it whole (every stage program parses and verifies).")
      .def(
          "save", [](const Plan& plan, py::handle path) { save_plan(plan, path_of(path)); }, py::arg("path"),
          "Writes the plan as JSON (by rename: a crash leaves the old file or the new one).")
      .def("dump", &dump, py::arg("format") = "text", py::arg("ops") = false,
           "The plan as `pipeforge dump --format` draws it: 'text' (the stage table), 'dot' (Graphviz) or 'svg' "
           "(through Graphviz's dot, which must be on the PATH); ops=True draws one node per op (dot and svg).")
      .def_property_readonly(
          "stages", [](const Plan& plan) { return plan.stages.size(); }, "The number of pipeline stages.")
      .def_readonly("microbatches", &Plan::microbatches)
      .def_readonly("schedule", &Plan::schedule,
                    "'gpipe', '1f1b', 'interleaved', 'zb1', 'zbv', 'zbi', 'dualpipev', 'loopedbfs', or 'custom' "
                    "(a schedule file's lists).")
      .def_readonly("schedule_actions", &Plan::schedule_actions,
                    "For a custom schedule, its schedule file (each device's compute actions in order); '' otherwise.")
      .def_readonly("virtual_stages", &Plan::virtual_stages)
      .def_property_readonly("devices", &device_names, "Device names, one per rank: ['cpu:0', 'cpu:1'].")
      .def_property_readonly(
          "data_parallel", [](const Plan& plan) { return replica_count(plan); },
          "Replicas of the pipeline.")
      .def_readonly("shard_optimizer", &Plan::shard_optimizer,
                    "Whether the replicas share each stage's optimizer state out between them.")
      .def_readonly("tensor_parallel", &Plan::tensor_parallel,
                    "Ranks per pipeline device, splitting each layer between them (1: none).")
      .def_readonly("sequence_parallel", &Plan::sequence_parallel,
                    "Whether the ops between a layer's split products run on each rank's part of the tokens.")
      .def_readonly("expert_parallel", &Plan::expert_parallel,
                    "Replicas per group sharing each layer's experts out, a block each (1: every replica holds them "
                    "all).")
      .def_property_readonly(
          "dtype", [](const Plan& plan) { return std::string(dtype_name(plan.dtype)); },
          "How the stages compute: 'f32', or 'bf16' (CPU stages: their products on operands rounded to bf16).")
      .def_readonly("model", &Plan::model_name, "The graph's name.")
      .def_readonly("binding", &Plan::binding, "Every dimension's value for one micro-batch.")
      .def("__repr__", [](const Plan& plan) {
        return fmt::format("<pipeforge.Plan @{}: {} stages on {}, {}, {} micro-batches>", plan.model_name,
                           plan.stages.size(), fmt::join(device_names(plan), ", "), plan.schedule,
                           plan.microbatches);
      });

  m.def("compile", &compile, py::arg("model"), py::arg("devices") = "cpu:4", py::arg("microbatches") = py::none(),
        py::arg("schedule") = py::none(), py::arg("data_parallel") = 1, py::arg("batch") = py::none(),
        py::arg("bind") = py::none(), py::arg("virtual_stages") = py::none(), py::arg("optimizer") = "adamw",
        py::arg("cuts") = "auto", py::arg("recompute") = "none", py::arg("shard_optimizer") = false,
        py::arg("tensor_parallel") = 1, py::arg("sequence_parallel") = false, py::arg("dtype") = "f32",
        py::arg("expert_parallel") = 1, py::arg("fusion") = "all", py::arg("schedule_file") = py::none(),
        py::arg("extra_warmup") = 0,
        R"(Compiles a model into a pipeline plan, as `pipeforge compile` does.

model: a path (str or os.PathLike) to a .pf file, or the model's IR text
itself: a str holding a newline is text (named "<string>" in errors), any
other str a path. bind: dimensions to override, "B=32,T=64" or
{"B": 32, "T": 64} (--bind); batch binds the first input's leading
dimension (--batch). devices, microbatches (8 unless given), schedule ('gpipe', '1f1b' unless given,
'interleaved', 'zb1', 'zbv', 'zbi', 'dualpipev', 'loopedbfs', 'auto'), data_parallel, virtual_stages (1 unless given),
optimizer ('sgd', adamw': sizes the optimizer state), cuts ('auto', 'layers', 'any', 'products':
where stages may begin), recompute ('none', 'selective', 'layers', 'auto':
what the backward computes again instead of stashing), shard_optimizer
(--shard-optimizer: the replicas share each stage's optimizer state out)
tensor_parallel (--tensor-parallel: ranks per device, splitting each
layer as Megatron-LM does), sequence_parallel (--sequence-parallel: the
norms and residual adds between on each rank's part of the tokens),
dtype ('f32' or 'bf16': CPU stages run their products on operands rounded
to bf16, CUDA stages everything in bf16), expert_parallel
(--expert-parallel: groups of that many of the data_parallel replicas
share each layer's experts out) and fusion ('all', 'none', 'attention',
'swiglu': which chains of ops become one op) are compile's options of
those names. schedule_file (--schedule-file: a path to a schedule file,
each device's compute actions in order, or a pipeforge.Schedule) runs its
lists instead of a schedule's, and fixes the micro-batches and chunks per
device. extra_warmup (--extra-warmup, with schedule '1f1b' or 'zb1'):
every device but the last runs that many more forwards before its first
backward, the plan holding the lists (schedule 'custom').
Raises pipeforge.Error for a model that does not parse or verify, or a plan
that cannot be made.)");
}

}  // namespace pf::python
