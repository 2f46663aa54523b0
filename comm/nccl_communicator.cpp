// The communicator between GPU processes over NCCL, watched by a JobWatch.
#include "comm/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <fmt/format.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <thread>

#include "backends/cuda/check.h"
#include "comm/job_watch.h"
#include "comm/nccl_staging.h"
#include "ir/diagnostic.h"

namespace pf {

namespace {

using nccl_staging::BlockPool;
using nccl_staging::on_device;
using nccl_staging::Transfer;

// A message's header (tag, bytes) leads its staging blocks; a staged
// payload follows at kPayload, aligned for any dtype.
constexpr size_t kHeader = 2 * sizeof(int64_t);
constexpr size_t kPayload = 256;

template <class T>
ncclDataType_t nccl_type();
template <>
ncclDataType_t nccl_type<float>() {
  return ncclFloat32;
}
template <>
ncclDataType_t nccl_type<double>() {
  return ncclFloat64;
}

}  // namespace

struct NcclCommunicator::Impl {
  Store& store;
  int rank, size;
  NcclOptions options;
  JobWatch watch;
  BlockPool host_pool{false}, device_pool{true};

  /// A communicator and the stream its operations run on.
  struct Channel {
    ncclComm_t comm = nullptr;
    cudaStream_t stream = nullptr;
  };
  Channel world;
  /// Per peer: the two-rank channel of the messages to it (this rank is its
  /// rank 0) and of those from it (this rank is its rank 1).
  std::vector<Channel> out, in;
  /// Per group other than the world: its channel and this rank's place in it.
  std::map<std::string, std::pair<Channel, int>> groups;
  bool aborted = false;

  struct Posted {
    RecvRequest request;
    std::unique_ptr<Transfer> transfer;  // null for a message to itself or of no bytes
    bool staged = false;
    bool waited = false;
  };
  std::vector<Posted> posted;
  /// In flight until the next world collective, with their receivers.
  std::vector<std::pair<std::unique_ptr<Transfer>, int>> sends;
  std::map<int64_t, std::pair<const void*, int64_t>> own_messages;

  /// A collective between its start and its end.
  struct Reduction {
    std::unique_ptr<Transfer> transfer;  // null: nothing to do
    void* values = nullptr;
    size_t bytes = 0;
    bool staged = false;
    ncclComm_t comm = nullptr;
    std::string what;
  };
  std::vector<std::unique_ptr<Reduction>> started;

  Impl(Store& s, int r, int n, NcclOptions o)
      : store(s), rank(r), size(n), options(std::move(o)), watch(s, r, n, options.watch) {}

  ~Impl() {
    sends.clear();
    posted.clear();
    started.clear();
    (void)cudaSetDevice(options.device);
    // After a failure the operations in flight would never end: abort.
    if (watch.failed()) abort_nccl();
    for_each_channel([](Channel& c) {
      if (c.comm) (void)ncclCommDestroy(c.comm);
      if (c.stream) (void)cudaStreamDestroy(c.stream);
    });
  }

  template <class F>
  void for_each_channel(F f) {
    for (Channel& c : out) f(c);
    for (Channel& c : in) f(c);
    for (auto& [name, g] : groups) f(g.first);
    f(world);
  }

  void use_device() const { PF_CUDA_CHECK(cudaSetDevice(options.device)); }

  /// Ends every NCCL operation of this rank (its kernels return); the
  /// communicators are gone, the streams stay until destruction.
  void abort_nccl() {
    if (aborted) return;
    aborted = true;
    (void)cudaSetDevice(options.device);
    for_each_channel([](Channel& c) {
      if (c.comm) (void)ncclCommAbort(c.comm);
      c.comm = nullptr;
    });
  }

  /// The group's first rank makes a unique id and publishes it under `key`;
  /// the others read it.
  ncclUniqueId exchange_id(const std::string& key, bool make) {
    ncclUniqueId id;
    if (make) {
      PF_CUDA_CHECK(ncclGetUniqueId(&id));
      store.set(key, std::string(id.internal, sizeof id.internal));
      return id;
    }
    const std::string bytes = store.get(key);
    if (bytes.size() != sizeof id.internal)
      throw Error(fmt::format("rank {}: the NCCL id under '{}' has {} bytes, expected {}", rank, key, bytes.size(),
                              sizeof id.internal));
    std::copy(bytes.begin(), bytes.end(), id.internal);
    return id;
  }

  void make_stream(Channel& c) { PF_CUDA_CHECK(cudaStreamCreateWithFlags(&c.stream, cudaStreamNonBlocking)); }

  /// Waits for `t` to complete on the device, polling so that a failure
  /// anywhere ends the wait: NCCL's own (`comm`'s asynchronous error), a
  /// CUDA error, or the watch's.
  void await(Transfer& t, ncclComm_t comm, const std::string& what) {
    watch.begin_wait(what);
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      const cudaError_t status = cudaEventQuery(t.done());
      if (status == cudaSuccess) break;
      std::string broken;
      if (status != cudaErrorNotReady) {
        (void)cudaGetLastError();
        broken = fmt::format("CUDA error: {}", cudaGetErrorString(status));
      } else if (comm) {
        ncclResult_t async = ncclSuccess;
        const ncclResult_t got = ncclCommGetAsyncError(comm, &async);
        if (got != ncclSuccess) async = got;
        if (async != ncclSuccess && async != ncclInProgress)
          broken = fmt::format("NCCL error: {} ({})", ncclGetErrorString(async), ncclGetLastError(comm));
      }
      if (!broken.empty()) {
        watch.end_wait();
        watch.fail(fmt::format("{}: {} (while {})", watch.name(rank), broken, what));
        abort_nccl();
        throw CommAborted{};
      }
      if (watch.failed()) {
        watch.end_wait();
        abort_nccl();
        watch.throw_failure();
      }
      // Spin briefly (a hand-off is often microseconds away), then sleep.
      if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(2))
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    watch.end_wait();
    t.complete = true;
  }

  void check_member(const CommGroup& group) const {
    if (!group.contains(rank)) throw Error(fmt::format("rank {} is not a member of group '{}'", rank, group.name));
  }

  /// The group's channel and this rank's place in it: the world's for the
  /// whole world, else one made when the group is first used (every member
  /// is then in this very collective, so none waits for another's).
  std::pair<Channel, int> channel(const CommGroup& group) {
    const int index = static_cast<int>(std::find(group.ranks.begin(), group.ranks.end(), rank) - group.ranks.begin());
    if (static_cast<int>(group.ranks.size()) == size) return {world, index};
    auto it = groups.find(group.name);
    if (it != groups.end()) return it->second;
    const ncclUniqueId id = exchange_id(watch.key("nccl/group/" + group.name), index == 0);
    Channel c;
    PF_CUDA_CHECK(ncclCommInitRank(&c.comm, static_cast<int>(group.ranks.size()), id, index));
    make_stream(c);
    return groups.emplace(group.name, std::pair{c, index}).first->second;
  }

  /// A collective over every rank: every message sent before it has been
  /// received, so the senders' buffers are free again.
  void settle(const CommGroup& group) {
    if (static_cast<int>(group.ranks.size()) != size) return;
    for (auto& [t, peer] : sends)
      await(*t, out[static_cast<size_t>(peer)].comm,
            fmt::format("rank {} waits for rank {} to receive its messages", rank, peer));
    sends.clear();
    if (std::all_of(posted.begin(), posted.end(), [](const Posted& p) { return p.waited; })) posted.clear();
    own_messages.clear();
  }

  /// Queues the sum of `values` over the group on its stream, staged through
  /// pinned and device blocks when the values are in host memory.
  template <class T>
  std::unique_ptr<Reduction> begin_reduce(const CommGroup& group, std::span<T> values) {
    check_member(group);
    watch.check();
    auto r = std::make_unique<Reduction>();
    if (group.ranks.size() < 2 || values.empty()) return r;
    use_device();
    settle(group);
    const auto [c, index] = channel(group);
    r->values = values.data();
    r->bytes = values.size_bytes();
    r->staged = !on_device(values.data());
    r->comm = c.comm;
    r->what = fmt::format("rank {} waits in collective '{}'", rank, group.name);
    r->transfer = std::make_unique<Transfer>(host_pool, device_pool, c.stream, r->staged ? r->bytes : 0);
    Transfer& t = *r->transfer;
    void* buffer = r->staged ? static_cast<void*>(t.device) : values.data();
    if (r->staged) {
      std::memcpy(t.host, values.data(), r->bytes);
      PF_CUDA_CHECK(cudaMemcpyAsync(t.device, t.host, r->bytes, cudaMemcpyHostToDevice, c.stream));
    }
    PF_CUDA_CHECK(ncclAllReduce(buffer, buffer, values.size(), nccl_type<T>(), ncclSum, c.comm, c.stream));
    if (r->staged) PF_CUDA_CHECK(cudaMemcpyAsync(t.host, t.device, r->bytes, cudaMemcpyDeviceToHost, c.stream));
    t.record();
    return r;
  }

  void end_reduce(Reduction& r) {
    if (!r.transfer) return;
    await(*r.transfer, r.comm, r.what);
    if (r.staged) std::memcpy(r.values, r.transfer->host, r.bytes);
    r.transfer.reset();
  }
};

NcclCommunicator::NcclCommunicator(Store& store, int rank, int size, NcclOptions options)
    : impl_(std::make_unique<Impl>(store, rank, size, std::move(options))) {
  if (size < 1 || rank < 0 || rank >= size)
    throw Error(fmt::format("rank {} is not within a world of {}", rank, size));
  Impl& m = *impl_;
  m.use_device();
  const ncclUniqueId id = m.exchange_id(m.watch.key("nccl/world"), rank == 0);
  PF_CUDA_CHECK(ncclCommInitRank(&m.world.comm, size, id, rank));
  m.make_stream(m.world);
  m.watch.start();
  // One two-rank communicator per ordered pair, made by every rank in the
  // same order (a split is collective over the world); the sender is rank 0
  // of it.
  m.out.resize(static_cast<size_t>(size));
  m.in.resize(static_cast<size_t>(size));
  for (int a = 0; a < size; ++a)
    for (int b = 0; b < size; ++b) {
      if (a == b) continue;
      const bool member = rank == a || rank == b;
      ncclComm_t c = nullptr;
      PF_CUDA_CHECK(
          ncclCommSplit(m.world.comm, member ? a * size + b : NCCL_SPLIT_NOCOLOR, rank == a ? 0 : 1, &c, nullptr));
      if (!member) continue;
      Impl::Channel& ch = rank == a ? m.out[static_cast<size_t>(b)] : m.in[static_cast<size_t>(a)];
      ch.comm = c;
      m.make_stream(ch);
    }
  // A first byte over each pair, in the same order on every rank: NCCL
  // connects a pair on its first transfer, and the host-side handshake
  // would otherwise wait for the peer inside a receive posted ahead.
  for (int a = 0; a < size; ++a)
    for (int b = 0; b < size; ++b) {
      if (a == b || (rank != a && rank != b)) continue;
      const bool sending = rank == a;
      Impl::Channel& ch = sending ? m.out[static_cast<size_t>(b)] : m.in[static_cast<size_t>(a)];
      Transfer t(m.host_pool, m.device_pool, ch.stream, 1);
      if (sending)
        PF_CUDA_CHECK(ncclSend(t.device, 1, ncclUint8, 1, ch.comm, ch.stream));
      else
        PF_CUDA_CHECK(ncclRecv(t.device, 1, ncclUint8, 0, ch.comm, ch.stream));
      t.record();
      m.await(t, ch.comm, fmt::format("rank {} waits to connect to rank {}", rank, sending ? b : a));
    }
}

NcclCommunicator::~NcclCommunicator() = default;

int NcclCommunicator::rank() const { return impl_->rank; }
int NcclCommunicator::size() const { return impl_->size; }

void NcclCommunicator::send(int peer, int64_t tag, const void* data, int64_t bytes, void* context) {
  Impl& m = *impl_;
  if (peer < 0 || peer >= m.size)
    throw Error(fmt::format("rank {} cannot send to rank {} in a world of {}", m.rank, peer, m.size));
  m.watch.check();
  if (peer == m.rank) {
    m.own_messages[tag] = {data, bytes};
    return;
  }
  if (bytes == 0) return;
  m.use_device();
  const Impl::Channel& ch = m.out[static_cast<size_t>(peer)];
  const auto n = static_cast<size_t>(bytes);
  const bool staged = !on_device(data);
  auto t = std::make_unique<Transfer>(m.host_pool, m.device_pool, ch.stream, staged ? kPayload + n : kHeader);
  const int64_t header[2] = {tag, bytes};
  std::memcpy(t->host, header, kHeader);
  if (staged) std::memcpy(t->host + kPayload, data, n);
  // The bytes are ready once the sender's work that wrote them is done.
  if (context) PF_CUDA_CHECK(cudaStreamWaitEvent(ch.stream, static_cast<cudaEvent_t>(context), 0));
  PF_CUDA_CHECK(cudaMemcpyAsync(t->device, t->host, staged ? kPayload + n : kHeader, cudaMemcpyHostToDevice, ch.stream));
  PF_CUDA_CHECK(ncclSend(t->device, kHeader, ncclUint8, 1, ch.comm, ch.stream));
  PF_CUDA_CHECK(ncclSend(staged ? t->device + kPayload : data, n, ncclUint8, 1, ch.comm, ch.stream));
  t->record();
  m.sends.emplace_back(std::move(t), peer);
}

int NcclCommunicator::post(RecvRequest request) {
  Impl& m = *impl_;
  if (request.peer < 0 || request.peer >= m.size)
    throw Error(fmt::format("rank {} cannot receive from rank {} in a world of {}", m.rank, request.peer, m.size));
  m.watch.check();
  Impl::Posted p;
  if (request.peer != m.rank && request.bytes > 0) {
    if (!request.dst)
      throw Error(fmt::format("rank {}: a receive from another process needs a buffer ({})", m.rank,
                              request.waiting));
    m.use_device();
    const Impl::Channel& ch = m.in[static_cast<size_t>(request.peer)];
    const auto n = static_cast<size_t>(request.bytes);
    p.staged = !on_device(request.dst);
    const size_t block = p.staged ? kPayload + n : kHeader;
    p.transfer = std::make_unique<Transfer>(m.host_pool, m.device_pool, ch.stream, block);
    Transfer& t = *p.transfer;
    PF_CUDA_CHECK(ncclRecv(t.device, kHeader, ncclUint8, 0, ch.comm, ch.stream));
    PF_CUDA_CHECK(ncclRecv(p.staged ? t.device + kPayload : request.dst, n, ncclUint8, 0, ch.comm, ch.stream));
    PF_CUDA_CHECK(cudaMemcpyAsync(t.host, t.device, block, cudaMemcpyDeviceToHost, ch.stream));
    t.record();
  }
  p.request = std::move(request);
  m.posted.push_back(std::move(p));
  return static_cast<int>(m.posted.size()) - 1;
}

Received NcclCommunicator::wait(int handle) {
  Impl& m = *impl_;
  Impl::Posted& p = m.posted.at(static_cast<size_t>(handle));
  p.waited = true;
  const RecvRequest& r = p.request;
  if (r.peer == m.rank) {
    // Sent before, by this very thread: the schedule orders a rank's own
    // hand-offs.
    auto it = m.own_messages.find(r.tag);
    if (it == m.own_messages.end())
      throw Error(fmt::format("rank {} waits for a message it has not sent itself: {}", m.rank, r.waiting));
    return {it->second.first, nullptr};
  }
  if (!p.transfer) return {r.dst, nullptr};
  m.await(*p.transfer, m.in[static_cast<size_t>(r.peer)].comm, r.waiting);
  int64_t header[2];
  std::memcpy(header, p.transfer->host, kHeader);
  if (header[0] != r.tag || header[1] != r.bytes)
    throw Error(fmt::format("rank {} received the message tagged {} ({} bytes) from rank {} where it expected tag {} "
                            "({} bytes): over NCCL the messages from one rank to another must be sent in the order "
                            "their receiver posts them ({})",
                            m.rank, header[0], header[1], r.peer, r.tag, r.bytes, r.waiting));
  if (p.staged) std::memcpy(r.dst, p.transfer->host + kPayload, static_cast<size_t>(r.bytes));
  p.transfer.reset();
  return {r.dst, nullptr};
}

void NcclCommunicator::all_reduce(const CommGroup& group, std::span<double> values) {
  impl_->end_reduce(*impl_->begin_reduce(group, values));
}

void NcclCommunicator::all_reduce(const CommGroup& group, std::span<float> values) {
  impl_->end_reduce(*impl_->begin_reduce(group, values));
}

int NcclCommunicator::start_all_reduce(const CommGroup& group, std::span<float> values) {
  Impl& m = *impl_;
  m.started.push_back(m.begin_reduce(group, values));
  return static_cast<int>(m.started.size()) - 1;
}

void NcclCommunicator::finish_all_reduce(int handle) {
  Impl& m = *impl_;
  if (handle < 0 || handle >= static_cast<int>(m.started.size()) || !m.started[static_cast<size_t>(handle)])
    throw Error(fmt::format("rank {} finishes all-reduce {}, which it did not start", m.rank, handle));
  m.end_reduce(*m.started[static_cast<size_t>(handle)]);
  m.started[static_cast<size_t>(handle)].reset();
  if (std::all_of(m.started.begin(), m.started.end(), [](auto& s) { return !s; })) m.started.clear();
}

void NcclCommunicator::broadcast(const CommGroup& group, int root, void* data, int64_t bytes) {
  Impl& m = *impl_;
  m.check_member(group);
  m.watch.check();
  if (!group.contains(root)) throw Error(fmt::format("broadcast root {} is not in group '{}'", root, group.name));
  if (group.ranks.size() < 2 || bytes == 0) return;
  m.use_device();
  m.settle(group);
  const auto [c, index] = m.channel(group);
  const int root_index = static_cast<int>(std::find(group.ranks.begin(), group.ranks.end(), root) - group.ranks.begin());
  const auto n = static_cast<size_t>(bytes);
  const bool staged = !on_device(data);
  Transfer t(m.host_pool, m.device_pool, c.stream, staged ? n : 0);
  void* buffer = staged ? static_cast<void*>(t.device) : data;
  if (staged && m.rank == root) {
    std::memcpy(t.host, data, n);
    PF_CUDA_CHECK(cudaMemcpyAsync(t.device, t.host, n, cudaMemcpyHostToDevice, c.stream));
  }
  PF_CUDA_CHECK(ncclBroadcast(buffer, buffer, n, ncclUint8, root_index, c.comm, c.stream));
  if (staged && m.rank != root) PF_CUDA_CHECK(cudaMemcpyAsync(t.host, t.device, n, cudaMemcpyDeviceToHost, c.stream));
  t.record();
  m.await(t, c.comm, fmt::format("rank {} waits in broadcast '{}'", m.rank, group.name));
  if (staged && m.rank != root) std::memcpy(data, t.host, n);
}

void NcclCommunicator::barrier(const CommGroup& group) {
  double token = 0;
  all_reduce(group, std::span<double>(&token, 1));
}

void NcclCommunicator::set_busy(const std::string& who, const std::string& what) { impl_->watch.set_busy(who, what); }

void NcclCommunicator::abort(const std::string& message) {
  impl_->watch.fail(message);
  impl_->abort_nccl();
}

std::string NcclCommunicator::error() const { return impl_->watch.error(); }

void NcclCommunicator::set_rank_names(std::vector<std::string> names) {
  impl_->watch.set_rank_names(std::move(names));
}

}  // namespace pf
