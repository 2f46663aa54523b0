// Detects the CPU's vector instruction sets once, and applies PF_CPU_ISA.
#include "backends/cpu/cpu_isa.h"

#include <fmt/format.h>

#include <cstdlib>
#include <string>
#include <string_view>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

/// The level in force, or why PF_CPU_ISA could not be applied.
struct Choice {
  CpuIsa isa = CpuIsa::sse2;
  std::string error;
};

Choice choose() {
  Choice choice{cpu_isa_supported(), {}};
  const char* env = std::getenv("PF_CPU_ISA");
  if (env == nullptr || *env == '\0') return choice;
  const std::string_view wanted(env);
  for (CpuIsa isa : {CpuIsa::sse2, CpuIsa::avx2, CpuIsa::avx512, CpuIsa::amx})
    if (wanted == isa_name(isa)) {
      if (isa < choice.isa) choice.isa = isa;
      return choice;
    }
  choice.error = fmt::format("PF_CPU_ISA={}: expected amx, avx512, avx2 or sse2 (the widest instruction set the "
                             "kernels may use), or leave it unset",
                             wanted);
  return choice;
}

// Whether this process may use AMX's tiles. Linux saves their 8 KiB of
// state only for a process that asks for it (arch_prctl, Linux 5.16 and
// later); without that, the first tile instruction kills the process.
bool amx_tiles_granted() {
#if defined(__linux__)
  constexpr int kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
  constexpr int kTileData = 18;               // XFEATURE_XTILEDATA
  return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
#else
  return false;
#endif
}

CpuIsa detect() {
  // libgcc's checks include the operating system's support (XCR0) for the
  // wider registers, not only the CPUID bits.
  if (!__builtin_cpu_supports("avx512f"))
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? CpuIsa::avx2 : CpuIsa::sse2;
  const bool amx = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                   __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  return amx && amx_tiles_granted() ? CpuIsa::amx : CpuIsa::avx512;
}

}  // namespace

CpuIsa cpu_isa_supported() {
  static const CpuIsa supported = detect();
  return supported;
}

CpuIsa cpu_isa() {
  static const Choice choice = choose();
  if (!choice.error.empty()) throw Error(choice.error);
  return choice.isa;
}

bool cpu_has_bf16_dot() {
  static const bool supported = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
  return supported && cpu_isa() >= CpuIsa::avx512;
}

bool cpu_bf16_dot_is_fast() {
  static const bool amd = __builtin_cpu_is("amd");
  return amd && cpu_has_bf16_dot();
}

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::sse2: return "sse2";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
    case CpuIsa::amx: return "amx";
  }
  return "sse2";
}

}  // namespace pf::cpu
