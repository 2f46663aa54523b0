// Which own sgemm takes a product, and the packing buffers they share.
#include "backends/cpu/sgemm.h"

#include <fmt/format.h>

#include <memory>
#include <new>

#include "ir/diagnostic.h"

namespace pf::cpu {

namespace {

// Packed operands, one pair per thread: allocated (and first touched) on the
// thread's first product, reused by every later one.
struct PackBuffers {
  AlignedFloats a = aligned_floats(kSgemmPackA);
  AlignedFloats b = aligned_floats(kSgemmPackB);
};

PackBuffers& pack_buffers() {
  thread_local PackBuffers buffers;
  return buffers;
}

}  // namespace

AlignedFloats aligned_floats(int64_t count) {
  return AlignedFloats(static_cast<float*>(::operator new[](sizeof(float) * count, std::align_val_t(64))));
}

float* sgemm_pack_a() { return pack_buffers().a.get(); }
float* sgemm_pack_b() { return pack_buffers().b.get(); }

SgemmKernel sgemm_kernel_for(CpuIsa isa, int64_t n) {
  switch (isa) {
    case CpuIsa::amx:  // AMX's tiles take only the bf16 products
    case CpuIsa::avx512: return n >= 48 ? SgemmKernel::avx512 : SgemmKernel::avx2;
    case CpuIsa::avx2: return SgemmKernel::avx2;
    case CpuIsa::sse2: return SgemmKernel::sse2;
  }
  return SgemmKernel::sse2;
}

const SgemmPackedOps& sgemm_packed_ops(SgemmKernel kernel) {
  switch (kernel) {
    case SgemmKernel::avx512: return sgemm_packed_ops_avx512();
    case SgemmKernel::avx2: return sgemm_packed_ops_avx2();
    case SgemmKernel::sse2: return sgemm_packed_ops_sse2();
    case SgemmKernel::avx512_bf16: return sgemm_packed_ops_bf16();
    case SgemmKernel::amx_bf16: return sgemm_packed_ops_amx();
    case SgemmKernel::openblas: break;
  }
  throw Error(fmt::format("{} has no packed form of B", sgemm_kernel_label(kernel)));
}

const char* sgemm_kernel_label(SgemmKernel kernel) {
  switch (kernel) {
    case SgemmKernel::avx512: return "pipeforge-avx512";
    case SgemmKernel::avx2: return "pipeforge-avx2";
    case SgemmKernel::sse2: return "pipeforge-sse2";
    case SgemmKernel::openblas: return "openblas";
    case SgemmKernel::avx512_bf16: return "pipeforge-avx512-bf16";
    case SgemmKernel::amx_bf16: return "pipeforge-amx-bf16";
  }
  return "openblas";
}

CpuIsa sgemm_kernel_isa(SgemmKernel kernel) {
  switch (kernel) {
    case SgemmKernel::avx512:
    case SgemmKernel::avx512_bf16: return CpuIsa::avx512;
    case SgemmKernel::amx_bf16: return CpuIsa::amx;
    case SgemmKernel::avx2: return CpuIsa::avx2;
    case SgemmKernel::sse2:
    case SgemmKernel::openblas: return CpuIsa::sse2;
  }
  return CpuIsa::sse2;
}

}  // namespace pf::cpu
