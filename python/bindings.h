// The Python module pipeforge: each part of its API is bound in a file of its own.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "ir/diagnostic.h"

namespace pf::python {

namespace py = pybind11;

/// pipeforge.compile and pipeforge.Plan (plan_bindings.cpp).
void bind_plan(py::module_& m);
/// pipeforge.Runtime (runtime_bindings.cpp).
void bind_runtime(py::module_& m);
/// pipeforge.import_onnx (import_bindings.cpp).
void bind_import(py::module_& m);
/// pipeforge.LanguageModel (language_model_bindings.cpp).
void bind_language_model(py::module_& m);
/// pipeforge.schedule, read_schedule and Schedule (schedule_bindings.cpp).
void bind_schedule(py::module_& m);

/// str(value), as Python prints it.
inline std::string str_of(py::handle value) { return py::str(value).cast<std::string>(); }

/// The name of `value`'s type, for messages: "list".
inline std::string type_name_of(py::handle value) { return str_of(py::type::of(value).attr("__name__")); }

/// A path argument: str or os.PathLike, as a string.
std::string path_of(py::handle path);

/// A model argument: IR text (a str with a line break, named "<string>"),
/// or the file at a path (str or os.PathLike), read.
std::shared_ptr<const SourceFile> model_source(py::handle model);

/// `bind` as --bind takes it: None, "B=32,T=64", or {"B": 32, "T": 64}.
std::string bind_text(py::handle bind);

}  // namespace pf::python
