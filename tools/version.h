// `pipeforge --version`: the version, the commit it was built from, CUDA, and
// the CPU kernels this machine runs.
#pragma once

#include <string>

namespace pf::tools {

/// Lines like
///   pipeforge 0.1.0 (commit a0c2770)
///   cuda: built with CUDA, 1 GPU visible
///   cpu kernels: avx512 (PF_CPU_ISA=avx2 caps them at avx2)
std::string version_text();

}  // namespace pf::tools
