// The Python module pipeforge: its errors, and the parts bound in plan_bindings.cpp and runtime_bindings.cpp.
#include <Python.h>
#include <fmt/format.h>

#include <exception>
#include <string>

#include "ir/diagnostic.h"
#include "python/bindings.h"

namespace pf::python {

namespace {

// pipeforge.Error. The module holds the type; a plain pointer, rather than a
// py::object, so that nothing is released after the interpreter has ended.
PyObject* error_type = nullptr;

/// What Python shows of a pf::Error: where the location is known, what the
/// command line prints (file:line:col: error: message, the line, a caret);
/// otherwise the message alone.
std::string error_text(const Error& e) {
  if (!e.location().known()) return e.message();
  std::string text = e.render();
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text;
}

void bind_errors(py::module_& m) {
  error_type = PyErr_NewExceptionWithDoc(
      "pipeforge.Error",
      "An error Pipeforge reports: a model that does not parse or verify, a plan or checkpoint that does not load, a "
      "step that fails. str(e) is what the command line would print; e.message is the message without its location.",
      PyExc_RuntimeError, nullptr);
  if (error_type == nullptr) throw py::error_already_set();
  m.add_object("Error", py::handle(error_type));
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      py::object error = py::reinterpret_borrow<py::object>(error_type)(error_text(e));
      error.attr("message") = e.message();
      PyErr_SetObject(error_type, error.ptr());
    }
  });
}

}  // namespace

std::string path_of(py::handle path) {
  py::object fspath = py::module_::import("os").attr("fspath");
  py::object text = fspath(path);
  if (!py::isinstance<py::str>(text))
    throw py::type_error("expected a path as str or os.PathLike, not bytes");
  return text.cast<std::string>();
}

std::shared_ptr<const SourceFile> model_source(py::handle model) {
  // IR text has lines; a path has none.
  if (py::isinstance<py::str>(model)) {
    std::string text = model.cast<std::string>();
    if (text.find('\n') != std::string::npos) return std::make_shared<SourceFile>("<string>", std::move(text));
  }
  return read_source_file(path_of(model));
}

std::string bind_text(py::handle bind) {
  if (bind.is_none()) return "";
  if (py::isinstance<py::str>(bind)) return bind.cast<std::string>();
  if (!py::isinstance<py::dict>(bind))
    throw py::type_error(fmt::format("bind: expected a str such as \"B=32,T=64\" or a dict of int, not {}",
                                     type_name_of(bind)));
  std::string text;
  for (auto [dim, value] : bind.cast<py::dict>())
    text += fmt::format("{}{}={}", text.empty() ? "" : ",", str_of(dim), value.cast<int64_t>());
  return text;
}

}  // namespace pf::python

PYBIND11_MODULE(_pipeforge, m) {
  m.doc() = "Pipeforge's compiler and runtime (see the package pipeforge)";
  pf::python::bind_errors(m);
  pf::python::bind_plan(m);
  pf::python::bind_runtime(m);
  pf::python::bind_import(m);
  pf::python::bind_language_model(m);
  pf::python::bind_schedule(m);
}
