// `pipeforge --version`.
#include "tools/version.h"

#include <fmt/format.h>

#include <cstdlib>

#include "backends/cpu/cpu_isa.h"
#include "tools/build_info.h"
#if PF_BUILT_WITH_CUDA
#include "backends/cuda/device.h"
#endif

namespace pf::tools {

namespace {

std::string cuda_line() {
#if PF_BUILT_WITH_CUDA
  std::string why;
  if (!cuda::cuda_available(&why)) return fmt::format("cuda: yes, but no GPU is visible ({})", why);
  const int n = cuda::device_count();
  return fmt::format("cuda: yes, {} GPU{} visible", n, n == 1 ? "" : "s");
#else
  return "cuda: no (built without the CUDA backend)";
#endif
}

std::string cpu_line() {
  // cpu_isa() reads PF_CPU_ISA, as every kernel does, and throws on a value
  // that names no level: the run would stop on it too.
  const cpu::CpuIsa used = cpu::cpu_isa(), supported = cpu::cpu_isa_supported();
  const char* cap = std::getenv("PF_CPU_ISA");
  if (used == supported || cap == nullptr) return fmt::format("cpu kernels: {}", cpu::isa_name(used));
  return fmt::format("cpu kernels: {} (this CPU has {}; PF_CPU_ISA={})", cpu::isa_name(used),
                     cpu::isa_name(supported), cap);
}

}  // namespace

std::string version_text() {
  return fmt::format("pipeforge {} (commit {})\n{}\n{}", PF_VERSION, PF_GIT_COMMIT, cuda_line(), cpu_line());
}

}  // namespace pf::tools
