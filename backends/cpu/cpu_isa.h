// The widest x86-64 vector instruction set the CPU kernels may use: what the CPU has, capped by PF_CPU_ISA.
//
// Pipeforge is built for baseline x86-64, so that a binary built on one
// machine runs on any other; the kernels that decide a step's speed are
// compiled once per instruction set and chosen here, at run time. The
// environment variable lets a machine act as an older one (an AVX-512 CI
// machine checks the AVX2 and SSE2 kernels too), the way a user of PyTorch
// sets ATEN_CPU_CAPABILITY.
#pragma once

namespace pf::cpu {

/// The instruction-set levels the kernels are written for, narrowest first.
enum class CpuIsa {
  sse2,    // every x86-64 CPU
  avx2,    // AVX2 and FMA (Haswell, Zen and later)
  avx512,  // AVX-512 F (Skylake-SP, Sapphire Rapids, Zen 4 and later)
  amx,     // AVX-512 with AMX's tiles and their bf16 products (Sapphire Rapids and later), where the
           // operating system lets the process use them
};

/// The level the kernels use: the widest this CPU and its operating system
/// support, lowered to the one PF_CPU_ISA names (amx, avx512, avx2 or sse2) when
/// that variable is set; never raised above what the CPU has. Read once, on
/// the first call. A value that names no level throws pf::Error, on every
/// call, naming the accepted ones.
CpuIsa cpu_isa();

/// Whether the CPU can run the AVX-512 BF16 dot products (Cooper Lake,
/// Sapphire Rapids, Zen 4 and later): cpu_isa() is avx512 or amx and the
/// CPU has AVX-512 BW and BF16.
bool cpu_has_bf16_dot();

/// Whether those dot products outrun the CPU's f32 multiply-adds, so that
/// bf16 products are worth running on them: AMD's cores (Zen 4 and 5) issue
/// them at the FMA's rate, two products a lane each, twice the f32 rate;
/// Intel's (Sapphire Rapids class) at half it, the same rate as f32, and
/// the packing makes them slower still (bench/RESULTS.md). Elsewhere a bf16
/// product rounds its operands and runs the f32 kernel, unless the CPU has
/// AMX (cpu_isa() is amx), whose tiles run the bf16 products.
bool cpu_bf16_dot_is_fast();

/// The widest level this CPU supports, whatever PF_CPU_ISA says.
CpuIsa cpu_isa_supported();

/// "sse2", "avx2", "avx512" or "amx".
const char* isa_name(CpuIsa isa);

}  // namespace pf::cpu
