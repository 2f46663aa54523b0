// The harness of the forward-kernel tests: tensors of doubles, seeded values, cases, and a kernel run on a case.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "ir/op_table.h"
#include "ir/types.h"
#include "tests/op_attr_entries.h"

namespace pf::cpu::every_op {

// Each case is checked twice: the f64 kernel against the
// reference written here (plain loops over multi-indices), then the f32
// kernel against the f64 kernel. Inputs are rounded to f32 so both runs read
// the same numbers. Results are poisoned (all bytes 0xFF) before each run so
// an element a kernel forgets to write shows up as NaN or as a wrong integer.

// ---------------------------------------------------------------------------
// Tensors of the test: values held as doubles whatever the dtype (bools are
// 0/1, the integers used here are exact in a double).

struct Tensor {
  TensorType type;
  std::vector<double> v;  // row-major
};

using Index = std::vector<int64_t>;

Index unravel(int64_t flat, const Shape& shape);
int64_t ravel(const Index& idx, const Shape& shape);

// The element of `t` that broadcasting sends to result index `idx` (aligned
// on the right, size-1 dimensions stretched).
double broadcast_at(const Tensor& t, const Index& idx);

// Index `idx` along `axis` shifted by `offset`.
Index shifted(Index idx, int64_t axis, int64_t offset);

// Values drawn from a fixed seed and rounded to f32.
class Gen {
 public:
  explicit Gen(uint64_t seed) : rng_(seed) {}
  Tensor uniform(Shape shape, double lo = -2, double hi = 2);
  Tensor ints(DType dt, Shape shape, int64_t lo, int64_t hi);
  Tensor bools(Shape shape);

 private:
  std::mt19937_64 rng_;
};

Tensor values(DType dt, Shape shape, std::vector<double> v);

// ---------------------------------------------------------------------------
// Attributes (names must outlive the OpAttrs: string literals here).

using testing_support::bool_attr;
using testing_support::dim_attr;
using testing_support::dims_attr;
using testing_support::dtype_attr;
using testing_support::real_attr;
using testing_support::string_attr;

// ---------------------------------------------------------------------------
// A case: operands, attributes, declared result types (source ops) and the
// reference, which maps the f64 operands and the result types to the values.

using Outputs = std::vector<std::vector<double>>;
using Reference = std::function<Outputs(const std::vector<Tensor>& in, const std::vector<TensorType>& out)>;

struct Case {
  std::string name;
  std::vector<Tensor> in;
  std::vector<OpAttrs::Entry> attrs;
  std::vector<TensorType> declared;
  Reference ref;
};

// ---------------------------------------------------------------------------
// Running a kernel on byte buffers.

struct Result {
  std::vector<TensorType> types;
  Outputs values;
};

// Runs the kernel of `op` in `run` (f32 or f64, which every f64 of the case becomes) on the case's operands;
// the result types come from the op's shape rule.
Result run_kernel(OpKind op, DType run, const Case& c);

// Both checks of a case, as above.
void check_case(OpKind op, const Case& c);

}  // namespace pf::cpu::every_op
