// Moving activations between GPUs of one process: peer copies.
#include "backends/cuda/transport.h"

#include "backends/cuda/check.h"

namespace pf::cuda {

bool enable_peer_access(int from, int to) {
  if (from == to) return true;
  int can = 0;
  PF_CUDA_CHECK(cudaDeviceCanAccessPeer(&can, from, to));
  if (!can) return false;
  PF_CUDA_CHECK(cudaSetDevice(from));
  const cudaError_t status = cudaDeviceEnablePeerAccess(to, 0);
  if (status == cudaErrorPeerAccessAlreadyEnabled) {
    (void)cudaGetLastError();  // not sticky, but it stays the "last error" otherwise
    return true;
  }
  PF_CUDA_CHECK(status);
  return true;
}

void copy_peer_async(void* dst, int dst_device, const void* src, int src_device, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  if (dst_device == src_device)
    PF_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream));
  else
    PF_CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_device, src, src_device, bytes, stream));
}

}  // namespace pf::cuda
