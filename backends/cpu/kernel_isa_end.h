// Closes the region kernel_isa_begin.h opened (internal to backends/cpu).
#pragma GCC pop_options
#undef PF_KERNEL_ISA
