// pipeforge.schedule and pipeforge.Schedule: a pipeline schedule's action lists, generated or read, drawn and timed.
#include <pybind11/stl.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "python/bindings.h"
#include "runtime/schedule.h"
#include "runtime/schedule_jitter.h"
#include "runtime/schedule_warmup.h"

namespace pf::python {

namespace {

/// `costs` as `pipeforge schedule --costs` takes them: None, or F, B, W[, C].
UnitCosts costs_of(const std::optional<std::vector<double>>& costs) {
  return unit_costs(costs.value_or(std::vector<double>{}), "costs");
}

/// Each device's compute actions, as a schedule file names them ("F3", "B3c1", "W3").
std::vector<std::vector<std::string>> action_labels(const Schedule& s) {
  std::vector<std::vector<std::string>> out;
  for (const std::vector<Action>& list : s.per_device) {
    std::vector<std::string>& row = out.emplace_back();
    for (const Action& a : list)
      if (is_compute(a.kind)) row.push_back(action_label(s, a));
  }
  return out;
}

Schedule generate(const std::string& kind, int devices, int microbatches, std::optional<int> virtual_stages,
                  const std::optional<std::vector<double>>& costs, int extra_warmup) {
  const std::optional<ScheduleKind> parsed = parse_schedule_kind(kind);
  if (!parsed || *parsed == ScheduleKind::custom)
    throw py::value_error(
        fmt::format("kind must be one of {}, not '{}'", fmt::join(schedule_kind_names(), ", "), kind));
  for (auto [what, value] : {std::pair{"devices", devices}, {"microbatches", microbatches}})
    if (value < 1) throw py::value_error(fmt::format("{} must be positive, not {}", what, value));
  if (virtual_stages && *virtual_stages < 1)
    throw py::value_error(fmt::format("virtual_stages must be positive, not {}", *virtual_stages));
  const UnitCosts unit = costs_of(costs);
  py::gil_scoped_release release;
  Schedule made =
      make_schedule(*parsed, devices, microbatches, chunks_per_device(*parsed, virtual_stages.value_or(1)), unit);
  return extra_warmup != 0 ? with_extra_warmup(made, extra_warmup) : made;
}

/// simulate_jittered on unit costs, as a dict of the step's statistics.
py::dict jittered(const Schedule& s, double sigma, int trials, const std::optional<std::vector<double>>& costs,
                  uint64_t seed) {
  const UnitCosts unit = costs_of(costs);
  JitteredSimulation j;
  {
    py::gil_scoped_release release;
    j = simulate_jittered(s, unit, Jitter{sigma, trials, seed});
  }
  py::dict out;
  out["steady"] = j.nominal.makespan;
  out["mean"] = j.mean_makespan;
  out["median"] = j.median_makespan;
  out["p90"] = j.p90_makespan;
  out["bubble"] = j.mean_bubble;
  return out;
}

/// A schedule file's lists: text holding a line break, else a path.
Schedule read(py::handle file) {
  if (py::isinstance<py::str>(file) && str_of(file).find('\n') != std::string::npos)
    return read_schedule_text(str_of(file), "<string>");
  return read_schedule_file(path_of(file));
}

}  // namespace

void bind_schedule(py::module_& m) {
  py::class_<Schedule>(m, "Schedule",
                       "A pipeline schedule: each device's actions for one training step, as `pipeforge schedule` "
                       "draws them and `pipeforge compile --schedule-file` plans for them.")
      .def_property_readonly(
          "kind", [](const Schedule& s) { return std::string(schedule_kind_name(s.kind)); },
          "'1f1b', 'zbv', ... or 'custom' (read from a schedule file).")
      .def_readonly("devices", &Schedule::devices)
      .def_readonly("microbatches", &Schedule::microbatches)
      .def_readonly("virtual_stages", &Schedule::virtual_stages, "Model chunks per device.")
      .def_property_readonly(
          "placement",
          [](const Schedule& s) { return s.placement.name(); },
          "'round-robin' (stage s on device s % devices), 'v' (device d holds stages d and 2 devices - 1 - d), or "
          "the device of each stage as a schedule file lists it ('0 1 1 0 0 1 1 0').")
      .def_property_readonly(
          "stage_devices",
          [](const Schedule& s) {
            std::vector<int> out;
            for (int stage = 0; stage < s.model_stages(); ++stage) out.push_back(s.device_of(stage));
            return out;
          },
          "The device of each model stage.")
      .def_readonly("split_backward", &Schedule::split_backward,
                    "Whether each backward runs as B (input gradient) and W (weight gradient).")
      .def_property_readonly("actions", &action_labels,
                             "Each device's compute actions in order, as a schedule file names them: 'F3' the "
                             "forward of micro-batch 3, 'B3' its backward (its input gradient where a 'W3' follows), "
                             "'F3c1' the same on the device's chunk 1.")
      .def(
          "bubble",
          [](const Schedule& s, const std::optional<std::vector<double>>& costs) {
            return simulate(s, costs_of(costs)).bubble_fraction;
          },
          py::arg("costs") = py::none(),
          "The idle share of the step, simulated on costs (F, B, W[, C] per chunk as `pipeforge schedule --costs`; "
          "None: a forward 1, an input and a weight gradient 1 each).")
      .def(
          "draw",
          [](const Schedule& s, const std::string& format, const std::optional<std::vector<double>>& costs) {
            if (format != "text" && format != "svg")
              throw py::value_error(fmt::format("format must be one of text, svg, not '{}'", format));
            const Simulation sim = simulate(s, costs_of(costs));
            return format == "svg" ? render_schedule_svg(s, sim) : render_schedule_text(s, sim);
          },
          py::arg("format") = "text", py::arg("costs") = py::none(),
          "The picture `pipeforge schedule` draws: 'text' (a grid of the actions in time) or 'svg'.")
      .def("jitter", &jittered, py::arg("sigma") = 0.1, py::arg("trials") = 200, py::arg("costs") = py::none(),
           py::arg("seed") = 1,
           R"(The step over `trials` runs with each action's time drawn around its cost
(a lognormal factor of mean 1 whose log spreads by sigma), as `pipeforge
schedule --jitter`: a dict of 'steady' (the step without noise), 'mean',
'median', 'p90' and the mean 'bubble'. The same seed draws the same runs.)")
      .def("__str__", &write_schedule_text, "The schedule file: each device's compute actions in order.")
      .def("torch_csv", &write_torch_schedule_csv,
           "The lists as PyTorch's compute-only schedule CSV (`pipeforge schedule --format csv`): a row per rank, "
           "cells such as '0F3', '5I3' (the model stage, F, I, W or B, the micro-batch), which "
           "torch.distributed.pipelining schedules load with _load_csv; read_schedule reads such a file back.")
      .def("__repr__", [](const Schedule& s) {
        return fmt::format("<pipeforge.Schedule {} devices={} microbatches={} virtual_stages={}>",
                           schedule_kind_name(s.kind), s.devices, s.microbatches, s.virtual_stages);
      });
  m.def("schedule", &generate, py::arg("kind"), py::arg("devices") = 4, py::arg("microbatches") = 8,
        py::arg("virtual_stages") = py::none(), py::arg("costs") = py::none(), py::arg("extra_warmup") = 0,
        R"(The schedule `kind` ('gpipe', '1f1b', 'interleaved', 'zb1', 'zbv', 'zbi',
'dualpipev', 'loopedbfs') makes on `devices` devices and `microbatches`
micro-batches, with virtual_stages chunks per device where the kind takes
them; zbi chooses its order on costs (F, B, W[, C] per chunk). With
extra_warmup k (1f1b, zb1), every device but the last runs k more forwards
before its first backward (a 'custom' schedule: k more activations held,
slack against actions that run late). Raises pipeforge.Error for a shape
the kind cannot run.)");
  m.def("read_schedule", &read, py::arg("file"),
        R"(A schedule file's lists (a path, or the text itself where it holds a
line break), checked as `pipeforge compile --schedule-file` checks them:
pipeforge.Error at the line and column at fault, or for lists that deadlock.
str() of any Schedule is such a file, and compile(schedule_file=...) takes
a Schedule too. A path ending in .csv is read as PyTorch's schedule CSV
(Schedule.torch_csv()).)");
}

}  // namespace pf::python
