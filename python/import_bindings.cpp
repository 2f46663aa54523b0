// pipeforge.import_onnx: a PyTorch model exported to ONNX, as IR text and weights.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <cstring>
#include <string>

#include "importer/onnx_import.h"
#include "python/bindings.h"

namespace pf::python {

namespace {

py::tuple import_onnx(py::handle path, const std::string& loss, const std::string& batch_dim,
                      const std::map<std::string, int64_t>& bind) {
  OnnxImportOptions options;
  options.loss = loss;
  options.batch_dim = batch_dim;
  for (const auto& [dim, value] : bind) options.bind[dim] = value;
  const std::string file = path_of(path);
  OnnxImport imported;
  {
    py::gil_scoped_release release;
    imported = import_onnx(file, options);
  }
  py::dict weights;
  for (const ImportedWeight& w : imported.weights) {
    py::array_t<float> a(w.type.shape);
    std::memcpy(a.mutable_data(), w.values.data(), w.values.size() * sizeof(float));
    weights[py::str(w.name)] = std::move(a);
  }
  return py::make_tuple(imported.ir, weights);
}

}  // namespace

void bind_import(py::module_& m) {
  m.def("import_onnx", &import_onnx, py::arg("path"), py::arg("loss") = "", py::arg("batch_dim") = "",
        py::arg("bind") = std::map<std::string, int64_t>{},
        R"(Translates an ONNX model (torch.onnx.export in training mode, opsets 13-17), as `pipeforge import` does.

Returns (ir, weights): the model as IR text, for pipeforge.compile, and its
parameters' values by their PyTorch names, float32 arrays for
Runtime.load_state_dict. loss: "cross_entropy:TARGET" or "mse[:TARGET]"
appends a loss to a model exported without one; batch_dim names the batch
dimension; bind gives the symbolic dimensions' values, e.g. {"batch": 32}.
Raises pipeforge.Error naming the ONNX node it cannot translate.)");
}

}  // namespace pf::python
