// numpy arrays in and out of the module: checked against the type the model
// expects and converted only where they must be.
#pragma once

#include <pybind11/numpy.h>

#include <string>

#include "ir/types.h"
#include "python/bindings.h"

namespace pf::python {

/// numpy's dtype for `t`; throws pf::Error for bf16, which numpy lacks.
py::dtype numpy_dtype(DType t);

/// `value` as a C-contiguous, aligned, native-order array of `type`, for
/// `what` ("input 'x'" in messages). An array that already is one is
/// returned as it is (no copy). Others are converted (a copy) where nothing
/// is lost but precision: any float array to a float type (float64 to
/// float32 rounds), any integer array to an integer type when every value
/// fits (int64 labels to int32), bool to bool; a list or other sequence is
/// taken as numpy.asarray takes it. Raises ValueError for a wrong shape,
/// another kind of dtype (floats for an int32 input) or an integer that does
/// not fit, naming `what` and both shapes and dtypes.
py::array checked_array(py::handle value, const TensorType& type, const std::string& what);

}  // namespace pf::python
