// The ops where the ranks of a tensor-parallel stage meet: tp_copy (the whole
// activation, unchanged), tp_reduce (partial products summed over the group
// through KernelArgs::group) and tp_max (the group's maximum).
#include <cstring>
#include <span>

#include "backends/cpu/kernel_table.h"

namespace pf::cpu {

namespace {

void copy_operand(const KernelArgs& args) {
  const auto bytes = static_cast<size_t>(args.out_types[0].bytes());
  if (bytes > 0 && args.out[0] != args.in[0]) std::memcpy(args.out[0], args.in[0], bytes);
}

void tp_copy(const KernelArgs& args) { copy_operand(args); }

template <class T>
void tp_reduce(const KernelArgs& args) {
  if (!args.group) backend::throw_no_tensor_parallel_group();
  copy_operand(args);
  args.group->all_reduce(std::span<T>(static_cast<T*>(args.out[0]), static_cast<size_t>(args.out_types[0].numel())));
}

template <class T>
void tp_max(const KernelArgs& args) {
  if (!args.group) backend::throw_no_tensor_parallel_group();
  copy_operand(args);
  args.group->all_reduce_max(
      std::span<T>(static_cast<T*>(args.out[0]), static_cast<size_t>(args.out_types[0].numel())));
}

}  // namespace

void add_tensor_parallel_kernels(KernelTable& table) {
  table.set_any_dtype(OpKind::tp_copy, tp_copy);
  table.set_float(OpKind::tp_reduce, tp_reduce<float>, tp_reduce<double>);
  table.set_float(OpKind::tp_max, tp_max<float>, tp_max<double>);
}

}  // namespace pf::cpu
