// cast: conversions between the stored dtypes f32, f64, i32, i64 and bool.
#include <fmt/format.h>

#include <cstdint>
#include <type_traits>

#include "backends/cpu/kernel_table.h"
#include "backends/cpu/kernel_util.h"
#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

// Calls f with a null pointer of the C++ type that stores `t`.
template <class F>
void visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32:
      return f(static_cast<float*>(nullptr));
    case DType::f64:
      return f(static_cast<double*>(nullptr));
    case DType::i32:
      return f(static_cast<int32_t*>(nullptr));
    case DType::i64:
      return f(static_cast<int64_t*>(nullptr));
    case DType::boolean:
      return f(static_cast<uint8_t*>(nullptr));
    case DType::f16:
    case DType::bf16:
      break;
  }
  throw Error(fmt::format("no cpu kernel for cast of {}", dtype_name(t)));
}

// One element. Bools are stored as bytes 0/1 (uint8_t stores nothing else
// here), so "to bool" means "nonzero"; float to integer saturates (NaN gives
// 0) instead of being undefined.
template <class To, class From>
To convert(From v) {
  if constexpr (std::is_same_v<To, uint8_t>)
    return static_cast<To>(v != From(0));
  else if constexpr (std::is_floating_point_v<From> && std::is_same_v<To, int32_t>)
    return saturate_to_i32(v);
  else if constexpr (std::is_floating_point_v<From> && std::is_same_v<To, int64_t>)
    return saturate_to_i64(v);
  else
    return static_cast<To>(v);
}

void cast(const KernelArgs& args) {
  const int64_t n = args.out_types[0].numel();
  visit_dtype(args.in_types[0].dtype, [&](auto* from_tag) {
    using From = std::remove_pointer_t<decltype(from_tag)>;
    visit_dtype(args.out_types[0].dtype, [&](auto* to_tag) {
      using To = std::remove_pointer_t<decltype(to_tag)>;
      const auto* x = static_cast<const From*>(args.in[0]);
      auto* y = static_cast<To*>(args.out[0]);
      for (int64_t i = 0; i < n; ++i) y[i] = convert<To>(x[i]);
    });
  });
}

}  // namespace

void add_cast_kernels(KernelTable& table) { table.set_any_dtype(OpKind::cast, cast); }

}  // namespace pf::cpu
