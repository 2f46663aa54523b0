// Moving activations between GPUs: peer copies inside one process, NCCL send/recv between processes (rendezvous through a shared directory).
#include "backends/cuda/transport.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

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

FileStore::FileStore(std::string directory, std::chrono::milliseconds timeout)
    : directory_(std::move(directory)), timeout_(timeout) {
  std::error_code ec;
  std::filesystem::create_directories(directory_, ec);
  if (ec) throw Error(fmt::format("file store: cannot create {}: {}", directory_, ec.message()));
}

std::string FileStore::path_of(std::string_view key) const {
  if (key.empty()) throw Error("file store: empty key");
  for (char c : key)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      throw Error(fmt::format("file store: key '{}' may only hold letters, digits, '.', '_' and '-'", key));
  if (key.front() == '.') throw Error(fmt::format("file store: key '{}' may not start with '.'", key));
  return (std::filesystem::path(directory_) / std::string(key)).string();
}

void FileStore::set(std::string_view key, std::string_view value) const {
  const std::string path = path_of(key);
  // A hidden temporary name unique to this process and thread, then an atomic rename.
  const std::string tmp = (std::filesystem::path(directory_) /
                           fmt::format(".{}.{}.{}.tmp", key, ::getpid(),
                                       std::hash<std::thread::id>{}(std::this_thread::get_id())))
                              .string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    out.close();
    if (!out) throw Error(fmt::format("file store: cannot write {}", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw Error(fmt::format("file store: cannot rename {} to {}: {}", tmp, path, ec.message()));
}

std::string FileStore::get(std::string_view key) const {
  const std::string path = path_of(key);
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    std::ifstream in(path, std::ios::binary);
    if (in) {
      std::ostringstream s;
      s << in.rdbuf();
      return s.str();
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(fmt::format("file store: no value for '{}' in {} after {} ms (has the other rank started?)", key,
                              directory_, timeout_.count()));
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

// ---------------------------------------------------------------------------

NcclTransport::NcclTransport(const FileStore& store, std::string_view key, int rank, int world, int device)
    : rank_(rank), world_(world), device_(device) {
  if (world < 1 || rank < 0 || rank >= world)
    throw Error(fmt::format("nccl transport: rank {} is not within a world of {}", rank, world));
  ncclUniqueId id;
  if (rank == 0) {
    PF_CUDA_CHECK(ncclGetUniqueId(&id));
    store.set(key, std::string_view(id.internal, sizeof id.internal));
  } else {
    const std::string bytes = store.get(key);
    if (bytes.size() != sizeof id.internal)
      throw Error(fmt::format("nccl transport: the id under '{}' in {} has {} bytes, expected {}", key,
                              store.directory(), bytes.size(), sizeof id.internal));
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
