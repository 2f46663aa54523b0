// numpy arrays in and out of the module: checked against the type the model expects, converted only where they must be.
#include "python/arrays.h"

#include <fmt/format.h>

#include <cstdint>

#include "ir/diagnostic.h"

namespace pf::python {

namespace {

/// numpy's spelling of a shape and dtype: "(32, 784) float32", "(32,) int32".
std::string describe(const std::vector<int64_t>& shape, const py::dtype& dtype) {
  std::string dims;
  for (size_t i = 0; i < shape.size(); ++i) dims += fmt::format("{}{}", i ? ", " : "", shape[i]);
  if (shape.size() == 1) dims += ",";
  return fmt::format("({}) {}", dims, str_of(dtype));
}

/// The kind of dtype a model's type takes: 'f' float, 'i' integer, 'b' bool.
char kind_of(DType t) {
  if (is_float(t)) return 'f';
  if (is_integer(t)) return 'i';
  return 'b';
}

/// "float", "integer", "bool", or the dtype itself for the other kinds.
std::string kind_name(const py::dtype& dtype) {
  switch (dtype.kind()) {
    case 'f': return "float";
    case 'i':
    case 'u': return "integer";
    case 'b': return "bool";
    default: return str_of(dtype);
  }
}

/// Whether an array of numpy kind `given` converts to a model type of kind
/// `wanted` (unsigned integers count as integers).
bool converts(char given, char wanted) { return given == wanted || (given == 'u' && wanted == 'i'); }

}  // namespace

py::dtype numpy_dtype(DType t) {
  switch (t) {
    case DType::f32: return py::dtype("float32");
    case DType::f64: return py::dtype("float64");
    case DType::f16: return py::dtype("float16");
    case DType::i32: return py::dtype("int32");
    case DType::i64: return py::dtype("int64");
    case DType::boolean: return py::dtype("bool");
    case DType::bf16: break;
  }
  throw Error(fmt::format("{} has no numpy dtype", dtype_name(t)));
}

py::array checked_array(py::handle value, const TensorType& type, const std::string& what) {
  py::array array = py::array::ensure(value);
  if (!array) {
    PyErr_Clear();
    throw py::value_error(fmt::format("{}: expected a numpy array, not {}", what,
                                      type_name_of(value)));
  }
  const py::dtype wanted = numpy_dtype(type.dtype);
  const std::vector<int64_t> shape(array.shape(), array.shape() + array.ndim());
  const std::string expected = fmt::format("{}: expected shape {}, got {}", what, describe(type.shape, wanted),
                                           describe(shape, array.dtype()));
  if (shape != type.shape) throw py::value_error(expected);
  const char given_kind = array.dtype().kind(), wanted_kind = kind_of(type.dtype);
  if (!converts(given_kind, wanted_kind))
    throw py::value_error(fmt::format("{}: {} arrays are not converted to {}", expected, kind_name(array.dtype()),
                                      str_of(wanted)));
  const bool aligned = reinterpret_cast<uintptr_t>(array.data()) % static_cast<uintptr_t>(wanted.itemsize()) == 0;
  if (array.dtype().equal(wanted) && (array.flags() & py::array::c_style) && aligned) return array;
  if (wanted_kind == 'i' && array.size() > 0) {
    // Narrowing integers must not wrap: labels would silently change.
    py::object info = py::module_::import("numpy").attr("iinfo")(wanted);
    py::object low = array.attr("min")(), high = array.attr("max")();
    if (low < info.attr("min") || high > info.attr("max"))
      throw py::value_error(fmt::format("{}: {} does not fit in {}", what,
                                        str_of(low < info.attr("min") ? low : high),
                                        str_of(wanted)));
  }
  return py::module_::import("numpy").attr("array")(array, wanted, py::arg("order") = "C");  // a copy
}

}  // namespace pf::python
