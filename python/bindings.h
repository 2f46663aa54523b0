// The Python module pipeforge: each part of its API is bound in a file of its own.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

namespace pf::python {

namespace py = pybind11;

/// pipeforge.compile and pipeforge.Plan (plan_bindings.cpp).
void bind_plan(py::module_& m);
/// pipeforge.Runtime (runtime_bindings.cpp).
void bind_runtime(py::module_& m);
/// pipeforge.import_onnx (import_bindings.cpp).
void bind_import(py::module_& m);

/// str(value), as Python prints it.
inline std::string str_of(py::handle value) { return py::str(value).cast<std::string>(); }

/// The name of `value`'s type, for messages: "list".
inline std::string type_name_of(py::handle value) { return str_of(py::type::of(value).attr("__name__")); }

/// A path argument: str or os.PathLike, as a string.
std::string path_of(py::handle path);

}  // namespace pf::python
