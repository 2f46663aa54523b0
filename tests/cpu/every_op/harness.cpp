// The harness of the forward-kernel tests: indices, seeded values, and each kernel run on byte buffers and checked.
#include "tests/cpu/every_op/harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "backends/cpu/kernels.h"
#include "tests/tensor_bytes.h"

namespace pf::cpu::every_op {

Index unravel(int64_t flat, const Shape& shape) {
  Index idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = flat % shape[d];
    flat /= shape[d];
  }
  return idx;
}

int64_t ravel(const Index& idx, const Shape& shape) {
  int64_t flat = 0;
  for (size_t d = 0; d < shape.size(); ++d) flat = flat * shape[d] + idx[d];
  return flat;
}

double broadcast_at(const Tensor& t, const Index& idx) {
  const Shape& s = t.type.shape;
  Index own(s.size());
  for (size_t d = 0; d < s.size(); ++d) own[d] = s[d] == 1 ? 0 : idx[idx.size() - s.size() + d];
  return t.v[ravel(own, s)];
}

Index shifted(Index idx, int64_t axis, int64_t offset) {
  idx[axis] += offset;
  return idx;
}

Tensor Gen::uniform(Shape shape, double lo, double hi) {
  Tensor t{{DType::f64, std::move(shape)}, {}};
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<float>(u(rng_)));
  return t;
}

Tensor Gen::ints(DType dt, Shape shape, int64_t lo, int64_t hi) {
  Tensor t{{dt, std::move(shape)}, {}};
  std::uniform_int_distribution<int64_t> u(lo, hi);
  for (int64_t i = 0; i < t.type.numel(); ++i) t.v.push_back(static_cast<double>(u(rng_)));
  return t;
}

Tensor Gen::bools(Shape shape) { return ints(DType::boolean, std::move(shape), 0, 1); }

Tensor values(DType dt, Shape shape, std::vector<double> v) { return {{dt, std::move(shape)}, std::move(v)}; }

namespace {

using testing_support::tensor_bytes;
using testing_support::tensor_values;

// In the f32 run every f64 of a case becomes f32.
DType retype(DType t, DType run) { return t == DType::f64 ? run : t; }

}  // namespace

Result run_kernel(OpKind op, DType run, const Case& c) {
  std::vector<TensorType> in_types, declared;
  std::vector<std::vector<std::byte>> in_bytes;
  for (const Tensor& t : c.in) {
    Tensor r{{retype(t.type.dtype, run), t.type.shape}, t.v};
    in_types.push_back(r.type);
    in_bytes.push_back(tensor_bytes(r.type.dtype, r.v));
  }
  for (const TensorType& t : c.declared) declared.push_back({retype(t.dtype, run), t.shape});
  OpAttrs attrs;
  for (OpAttrs::Entry e : c.attrs) {
    e.dtype = retype(e.dtype, run);
    attrs.add(e);
  }
  // The result types come from the IR's own shape rule, which also checks the case.
  Result result;
  result.types = op_info(op).shape(ShapeContext{op_name(op), in_types, attrs, declared});
  std::vector<std::vector<std::byte>> out_bytes;
  for (const TensorType& t : result.types)
    out_bytes.emplace_back(static_cast<size_t>(std::max<int64_t>(t.bytes(), 1)), std::byte{0xFF});
  std::vector<const void*> in_ptrs;
  std::vector<void*> out_ptrs;
  for (auto& b : in_bytes) in_ptrs.push_back(b.data());
  for (auto& b : out_bytes) out_ptrs.push_back(b.data());
  static backend::SingleRankGroup alone;  // tp_reduce over a group of one rank
  KernelArgs args{in_types, in_ptrs, result.types, out_ptrs, attrs};
  args.group = &alone;
  args.expert_group = &alone;
  forward_kernel(op, run)(args);
  for (size_t i = 0; i < result.types.size(); ++i)
    result.values.push_back(tensor_values(result.types[i], out_bytes[i]));
  return result;
}

namespace {

// Floats: |got - want| <= rtol * max(|want|, the largest |want| of the
// tensor), i.e. relative to the element or, for elements much smaller than
// the rest, to the tensor's scale. Integers and bools: exact.
void expect_close(const TensorType& type, const std::vector<double>& got, const std::vector<double>& want, double rtol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double scale = 0;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(got[i] - want[i]);
    const bool exact = !is_float(type.dtype);
    const bool ok =
        exact ? got[i] == want[i]
              : (err <= rtol * std::max(std::abs(want[i]), scale) || (std::isinf(want[i]) && got[i] == want[i]));
    if (!ok) {
      ADD_FAILURE() << what << " " << type.str() << ": element " << i << " is " << got[i] << ", expected " << want[i];
      return;
    }
  }
}

}  // namespace

void check_case(OpKind op, const Case& c) {
  SCOPED_TRACE("case " + c.name);
  const Result r64 = run_kernel(op, DType::f64, c);
  const Outputs want = c.ref(c.in, r64.types);
  ASSERT_EQ(want.size(), r64.values.size());
  for (size_t i = 0; i < want.size(); ++i)
    expect_close(r64.types[i], r64.values[i], want[i], 1e-10, "f64 kernel vs reference, result " + std::to_string(i));
  const Result r32 = run_kernel(op, DType::f32, c);
  ASSERT_EQ(r32.values.size(), r64.values.size());
  for (size_t i = 0; i < r32.values.size(); ++i)
    expect_close(r32.types[i], r32.values[i], r64.values[i], 1e-5,
                 "f32 kernel vs f64 kernel, result " + std::to_string(i));
}

}  // namespace pf::cpu::every_op
