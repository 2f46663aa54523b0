// pipeforge.Runtime: a plan loaded for training, fed numpy batches, its weights as numpy arrays.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "plan/plan.h"
#include "python/arrays.h"
#include "python/bindings.h"
#include "runtime/runtime.h"

namespace pf::python {

namespace {

/// A Runtime and what Python asks of it often. The C++ runtime takes one
/// caller at a time; a step runs without the GIL, so another Python thread
/// may call in meanwhile and waits for `busy`.
struct RuntimeHandle {
  explicit RuntimeHandle(Runtime r)
      : runtime(std::move(r)), inputs(runtime.batch_inputs()), parameters(runtime.parameters()) {}
  Runtime runtime;
  const std::vector<std::pair<std::string, TensorType>> inputs;      // whole-batch types
  const std::vector<std::pair<std::string, TensorType>> parameters;  // f32
  std::mutex busy;
};

/// Runs `f` on the runtime without the GIL, alone.
template <class F>
auto alone(RuntimeHandle& h, F&& f) {
  py::gil_scoped_release release;
  std::lock_guard lock(h.busy);
  return f(h.runtime);
}

std::string names_of(const std::vector<std::pair<std::string, TensorType>>& entries) {
  std::vector<std::string> names;
  for (const auto& e : entries) names.push_back("'" + e.first + "'");
  return fmt::format("{}", fmt::join(names, ", "));
}

/// `dict`'s arrays by `expected`'s names, each checked (and converted where
/// it must be) by checked_array; `what` says what the dict is ("batch")
/// and `entry` what each array is ("input"). The arrays are kept here so
/// that they live as long as the step reads them.
struct CheckedArrays {
  std::vector<py::array> arrays;  // in `expected` order
  CheckedArrays(py::handle dict, const std::vector<std::pair<std::string, TensorType>>& expected,
                const char* what, const char* entry) {
    if (!py::isinstance<py::dict>(dict))
      throw py::type_error(fmt::format("{}: expected a dict of numpy arrays by {} name, not {}", what, entry,
                                       type_name_of(dict)));
    py::dict d = py::reinterpret_borrow<py::dict>(dict);
    std::vector<std::string> problems;
    for (const auto& [name, type] : expected)
      if (!d.contains(name)) problems.push_back(fmt::format("missing {} '{}' ({})", entry, name, type.str()));
    for (auto [key, value] : d) {
      const std::string name = str_of(key);
      if (std::none_of(expected.begin(), expected.end(), [&](const auto& e) { return e.first == name; }))
        problems.push_back(fmt::format("unknown {} '{}' (expected {})", entry, name, names_of(expected)));
    }
    if (!problems.empty()) throw py::value_error(fmt::format("{}: {}", what, fmt::join(problems, "; ")));
    for (const auto& [name, type] : expected)
      arrays.push_back(checked_array(d[py::str(name)], type, fmt::format("{} '{}'", entry, name)));
  }
};

Runtime::Batch batch_of(const RuntimeHandle& h, const CheckedArrays& checked) {
  Runtime::Batch batch;
  for (size_t i = 0; i < h.inputs.size(); ++i) batch.inputs.emplace_back(h.inputs[i].first, checked.arrays[i].data());
  return batch;
}

std::unique_ptr<RuntimeHandle> make_runtime(py::handle plan, const std::string& optimizer, std::optional<double> lr,
                                            std::optional<double> momentum, double weight_decay, double clip,
                                            int64_t warmup, bool cosine, int64_t steps, uint64_t seed, int threads,
                                            double timeout, const std::string& pack_weights) {
  if (optimizer != "sgd" && optimizer != "adamw")
    throw py::value_error(fmt::format("optimizer must be one of sgd, adamw, not '{}'", optimizer));
  if (momentum && optimizer != "sgd")
    throw py::value_error(
        fmt::format("momentum applies to sgd, but this runtime trains with {}; drop it or pass optimizer='sgd'",
                    optimizer));
  RuntimeOptions options;
  options.train.optimizer = optimizer;
  options.train.lr = lr ? *lr : default_lr(optimizer);
  if (momentum) options.train.momentum = *momentum;
  options.train.weight_decay = weight_decay;
  options.train.clip = clip;
  options.train.warmup = warmup;
  options.train.cosine = cosine;
  options.train.steps = steps;
  options.train.seed = seed;
  options.threads = threads;
  options.timeout_s = timeout;
  const std::optional<PackWeights> pack = pack_weights_named(pack_weights);
  if (!pack) throw py::value_error(fmt::format("pack_weights must be one of auto, on, off, not '{}'", pack_weights));
  options.pack_weights = *pack;
  if (py::isinstance<Plan>(plan)) {
    Plan copy = plan.cast<Plan>();
    const std::string what = fmt::format("the plan of @{}", copy.model_name);
    py::gil_scoped_release release;
    return std::make_unique<RuntimeHandle>(Runtime::from_plan(std::move(copy), what, options));
  }
  const std::string path = path_of(plan);
  py::gil_scoped_release release;
  return std::make_unique<RuntimeHandle>(Runtime::load(path, options));
}

// Views of the weights themselves where the stages compute on the CPU (as
// PyTorch's state_dict shares its parameters' storage), read-only: a tied
// parameter has other copies that a write would miss.
py::dict state_dict(py::object self, bool copy) {
  RuntimeHandle& h = self.cast<RuntimeHandle&>();
  py::dict out;
  if (!copy) {
    const std::vector<std::pair<std::string, const float*>> held = h.runtime.host_parameters();
    if (!held.empty()) {
      for (size_t i = 0; i < held.size(); ++i) {
        if (held[i].first != h.parameters.at(i).first) throw std::logic_error("parameters out of order");
        const Shape& shape = h.parameters[i].second.shape;
        py::array_t<float> view(std::vector<py::ssize_t>(shape.begin(), shape.end()), held[i].second, self);
        view.attr("setflags")(py::arg("write") = false);
        out[py::str(held[i].first)] = std::move(view);
      }
      return out;
    }
  }
  std::vector<std::pair<std::string, float*>> buffers;
  for (const auto& [name, type] : h.parameters) {
    py::array_t<float> array(std::vector<py::ssize_t>(type.shape.begin(), type.shape.end()));
    buffers.emplace_back(name, array.mutable_data());
    out[py::str(name)] = std::move(array);
  }
  alone(h, [&](Runtime& rt) { rt.read_parameters(buffers); });
  return out;
}

void load_state_dict(RuntimeHandle& h, py::handle state) {
  CheckedArrays checked(state, h.parameters, "state_dict", "parameter");
  std::vector<std::pair<std::string, const float*>> values;
  for (size_t i = 0; i < h.parameters.size(); ++i)
    values.emplace_back(h.parameters[i].first, static_cast<const float*>(checked.arrays[i].data()));
  alone(h, [&](Runtime& rt) { rt.load_parameters(values); });
}

py::dict inputs_of(const RuntimeHandle& h) {
  py::dict out;
  for (const auto& [name, type] : h.inputs)
    out[py::str(name)] = py::make_tuple(py::tuple(py::cast(type.shape)), numpy_dtype(type.dtype));
  return out;
}

py::dict last_step(RuntimeHandle& h) {
  const PipelineStepResult r = alone(h, [](Runtime& rt) { return rt.last_step(); });
  py::dict out;
  out["loss"] = r.loss;
  out["grad_norm"] = r.grad_norm;
  out["lr"] = r.lr;
  out["seconds"] = r.seconds;
  out["bubble"] = r.bubble;
  return out;
}

}  // namespace

void bind_runtime(py::module_& m) {
  py::class_<RuntimeHandle>(m, "Runtime", R"(A plan loaded for training in this process (pf::Runtime).

One worker thread per device walks the plan's schedule; train_step and
forward run without the GIL. A batch is a dict of numpy arrays by the
model's input names (see batch_inputs()); an array of the input's dtype,
C-contiguous and aligned, is read in place, others are converted: any float
array to a float input (float64 rounds to float32), any integer array to an
integer input when every value fits (int64 labels to int32), bool to bool. A
wrong shape or another kind of dtype raises ValueError naming the input and
both shapes; errors of the runtime raise pipeforge.Error.)")
      .def(py::init(&make_runtime), py::arg("plan"), py::arg("optimizer") = "adamw", py::arg("lr") = py::none(),
           py::arg("momentum") = py::none(), py::arg("weight_decay") = 0.0, py::arg("clip") = default_clip(),
           py::arg("warmup") = 0, py::arg("cosine") = false, py::arg("steps") = 1, py::arg("seed") = 0,
           py::arg("threads") = 0, py::arg("timeout") = 60.0, py::arg("pack_weights") = "auto",
           R"(Loads `plan` (a Plan, or the path of a plan file) with `pipeforge run`'s options of the same names:
optimizer 'adamw' or 'sgd'; lr (default 0.0003 for adamw, 0.01 for sgd);
momentum (sgd only, default 0.9); weight_decay; clip (global gradient norm,
default 1; 0: off); warmup and cosine over `steps` steps (the learning-rate schedule's
length); seed (of initialize()); threads (of each CPU device's kernels; 0: the plan's
devices' own);
timeout (seconds a stage may wait or compute); pack_weights 'auto', 'on' or
'off' (CPU stages keep their weights packed for the products through a step).
The weights are unset until
initialize(), load_weights(), load_state_dict() or load_checkpoint().)")
      .def(
          "initialize",
          [](RuntimeHandle& h, std::optional<uint64_t> seed) {
            alone(h, [&](Runtime& rt) { seed ? rt.initialize(*seed) : rt.initialize(); });
          },
          py::arg("seed") = py::none(),
          "Fresh weights from every parameter's initializer under `seed` (default: the runtime's seed), fresh "
          "optimizer state, step 0.")
      .def(
          "train_step",
          [](RuntimeHandle& h, py::handle batch) {
            CheckedArrays checked(batch, h.inputs, "batch", "input");
            const Runtime::Batch b = batch_of(h, checked);
            return alone(h, [&](Runtime& rt) { return rt.train_step(b); });
          },
          py::arg("batch"),
          "Forward and backward of every micro-batch, then one optimizer step; returns the loss (the mean over "
          "micro-batches).")
      .def(
          "forward",
          [](RuntimeHandle& h, py::handle batch) {
            CheckedArrays checked(batch, h.inputs, "batch", "input");
            const Runtime::Batch b = batch_of(h, checked);
            return alone(h, [&](Runtime& rt) { return rt.forward(b); });
          },
          py::arg("batch"), "The loss of `batch` without gradients or an update.")
      .def("batch_inputs", &inputs_of,
           "The inputs a batch holds: {name: (shape, numpy dtype)} for the whole batch, in the model's order.")
      .def("state_dict", &state_dict, py::arg("copy") = false,
           "Every parameter's current values, {name: float32 array}. Where every stage computes on the CPU the "
           "arrays are read-only views of the weights themselves (no copy; like PyTorch's state_dict, they change "
           "with every step: np.array(a) keeps a snapshot); copies otherwise, or with copy=True. Weights change "
           "through load_state_dict().")
      .def("load_state_dict", &load_state_dict, py::arg("state_dict"),
           "Sets every parameter (all of them, nothing else; arrays checked and converted as a batch's are), as "
           "load_weights does from a file: fresh optimizer state, step 0. Optimizer state and step travel in "
           "checkpoints (save_checkpoint).")
      .def(
          "save_checkpoint",
          [](RuntimeHandle& h, py::handle path) {
            const std::string p = path_of(path);
            alone(h, [&](Runtime& rt) { rt.save_checkpoint(p); });
          },
          py::arg("path"),
          "Writes weights, optimizer state and step into the folder `path` (a shard per stage and an index, "
          "written last by rename).")
      .def(
          "load_checkpoint",
          [](RuntimeHandle& h, py::handle path) {
            const std::string p = path_of(path);
            alone(h, [&](Runtime& rt) { rt.load_checkpoint(p); });
          },
          py::arg("path"),
          "Restores what save_checkpoint wrote, all or nothing; training on gives the numbers of a run that never "
          "stopped.")
      .def(
          "load_weights",
          [](RuntimeHandle& h, py::handle path) {
            const std::string p = path_of(path);
            alone(h, [&](Runtime& rt) { rt.load_weights(p); });
          },
          py::arg("path"),
          "Weights from a safetensors file or a checkpoint folder; fresh optimizer state, step 0.")
      .def(
          "save_weights",
          [](RuntimeHandle& h, py::handle path) {
            const std::string p = path_of(path);
            alone(h, [&](Runtime& rt) { rt.save_weights(p); });
          },
          py::arg("path"), "Every parameter's values, by name, in one safetensors file.")
      .def_property_readonly(
          "step", [](RuntimeHandle& h) { return alone(h, [](Runtime& rt) { return rt.step(); }); },
          "Training steps since initialize() or a load, or restored by load_checkpoint().")
      .def_property_readonly(
          "stages", [](RuntimeHandle& h) { return h.runtime.stages(); }, "The plan's stages.")
      .def_property_readonly(
          "devices", [](RuntimeHandle& h) { return h.runtime.devices(); }, "Devices (one worker thread each).")
      .def_property_readonly(
          "plan", [](RuntimeHandle& h) { return h.runtime.plan(); }, "A copy of the plan as loaded.")
      .def("last_step", &last_step,
           "What the last train_step or forward reported: loss, grad_norm, lr, seconds and bubble (the idle "
           "fraction of the devices).");
}

}  // namespace pf::python
