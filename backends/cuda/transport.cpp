// Moving activations between GPUs: peer copies inside one process, NCCL send/recv between processes (rendezvous through a store).
#include "backends/cuda/transport.h"

#include <fmt/format.h>

#include <algorithm>

#include "backends/cuda/check.h"
#include "ir/diagnostic.h"

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

// ---------------------------------------------------------------------------

NcclTransport::NcclTransport(Store& store, const std::string& key, int rank, int world, int device)
    : rank_(rank), world_(world), device_(device) {
  if (world < 1 || rank < 0 || rank >= world)
    throw Error(fmt::format("nccl transport: rank {} is not within a world of {}", rank, world));
  ncclUniqueId id;
  if (rank == 0) {
    PF_CUDA_CHECK(ncclGetUniqueId(&id));
    store.set(key, std::string(id.internal, sizeof id.internal));
  } else {
    const std::string bytes = store.get(key);
    if (bytes.size() != sizeof id.internal)
      throw Error(fmt::format("nccl transport: the id under '{}' has {} bytes, expected {}", key, bytes.size(),
                              sizeof id.internal));
    std::copy(bytes.begin(), bytes.end(), id.internal);
  }
  PF_CUDA_CHECK(cudaSetDevice(device));
  PF_CUDA_CHECK(ncclCommInitRank(&comm_, world, id, rank));
}

NcclTransport::~NcclTransport() {
  if (comm_) (void)ncclCommDestroy(comm_);
}

void NcclTransport::check_peer(int peer) const {
  if (peer < 0 || peer >= world_ || peer == rank_)
    throw Error(fmt::format("nccl transport: rank {} cannot exchange with rank {} (world {})", rank_, peer, world_));
}

// Bytes as ncclUint8: any dtype, no size limit beyond size_t.
void NcclTransport::send(const void* data, size_t bytes, int peer, cudaStream_t stream) {
  check_peer(peer);
  PF_CUDA_CHECK(cudaSetDevice(device_));
  PF_CUDA_CHECK(ncclSend(data, bytes, ncclUint8, peer, comm_, stream));
}

void NcclTransport::recv(void* data, size_t bytes, int peer, cudaStream_t stream) {
  check_peer(peer);
  PF_CUDA_CHECK(cudaSetDevice(device_));
  PF_CUDA_CHECK(ncclRecv(data, bytes, ncclUint8, peer, comm_, stream));
}

}  // namespace pf::cuda
