// Where a compiled function's kernel time goes, on every backend: seconds per op kind and per op.
#pragma once

#include <array>
#include <string>

#include "ir/op_table.h"

namespace pf::backend {

struct KernelArgs;

/// Seconds spent in the kernels of each op kind, indexed by OpKind.
using OpSeconds = std::array<double, kNumOps>;

/// One op's kernel time under ExecutorOptions::profile, summed over runs.
struct OpTime {
  std::string function;     // the function's name, e.g. "gpt.backward"
  int op = 0;               // index into the function's ops
  OpKind kind = OpKind::add;
  std::string text;         // "matmul f32[8,128,512] x f32[512,1536] transpose_b" : kind, operand types, flags
  double seconds = 0;
};

/// OpTime::text of a call: the op's kind, its operand types and its transpose flags.
std::string call_text(OpKind kind, const KernelArgs& args);

}  // namespace pf::backend
