// The kernel table every backend fills: the kernel a dtype finds, the errors for a missing kernel and a row filled twice.
#include "backends/common/kernel_table.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "ir/diagnostic.h"

namespace pf::backend {
namespace {

using Kernel = int (*)();
int f32_kernel() { return 32; }
int other_kernel() { return 16; }
int any_kernel() { return 0; }

/// A table as a backend storing f32 and bf16 fills it.
KernelTable<Kernel, DType::bf16> filled() {
  KernelTable<Kernel, DType::bf16> t("test");
  t.set_float(OpKind::add, f32_kernel, other_kernel);
  t.set_float(OpKind::conv2d, f32_kernel, nullptr);
  t.set_any_dtype(OpKind::reshape, any_kernel);
  return t;
}

TEST(KernelTable, FloatsFindTheirColumnOthersTheKernelForEveryDtype) {
  const auto t = filled();
  EXPECT_EQ(t.find(OpKind::add, DType::f32), f32_kernel);
  EXPECT_EQ(t.find(OpKind::add, DType::bf16), other_kernel);
  EXPECT_EQ(t.find(OpKind::add, DType::i32), nullptr);
  EXPECT_EQ(t.find(OpKind::conv2d, DType::bf16), nullptr);
  for (DType d : {DType::f32, DType::bf16, DType::i32, DType::i64, DType::boolean})
    EXPECT_EQ(t.find(OpKind::reshape, d), any_kernel) << dtype_name(d);
  // Float dtypes the backend does not store have no kernel, not even the one for every dtype.
  EXPECT_EQ(t.find(OpKind::reshape, DType::f64), nullptr);
  EXPECT_EQ(t.find(OpKind::reshape, DType::f16), nullptr);
  EXPECT_EQ(t.find(OpKind::mul, DType::f32), nullptr);
}

TEST(KernelTable, AMissingKernelIsAnErrorNamingTheBackendOpAndDtype) {
  const auto t = filled();
  EXPECT_EQ(t.get(OpKind::add, DType::f32), f32_kernel);
  try {
    t.get(OpKind::conv2d, DType::bf16);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.message(), "no test kernel for conv2d in bf16");
  }
}

TEST(KernelTable, ARowFilledTwiceIsAProgrammingError) {
  auto t = filled();
  EXPECT_THROW(t.set_any_dtype(OpKind::add, any_kernel), std::logic_error);
  EXPECT_THROW(t.set_float(OpKind::reshape, f32_kernel, other_kernel), std::logic_error);
}

}  // namespace
}  // namespace pf::backend
