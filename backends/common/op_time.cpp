// Where a compiled function's kernel time goes: the text that names a call in a profile.
#include "backends/common/op_time.h"

#include "backends/common/kernel_args.h"

namespace pf::backend {

std::string call_text(OpKind kind, const KernelArgs& args) {
  std::string text(op_name(kind));
  for (size_t i = 0; i < args.in_types.size(); ++i) {
    text += i ? " x " : " ";
    text += args.in_types[i].str();
  }
  for (const char* flag : {"transpose_a", "transpose_b"})
    if (args.attrs.get_bool(flag, false)) {
      text += ' ';
      text += flag;
    }
  return text;
}

}  // namespace pf::backend
