// Moving activations between GPUs: peer copies inside one process, NCCL send/recv between processes (rendezvous through a store).
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>
#include <string>

#include "comm/store.h"

namespace pf::cuda {

/// Enables access from device `from` to the memory of device `to` when
/// cudaDeviceCanAccessPeer allows it (an already enabled pair counts as
/// enabled); returns whether direct access is on. Without it, peer copies
/// still work, staged through host memory by the driver.
bool enable_peer_access(int from, int to);

/// Queues a copy of `bytes` from `src` on device `src_device` to `dst` on
/// device `dst_device` on `stream` (a stream of either device; ordering with
/// the other side is the caller's business, by events). The same device
/// twice is a plain device-to-device copy.
void copy_peer_async(void* dst, int dst_device, const void* src, int src_device, size_t bytes, cudaStream_t stream);

/// One rank of an NCCL communicator of `world` ranks, one GPU each (NCCL
/// rejects two ranks on one GPU). Rank 0 makes the ncclUniqueId and
/// publishes it under `key` in the rendezvous store (comm/store.h: a file or
/// TCP store); the others read it. send() and
/// recv() queue point-to-point transfers on a stream; a send to rank r must
/// be matched by a recv on r of the same size, in the same order.
class NcclTransport {
 public:
  NcclTransport(Store& store, const std::string& key, int rank, int world, int device);
  ~NcclTransport();
  NcclTransport(const NcclTransport&) = delete;
  NcclTransport& operator=(const NcclTransport&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  void send(const void* data, size_t bytes, int peer, cudaStream_t stream);
  void recv(void* data, size_t bytes, int peer, cudaStream_t stream);

 private:
  void check_peer(int peer) const;
  ncclComm_t comm_ = nullptr;
  int rank_, world_, device_;
};

}  // namespace pf::cuda
