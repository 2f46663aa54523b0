// The kernel table's errors, out of line.
#include "backends/common/kernel_table.h"

#include <fmt/format.h>

#include <stdexcept>

#include "ir/diagnostic.h"

namespace pf::backend {

void throw_filled_twice(std::string_view backend, OpKind op) {
  throw std::logic_error(fmt::format("{} kernel table: {} is filled twice", backend, op_name(op)));
}

void throw_no_kernel(std::string_view backend, OpKind op, DType dtype) {
  throw Error(fmt::format("no {} kernel for {} in {}", backend, op_name(op), dtype_name(dtype)));
}

}  // namespace pf::backend
