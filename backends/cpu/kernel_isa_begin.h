// Opens the instruction-set region of a kernel family compiled once per set (internal to backends/cpu).
//
// The families that decide a step's speed beside the GEMMs (elementwise
// maps, softmax and norms, losses, reductions) are compiled three times,
// for SSE2, AVX2 + FMA and AVX-512 (backends/cpu/CMakeLists.txt defines
// PF_KERNEL_ISA_<SET> for each copy), and the kernel table takes the copy
// cpu_isa() names. A family file includes this after every other header and
// puts its code in `namespace pf::cpu::PF_KERNEL_ISA`, then includes
// kernel_isa_end.h. The region starts after the headers, so the templates
// they define (the standard library's among them) are compiled for the
// baseline wherever they are not inlined: no copy built for a wider set can
// be the one the linker keeps for the whole program.
#if defined(PF_KERNEL_ISA_AVX512)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")
#define PF_KERNEL_ISA isa_avx512
#elif defined(PF_KERNEL_ISA_AVX2)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define PF_KERNEL_ISA isa_avx2
#elif defined(PF_KERNEL_ISA_SSE2)
#pragma GCC push_options
#define PF_KERNEL_ISA isa_sse2
#else
#error "a kernel family compiled once per instruction set: backends/cpu/CMakeLists.txt defines PF_KERNEL_ISA_<SET>"
#endif
