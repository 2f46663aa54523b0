// Moving activations between GPUs of one process: peer copies. Between processes the
// communicator does it (comm/nccl_communicator.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

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

}  // namespace pf::cuda
